"""Small real Flax models for the tests, and helpers that save them in every checkpoint format.

Expected outputs always come from running these models in JAX.
"""
from __future__ import annotations

from pathlib import Path

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from tests.jax_reference import random_inputs


class MLP(nn.Module):
    """Dense-relu-...-Dense with auto names Dense_0..Dense_{n-1}."""

    features: tuple[int, ...] = (32, 10)

    @nn.compact
    def __call__(self, x):
        x = x.reshape((x.shape[0], -1))
        for index, width in enumerate(self.features):
            x = nn.Dense(width)(x)
            if index < len(self.features) - 1:
                x = nn.relu(x)
        return x


class CNN(nn.Module):
    """The Flax MNIST example's CNN, narrower by default to keep tests fast."""

    widths: tuple[int, int] = (8, 16)
    hidden: int = 32
    pool: str = "avg"

    @nn.compact
    def __call__(self, x):
        pool = nn.avg_pool if self.pool == "avg" else nn.max_pool
        for width in self.widths:
            x = nn.relu(nn.Conv(width, (3, 3))(x))
            x = pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(self.hidden)(x))
        return nn.Dense(10)(x)


def init(module: nn.Module, input_shape: tuple[int, ...], seed: int = 0) -> dict:
    """Variables of ``module`` for inputs of ``input_shape`` (without batch), as numpy."""
    variables = module.init(jax.random.PRNGKey(seed), jnp.zeros((1, *input_shape), jnp.float32))
    return jax.tree_util.tree_map(np.asarray, flax.core.unfreeze(variables))


def run(module: nn.Module, variables: dict, x: np.ndarray) -> np.ndarray:
    """The model's output in JAX, as numpy."""
    return np.asarray(module.apply(variables, jnp.asarray(x)))


def inputs(shape: tuple[int, ...], batch: int = 4, seed: int = 1) -> np.ndarray:
    """Uniform inputs in [-1, 1) of ``shape`` (without batch)."""
    return random_inputs([shape], batch, seed, low=-1, high=1)[0]


def train_state_of(module: nn.Module, variables: dict) -> train_state.TrainState:
    """A TrainState with Adam moments shaped exactly like the params (a trap for readers)."""
    state = train_state.TrainState.create(apply_fn=module.apply, params=variables["params"], tx=optax.adam(1e-3))
    # One real update so that mu/nu are non-zero and differ from the params.
    grads = jax.tree_util.tree_map(jnp.ones_like, state.params)
    return state.apply_gradients(grads=grads).replace(params=variables["params"])


def save_msgpack(tree, path: Path) -> Path:
    path.write_bytes(flax.serialization.to_bytes(tree))
    return path


def save_npz(variables: dict, path: Path) -> Path:
    flat = flax.traverse_util.flatten_dict(variables, sep="/")
    np.savez(path, **{key: np.asarray(value) for key, value in flat.items()})
    return path


def save_orbax(tree, path: Path) -> Path:
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path.absolute(), tree)
    return path


def save_orbax_manager(trees_by_step: dict[int, object], root: Path) -> Path:
    import orbax.checkpoint as ocp

    with ocp.CheckpointManager(root.absolute(), options=ocp.CheckpointManagerOptions(max_to_keep=None)) as manager:
        for step, tree in trees_by_step.items():
            manager.save(step, args=ocp.args.StandardSave(tree))
        manager.wait_until_finished()
    return root


def save_legacy(tree, folder: Path, steps: tuple[int, ...], use_orbax: bool) -> Path:
    """``flax.training.checkpoints.save_checkpoint`` output: msgpack files or orbax folders."""
    from flax.training import checkpoints

    folder.mkdir(parents=True, exist_ok=True)
    previous = flax.config.flax_use_orbax_checkpointing
    flax.config.update("flax_use_orbax_checkpointing", use_orbax)
    try:
        for step in steps:
            checkpoints.save_checkpoint(folder.absolute(), tree, step, keep=100)
    finally:
        flax.config.update("flax_use_orbax_checkpointing", previous)
    return folder
