"""Save randomly initialized checkpoints of the example models, as their users save them.

    python examples/models/make_checkpoints.py ckpts/     # vit.msgpack, resnet.msgpack, vae.msgpack

Weights are random (nothing is trained here): the checkpoints are for trying the conversion and
``python -m writer verify``, which compares TF.js with JAX on the same weights.
"""
from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
from flax.serialization import to_bytes

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.models.resnet import ResNet  # noqa: E402
from examples.models.vae import VAE  # noqa: E402
from examples.models.vit import ViT  # noqa: E402


def main(folder: str) -> None:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    image = jnp.zeros((1, 32, 32, 3))
    key = jax.random.PRNGKey(0)
    models = {
        "vit": ViT().init(key, image),
        "resnet": ResNet().init(key, image),  # {"params": ..., "batch_stats": ...}
        "vae": VAE().init(key, jnp.zeros((1, 784)), jax.random.PRNGKey(1)),
    }
    for name, variables in models.items():
        (out / f"{name}.msgpack").write_bytes(to_bytes(variables))
        print(f"wrote {out / name}.msgpack")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "ckpts")
