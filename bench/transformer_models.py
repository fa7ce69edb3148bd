"""The models of the browser benchmark (issue 22), at the sizes users ship.

* ``BertTiny``: examples/models/bert_classifier.py at BERT-tiny's size (2 layers, hidden 128,
  2 heads, MLP 512), 128 tokens, three int32 inputs (ids, attention mask, token types).
* ``ViTTiny``: examples/models/vit.py's layers at ViT-Ti/16's size (12 layers, hidden 192,
  3 heads, MLP 768, 16x16 patches) on 96x96x3 images.
* ``CNN``: the Flax MNIST example's CNN (examples/train_mnist.py) on 28x28x1, and ``ResNet18``
  (bench/optimize_models.py, the Flax ImageNet example's) on 112x112x3: the convolutional
  reference rows.

``python -m bench.transformer_models OUT/`` writes ``<name>.msgpack`` for each
(random weights, seed 0) and prints the conversion command of each.
"""
from __future__ import annotations

import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.serialization import to_bytes

from bench.optimize_models import ResNet18
from examples.models.bert_classifier import BertClassifier
from examples.models.vit import ViTEmbeddings, ViTLayer
from examples.train_mnist import CNN

SEQUENCE = 128
IMAGE = (96, 96, 3)


class BertTiny(BertClassifier):
    vocab: int = 30522
    dim: int = 128
    heads: int = 2
    layers: int = 2
    max_positions: int = 512
    classes: int = 2


class ViTTiny(nn.Module):
    num_labels: int = 1000
    num_layers: int = 12
    hidden_size: int = 192

    @nn.compact
    def __call__(self, pixel_values, deterministic: bool = True):
        hidden = ViTEmbeddings(patch_size=16, hidden_size=self.hidden_size, name="embeddings")(pixel_values,
                                                                                               deterministic)
        for i in range(self.num_layers):
            hidden = ViTLayer(hidden_size=self.hidden_size, num_heads=3, mlp_size=4 * self.hidden_size,
                              name=f"layer_{i}")(hidden, deterministic)
        hidden = nn.LayerNorm(epsilon=1e-12, name="layernorm")(hidden)
        return nn.Dense(self.num_labels, name="classifier")(hidden[:, 0, :])


MODELS = {
    "mnist-cnn": ("CNN", [jnp.zeros((1, 28, 28, 1))], ["--input-shape", "28,28,1"]),
    "resnet18": ("ResNet18", [jnp.zeros((1, 112, 112, 3))], ["--input-shape", "112,112,3"]),
    "bert-tiny": ("BertTiny", [jnp.zeros((1, SEQUENCE), jnp.int32)] * 3,
                  ["--input-shape", str(SEQUENCE)] * 3 + ["--input-dtype", "int32"]),
    "vit-ti": ("ViTTiny", [jnp.zeros((1, *IMAGE))], ["--input-shape", ",".join(map(str, IMAGE))]),
}  # name -> (the model's name in this file, for --module; example inputs; the writer's shape flags)


def model(name: str) -> nn.Module:
    """A fresh instance of the benchmark model ``name``.

    Example:
        >>> type(model("vit-ti")).__name__
        'ViTTiny'
    """
    return globals()[MODELS[name][0]]()


def write_checkpoints(folder: Path) -> dict[str, list[str]]:
    """Save every model's random variables (seed 0) as msgpack; name -> writer arguments after the paths.

    Example:
        >>> args = write_checkpoints(Path("ckpts"))                     # doctest: +SKIP
        >>> args["vit-ti"][:2]                                          # doctest: +SKIP
        ['--module', '.../bench/transformer_models.py:ViTTiny']
    """
    folder.mkdir(parents=True, exist_ok=True)
    commands = {}
    for name, (attribute, inputs, flags) in MODELS.items():
        variables = model(name).init(jax.random.PRNGKey(0), *inputs)
        (folder / f"{name}.msgpack").write_bytes(to_bytes(variables))
        commands[name] = ["--module", f"{Path(__file__).resolve()}:{attribute}", *flags]
    return commands


if __name__ == "__main__":
    for model, args in write_checkpoints(Path(sys.argv[1])).items():
        print(f"python -m writer {sys.argv[1]}/{model}.msgpack OUT/{model} {' '.join(args)}")
