"""The yardstick's side of the browser benchmark: the same Flax models exported to ONNX by jax2onnx.

``python -m bench.onnx_export CKPT_DIR OUT_DIR`` reads the checkpoints written by
``python -m bench.transformer_models CKPT_DIR`` (the same weights the TF.js models are converted
from) and writes ``<name>.onnx`` for each, batch 1, for onnxruntime-web (bench/browser_compare.mjs).
Needs the ``bench`` extra (``pip install -e .[bench]``: jax2onnx 0.17.1). Two of jax2onnx's limits
are worked around here (bench-only; the models stay as users write them): its traced ``max_pool``
takes the window only by keyword (``pool_window_by_keyword``), and onnxruntime rejects some of the
intermediate ``value_info`` shapes it declares for a ResNet (``_drop_value_info``).
"""
from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import flax.linen as nn
import jax
from flax.serialization import from_bytes

from bench.transformer_models import MODELS, model


def export(checkpoints: Path, out: Path, names: list[str] | None = None,
           failures: dict[str, str] | None = None) -> dict[str, Path]:
    """Write ``out/<name>.onnx`` for every model (or ``names``); name -> path.

    A model jax2onnx cannot export is left out, its error kept in ``failures`` (raised without it).

    Example:
        >>> export(Path("ckpts"), Path("onnx"))["vit-ti"].name             # doctest: +SKIP
        'vit-ti.onnx'
    """
    from jax2onnx import to_onnx

    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, (_, inputs, _) in MODELS.items():
        if names and name not in names:
            continue
        module = model(name)
        template = module.init(jax.random.PRNGKey(0), *inputs)
        variables = from_bytes(template, (checkpoints / f"{name}.msgpack").read_bytes())
        path = out / f"{name}.onnx"
        try:
            to_onnx(lambda *xs, v=variables, m=module: _apply_with_workarounds(m, v, xs),
                    [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in inputs], model_name=name,
                    return_mode="file", output_path=str(path))
            _drop_value_info(path)
        except Exception as exc:  # noqa: BLE001  jax2onnx's own limits: that model runs without the yardstick
            if failures is None:
                raise
            failures[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
            continue
        written[name] = path
    return written


@contextlib.contextmanager
def pool_window_by_keyword() -> Iterator[None]:
    """While jax2onnx traces, let ``nn.max_pool(x, (3, 3), ...)`` reach its patched max_pool.

    jax2onnx 0.17.1 replaces ``flax.linen.max_pool`` during tracing by a function that takes the
    window only by keyword (``patched_max_pool(x, *, window_shape, ...)``); a plain Flax ResNet
    passes it by position (as Flax's own signature allows) and the export dies with a TypeError.
    This adapter, installed over the patched function for the one ``apply``, forwards the window
    by keyword; the model code, and so the model our side converts, stays as it is.
    """
    patched: Callable = nn.max_pool

    def by_keyword(inputs, window_shape, strides=None, padding="VALID"):
        return patched(inputs, window_shape=window_shape, strides=strides, padding=padding)

    nn.max_pool = by_keyword
    try:
        yield
    finally:
        nn.max_pool = patched


def _apply_with_workarounds(module: nn.Module, variables, xs: tuple):
    """``module.apply(variables, *xs)`` as jax2onnx traces it, with its known limits worked around."""
    with pool_window_by_keyword():
        return module.apply(variables, *xs)


def _drop_value_info(path: Path) -> None:
    """Remove the graph's intermediate ``value_info`` (shape annotations only): onnxruntime
    rejected some that jax2onnx wrote for the ResNet; ORT infers the shapes itself."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    if not proto.graph.value_info:
        return
    del proto.graph.value_info[:]
    onnx.save(proto, str(path))


if __name__ == "__main__":
    for model, path in export(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:] or None).items():
        print(model, path)
