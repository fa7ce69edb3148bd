"""Issue 23: fitting is one stage (writer/fit/), deciding by the kind of an error, never by its wording.

The key fixes of the select step run in the fit stage, after its event; a retry with int32 ids
follows from where the error was raised (an embedding layer), not from JAX's or Flax's message;
tries of an input are plain results. The fit stage decides what each stored dtype is written as (the
write stage applies it), and every stage, optimize included, announces itself when it starts.
"""
from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.serialization import to_bytes

from tests.conftest import ROOT
from topology.graph import InputSpec, WeightBinding
from topology.vocabulary.errors import ConversionError, Notices
from topology.vocabulary.misfit import Misfit
from writer import to_tensorflowjs
from writer.convert import ConvertOptions, convert
from writer.events import STAGES
from writer.fit import fit
from writer.fit.candidates import Rejected
from writer.fixes.expected import linen_expected, raised_by_embedding
from writer.progress import MODULE_STAGE_TEXT, STAGE_TEXT
from writer.quantize import QuantizeOptions
from writer.sources import resolve_source
from writer.weight_dtypes import DtypePolicy
from writer.weights import write_weights


class EmbedThenDense(nn.Module):
    @nn.compact
    def __call__(self, ids):
        return nn.Dense(2)(nn.Embed(10, 4)(ids).reshape((ids.shape[0], -1)))


class SaysWhatEmbedSays(nn.Module):  # the same words as Flax's Embed, raised by the model's own code
    @nn.compact
    def __call__(self, x):
        if not jnp.issubdtype(x.dtype, jnp.integer):
            raise ValueError("Input type must be an integer or unsigned integer.")
        return nn.Dense(2)(x.astype(jnp.float32))


def test_key_fixes_are_reported_after_the_fit_stage_starts(tmp_path):
    rng = np.random.default_rng(0)
    dense = lambda i, o: {"kernel": rng.normal(size=(i, o)).astype("float32"), "bias": np.zeros(o, "float32")}
    nested = {"params": {"params": {"Dense_0": dense(6, 4), "Dense_1": dense(4, 2)}}}  # fixed[NESTED_PARAMS]
    (tmp_path / "mlp.msgpack").write_bytes(to_bytes(nested))
    events = []
    report = convert(tmp_path / "mlp.msgpack", tmp_path / "out", ConvertOptions(), events=events.append)
    order = [e.get("stage") or e.get("code") for e in events if e["type"] in ("stage", "notice")]
    assert "NESTED_PARAMS" in [n.code for n in report.notices]
    assert order.index("fix") < order.index("NESTED_PARAMS") < order.index("graph"), order
    assert order[:2] == ["read", "fix"] and order.index("write") > order.index("graph")


def test_an_embedding_refusing_floats_is_told_by_where_it_raised_not_by_its_words():
    ids = [InputSpec("input", (3,), "float32")]
    with pytest.raises(Misfit) as embed:
        linen_expected(EmbedThenDense(), ids)
    with pytest.raises(Misfit) as own:
        linen_expected(SaysWhatEmbedSays(), ids)
    assert embed.value.code == own.value.code == "INPUT_SHAPE_INVALID"  # the same error to the user...
    assert "Input type must be an integer" in own.value.message
    assert embed.value.wants_integers and not own.value.wants_integers  # ...but only Embed asks for ids
    assert embed.value.refused_by == own.value.refused_by == "model"
    assert not raised_by_embedding(ValueError("Input type must be an integer"))


def test_only_an_embedding_gets_int32_ids(tmp_path):
    module = SaysWhatEmbedSays()
    variables = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 3), jnp.int32))
    with pytest.raises(ConversionError) as err:  # before, the message alone made it retry with int32 ids
        to_tensorflowjs(module, tmp_path / "own", variables=variables, input_shape=(3,))
    assert err.value.code == "INPUT_SHAPE_INVALID" and not (tmp_path / "own").exists()
    embed = EmbedThenDense()
    report = to_tensorflowjs(embed, tmp_path / "embed", variables=embed.init(jax.random.PRNGKey(0), jnp.zeros((1, 3), jnp.int32)),
                             input_shape=(3,))
    assert report.inputs[0].dtype == "int32" and [n.code for n in report.notices if n.kind == "fixed"] == ["INPUT_DTYPE"]


def test_a_rejection_says_by_its_kind_whether_another_input_may_fit():
    misfit = Rejected(Misfit("SHAPE_MISMATCH", "m", refused_by="parameters"))
    refused = Rejected(Misfit("INPUT_SHAPE_INVALID", "m", refused_by="model", wants_integers=True))
    given = Rejected(Misfit("INPUT_SHAPE_MISMATCH", "m", refused_by="input"))
    final = Rejected(ConversionError("SHAPE_MISMATCH", "m"))  # the same code, not a misfit: nothing retried
    assert [r.input_dependent for r in (misfit, refused, given, final)] == [True, True, True, False]
    assert [r.refused_by_model for r in (misfit, refused, given, final)] == [False, True, False, False]
    assert [r.wants_integers for r in (misfit, refused, given, final)] == [False, True, False, False]
    assert [r.given_shape_misfit for r in (misfit, refused, given, final)] == [False, False, True, False]


def _mixed_dtypes_mlp(path):
    rng = np.random.default_rng(1)
    params = {"Dense_0": {"kernel": rng.normal(size=(6, 4)), "bias": np.arange(4, dtype=np.int64)},  # float64, int64
              "Dense_1": {"kernel": rng.normal(size=(4, 2)).astype("float32"), "bias": np.zeros(2, "float32")}}
    path.write_bytes(to_bytes({"params": params}))
    return path


def test_the_fit_stage_decides_the_dtype_policy_and_the_write_stage_applies_it(tmp_path):
    source = resolve_source(_mixed_dtypes_mlp(tmp_path / "mixed.msgpack"), None, None, None, Notices(), select=False)
    try:
        fitted = fit(source, ConvertOptions(), Notices())
    finally:
        source.close()
    assert fitted.dtype_policy.describe() == {"float32": "as is", "float64": "float", "int64": "integer"}
    ints = [("d/bias", WeightBinding("bias", (2,), constant=np.array([1, 2], np.int64)))]
    notices = Notices()
    write_weights(ints, tmp_path, 1024, QuantizeOptions(), notices, dtype_policy=fitted.dtype_policy)
    assert [n.code for n in notices.items] == ["DTYPE_CONVERTED"] and "int64" in notices.items[0].message
    refusing = DtypePolicy({**fitted.dtype_policy.written_as, "int64": None})  # the writer follows, never decides
    with pytest.raises(ConversionError) as err:
        write_weights(ints, tmp_path, 1024, QuantizeOptions(), Notices(), dtype_policy=refusing)
    assert err.value.code == "UNSUPPORTED_DTYPE"


def test_each_stage_announces_itself_and_no_fix_refuses_dtypes_in_the_fit_stage(tmp_path):
    path = _mixed_dtypes_mlp(tmp_path / "mixed.msgpack")
    events = []
    convert(path, tmp_path / "layers", ConvertOptions(optimize=True), events=events.append)
    assert [e["stage"] for e in events if e["type"] == "stage"] == ["read", "fix", "graph", "optimize", "write"]
    module = EmbedThenDense()
    events = []
    convert(module, tmp_path / "graph", ConvertOptions(format="graph-model", input_shape=(3,)),
            variables=module.init(jax.random.PRNGKey(0), jnp.zeros((1, 3), jnp.int32)), events=events.append)
    assert [e["stage"] for e in events if e["type"] == "stage"] == ["read", "fix", "graph", "optimize", "write"]
    events = []
    with pytest.raises(ConversionError) as err:
        convert(path, tmp_path / "no-fix", ConvertOptions(fix=False), events=events.append)
    assert err.value.code == "FIX_DISABLED" and "float64" in err.value.message
    assert [e["stage"] for e in events if e["type"] == "stage"] == ["read", "fix"]  # refused before any graph
    assert not (tmp_path / "no-fix").exists()


def test_every_place_that_lists_the_stages_lists_the_same_ones():
    studio = (ROOT / "web_demo" / "studio.js").read_text(encoding="utf-8")
    listed = re.search(r"const STAGES = \[([^\]]*)\]", studio).group(1)
    assert [s.strip(" '") for s in listed.split(",")] == [*STAGES, "verify"]
    assert set(STAGE_TEXT) == set(MODULE_STAGE_TEXT) == set(STAGES)  # the CLI's line for each stage
    assert "fix" in STAGES and "optimize" in STAGES  # "fix": the fit stage's documented event name
