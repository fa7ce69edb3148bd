"""Build the Keras equivalent of the MNIST CNN with the checkpoint's weights; run it with .venv-tfjs.

    .venv-tfjs/bin/python bench/keras_mnist.py PARAMS.npz MODEL.h5

``PARAMS.npz`` holds ``<Layer>/kernel`` and ``<Layer>/bias`` for Conv_0, Conv_1, Dense_0 and
Dense_1 (written by bench/official.py from examples/mnist_ckpt). Flax and Keras share the
layouts here: conv kernels HWIO, dense kernels (in, out), NHWC flattening; Flax's ``nn.Conv``
pads SAME and ``nn.avg_pool`` uses VALID 2x2 windows, stride 2. Prints JSON: versions and
the H5 size. This file imports TensorFlow and must not be imported by the project.
"""
from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def build(params: dict):
    """The Keras-2 (tf_keras) Sequential model, weights set from ``params``."""
    import tf_keras as keras

    layers = keras.layers
    model = keras.Sequential([
        layers.InputLayer(input_shape=(28, 28, 1), name="input"),
        layers.Conv2D(32, 3, padding="same", activation="relu", name="Conv_0"),
        layers.AveragePooling2D(2, name="pool_0"),
        layers.Conv2D(64, 3, padding="same", activation="relu", name="Conv_1"),
        layers.AveragePooling2D(2, name="pool_1"),
        layers.Flatten(name="flatten"),
        layers.Dense(256, activation="relu", name="Dense_0"),
        layers.Dense(10, name="Dense_1"),
    ], name="mnist_cnn")
    for name in ("Conv_0", "Conv_1", "Dense_0", "Dense_1"):
        model.get_layer(name).set_weights([params[f"{name}/kernel"], params[f"{name}/bias"]])
    return model


def main(argv: list[str]) -> int:
    import numpy as np
    import tensorflow as tf

    params_file, h5_file = argv
    with np.load(params_file) as data:
        params = {k: data[k] for k in data.files}
    model = build(params)
    model.save(h5_file, save_format="h5")
    import tensorflowjs

    print(json.dumps({"tensorflow": tf.__version__, "tensorflowjs": tensorflowjs.__version__,
                      "h5_bytes": os.path.getsize(h5_file), "params": int(model.count_params())}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
