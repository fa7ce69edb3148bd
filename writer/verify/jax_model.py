"""The original model as a JAX function of numpy inputs: the user's Flax module (Linen or NNX, in
inference mode) on the checkpoint's values, or the template graph run with ``flax.linen`` layers on the
raw checkpoint tensors (Flax layout), an implementation independent of the converter's.

jax and flax are imported inside the functions: importing verify must stay fast (the CLI, the studio).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from topology.graph import LayerGraph
from topology.trace import is_nnx_module
from topology.trace.call_spec import CallSpec
from topology.trace.capture import nest
from topology.vocabulary.errors import ConversionError


def _float32(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    return array.astype(np.float32) if array.dtype.kind == "f" or array.dtype.name == "bfloat16" else array


_FLAX_ACTIVATIONS = {"softsign": "soft_sign", "swish": "silu"}


def _jax_activation(name: str) -> Callable:
    import functools

    import jax
    import jax.numpy as jnp

    if name == "linear":
        return lambda x: x
    if name == "gelu_exact":
        return functools.partial(jax.nn.gelu, approximate=False)
    if name == "tanh":
        return jnp.tanh
    return getattr(jax.nn, _FLAX_ACTIVATIONS.get(name, name))


def template_function(graph: LayerGraph, activation: str) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
    """The template graph evaluated with flax.linen layers on the raw checkpoint tensors.

    Example:
        >>> run = template_function(graph, "relu")          # doctest: +SKIP
        >>> run([np.zeros((1, 28, 28, 1), np.float32)])[0].shape   # doctest: +SKIP
        (1, 10)
    """
    import flax.linen as nn
    import jax

    act = _jax_activation(activation)
    params: list[dict] = []
    steps: list[Callable] = []
    for layer in graph.layers:
        cls, cfg = layer.class_name, layer.config
        weights = {}
        for binding in layer.weights:
            if binding.tensor is None or binding.transform is not None:
                raise ConversionError("VERIFY_NEEDS_MODULE", f"layer {layer.name} is not a plain template layer",
                                      "pass --module so the reference runs your model code")
            weights[binding.name] = _float32(binding.tensor.load())  # Flax layout, as stored
        params.append(weights)
        fn = _activated(cfg.get("activation", "linear"), act)
        if cls in ("Conv1D", "Conv2D", "Conv3D"):
            module = nn.Conv(features=cfg["filters"], kernel_size=tuple(cfg["kernel_size"]),
                             strides=tuple(cfg["strides"]), padding=str(cfg["padding"]).upper(),
                             kernel_dilation=tuple(cfg["dilation_rate"]), use_bias=cfg["use_bias"])
            steps.append(_apply(module, fn))
        elif cls == "Dense":
            steps.append(_apply(nn.Dense(features=cfg["units"], use_bias=cfg["use_bias"]), fn))
        elif cls.startswith(("AveragePooling", "MaxPooling")):
            pool = nn.avg_pool if cls.startswith("Average") else nn.max_pool
            window, strides, padding = tuple(cfg["pool_size"]), tuple(cfg["strides"]), str(cfg["padding"]).upper()
            steps.append(lambda p, x, pool=pool, w=window, st=strides, pad=padding: pool(x, w, strides=st, padding=pad))
        elif cls == "Flatten":
            steps.append(lambda p, x: x.reshape((x.shape[0], -1)))
        else:
            raise ConversionError("VERIFY_NEEDS_MODULE", f"layer {layer.name} ({cls}) is not a template layer",
                                  "pass --module so the reference runs your model code")

    @jax.jit
    def forward(all_params, x):
        for step, p in zip(steps, all_params):
            x = step(p, x)
        return x

    return lambda xs: [np.asarray(forward(params, xs[0]))]


def _activated(name: str, act: Callable) -> Callable:
    return (lambda x: x) if name == "linear" else act


def _apply(module: Any, activation: Callable) -> Callable:
    return lambda p, x: activation(module.apply({"params": p}, x))


def module_function(module: Any, variables: Any, call: CallSpec = CallSpec()) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
    """``module`` in inference mode on the checkpoint's ``variables``, called as ``call`` says, jitted.

    Example:
        >>> run = module_function(CNN(), source.variables)          # doctest: +SKIP
        >>> run([np.zeros((1, 28, 28, 1), np.float32)])[0].shape   # doctest: +SKIP
        (1, 10)
    """
    import jax

    if is_nnx_module(module):
        from flax import nnx

        _load_nnx_state(module, variables)
        module.eval()
        graphdef, state = nnx.split(module)

        @jax.jit
        def forward(state, *xs):
            return call.nnx_call(nnx.merge(graphdef, state), list(xs))

        return lambda xs: _as_list(forward(state, *xs))
    tree = {name: nest({p: _float32(ref.load()) for p, ref in refs.items()})
            for name, refs in variables.collections.items() if refs}
    forward = jax.jit(lambda v, *xs: call.linen_apply(module, v, list(xs)))
    return lambda xs: _as_list(forward(tree, *xs))


def _load_nnx_state(module: Any, variables: Any) -> None:
    """Set every NNX Param/BatchStat of ``module`` from the checkpoint, matched by path."""
    from flax import nnx

    graphdef, state = nnx.split(module)
    flat = nnx.to_flat_state(state)
    tensors = {path: ref for refs in variables.collections.values() for path, ref in refs.items()}
    updated = []
    for path, var in flat:
        key = tuple(str(p) for p in path)
        ref = tensors.get(key) or tensors.get((*key, "value"))
        if ref is None:
            if isinstance(var, (nnx.Param, nnx.BatchStat)) or getattr(var, "type", None) in (nnx.Param, nnx.BatchStat):
                raise ConversionError("MISSING_PARAMETER",
                                      f"the module needs {'/'.join(key)}, which the checkpoint does not have",
                                      "check that the checkpoint was saved from this model (nnx.state(model))")
            updated.append((path, var))
            continue
        var = var.replace(_float32(ref.load())) if hasattr(var, "replace") else var
        updated.append((path, var))
    nnx.update(module, nnx.from_flat_state(updated))


def _as_list(out: Any) -> list[np.ndarray]:
    if isinstance(out, (list, tuple)):
        return [np.asarray(o) for o in out]
    if isinstance(out, dict):
        return [np.asarray(out[k]) for k in out]
    return [np.asarray(out)]

