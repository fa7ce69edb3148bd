"""What the tests that run Flax models in TF.js against JAX share.

Random variables (every float weight redrawn, so that biases and gates matter),
random inputs, the JAX side of a layer-matrix case, and the batch-by-batch
comparison with TF.js. Every draw comes from ``np.random.RandomState(seed)`` in
tree order, so a seed always gives the same values.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import ROOT, assert_close
from topology.trace.capture import inference_kwargs

# (rng, variable name, leaf) -> the new leaf; the name is the last path key (NNX's ".value" skipped)
Draw = Callable[[np.random.RandomState, str, np.ndarray], Any]


# -- random variables ----------------------------------------------------------
def redraw(tree: Any, draw: Draw, seed: int) -> Any:
    """``tree`` with every float leaf replaced by ``draw(rng, name, leaf)``; PRNG keys and ints kept.

    Example:
        >>> redraw({"var": np.zeros(2, np.float32), "step": np.int32(3)}, spread(), 0)["step"]
        array(3, dtype=int32)
    """
    rng = np.random.RandomState(seed)

    def visit(path, leaf):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):  # NNX rng streams (e.g. nnx.Dropout)
            return leaf
        leaf = np.asarray(leaf)
        if not np.issubdtype(leaf.dtype, np.floating):
            return leaf
        names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
        return draw(rng, next((n for n in reversed(names) if n != "value"), ""), leaf)

    return jax.tree_util.tree_map_with_path(visit, tree)


def spread(std: float = 0.5) -> Draw:
    """N(0, std) draws; variances (``var``, ``variance``) as |N(0, std)| + 0.5, so they stay positive."""
    def draw(rng: np.random.RandomState, name: str, leaf: np.ndarray) -> np.ndarray:
        value = rng.normal(0, std, leaf.shape).astype(leaf.dtype)
        return np.abs(value) + 0.5 if name in ("var", "variance") else value

    return draw


def nudge(std: float = 0.1) -> Draw:
    """The leaf plus N(0, std) noise: initial values moved off (zero biases would hide mistakes)."""
    return lambda rng, name, leaf: leaf + rng.normal(0, std, leaf.shape).astype(np.float32)


def trained_looking(rng: np.random.RandomState, name: str, leaf: np.ndarray) -> np.ndarray:
    """Weights of a realistic size; BatchNorm means around 0 and variances in [0.5, 2]."""
    if name == "var":
        return rng.uniform(0.5, 2.0, leaf.shape).astype(leaf.dtype)
    if name in ("mean", "bias"):
        return rng.normal(0, 0.3, leaf.shape).astype(leaf.dtype)
    if name == "scale":
        return rng.uniform(0.5, 1.5, leaf.shape).astype(leaf.dtype)
    fan_in = int(np.prod(leaf.shape[:-1])) if leaf.ndim > 1 else 1
    return (rng.normal(0, 1.0, leaf.shape) / np.sqrt(fan_in)).astype(leaf.dtype)


def randomize(tree: Any, seed: int = 1) -> Any:
    """Every float variable drawn from N(0, 0.5) (variances kept positive): the layer matrix's variables."""
    return redraw(tree, spread(0.5), seed)


# -- random inputs -------------------------------------------------------------
def random_inputs(shapes: Sequence[tuple[int, ...]], batch: int, seed: int, dtype: str = "float32",
                  low: float = -2.0, high: float = 2.0) -> list[np.ndarray]:
    """One array per shape (batch first): uniform floats in [low, high), or int32 ids in [low, high).

    Example:
        >>> [x.shape for x in random_inputs([(2,), (3, 1)], 4, seed=0)]
        [(4, 2), (4, 3, 1)]
    """
    rng = np.random.RandomState(seed)
    if dtype == "int32":
        return [rng.randint(int(low), int(high), (batch, *s)).astype(np.int32) for s in shapes]
    return [rng.uniform(low, high, (batch, *s)).astype(np.float32) for s in shapes]


# -- layer-matrix cases (topology.layers.base.Case) ----------------------------
def case_shapes(case: Any) -> list[tuple[int, ...]]:
    """The case's input shapes (it declares one shape or a list of them)."""
    shape = case.input_shape
    return [tuple(shape)] if all(isinstance(d, int) for d in shape) else [tuple(s) for s in shape]


def case_inputs(case: Any, batch: int, seed: int = 0) -> list[np.ndarray]:
    """Random inputs of the case's shapes, dtype and range."""
    low, high = case.input_range
    return random_inputs(case_shapes(case), batch, seed, case.input_dtype, low, high)


def is_nnx(module: Any) -> bool:
    """True for an NNX module (without importing flax.nnx)."""
    return any(c.__module__.startswith("flax.nnx") and c.__name__ == "Module" for c in type(module).__mro__)


def prepare(case: Any) -> tuple[Any, Any, Callable[[list[np.ndarray]], np.ndarray]]:
    """(module, variables or None for NNX, run in JAX) for a case, its variables randomised."""
    module = case.build()
    example = [jnp.asarray(x) for x in case_inputs(case, 1)]
    if is_nnx(module):
        from flax import nnx

        graphdef, state = nnx.split(module)
        nnx.update(module, randomize(state))
        module.eval()
        return module, None, lambda xs: np.asarray(module(*[jnp.asarray(x) for x in xs]))
    variables = randomize(jax.tree_util.tree_map(np.asarray, module.init(jax.random.PRNGKey(0), *example)))
    flags = inference_kwargs(type(module).__call__)
    return module, variables, lambda xs: np.asarray(module.apply(variables, *[jnp.asarray(x) for x in xs], **flags))


# -- the comparison ------------------------------------------------------------
def compare_batches(tfjs: Any, out: Any, run_jax: Callable[[list[np.ndarray]], np.ndarray],
                    make_inputs: Callable[[int], list[np.ndarray]], batches: Sequence[int] = (1, 3)) -> float:
    """Run the converted model in TF.js and in JAX on each batch size; assert they agree; the worst difference."""
    worst = 0.0
    for batch in batches:
        xs = make_inputs(batch)
        result = tfjs.predict(out, xs)
        assert len(result.outputs) == 1
        worst = max(worst, assert_close(result.outputs[0], run_jax(xs)))
    return worst


def write_results(results: dict[str, float], name: str, what: str) -> None:
    """Keep the largest difference per case in ``test-artifacts/<name>.json`` for the docs.

    Skips when the cases did not run (e.g. deselected with ``-k``); fails on a non-finite difference.
    """
    if not results:
        pytest.skip(f"{what} did not run")
    folder = ROOT / "test-artifacts"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(results, indent=1, sort_keys=True))
    assert all(np.isfinite(v) for v in results.values())
