"""Build the Keras twin of bench/optimize_models.py's BNCNN with its weights; run it with .venv-tfjs.

    .venv-tfjs/bin/python bench/keras_bn_cnn.py PARAMS.npz MODEL.h5

``PARAMS.npz`` holds ``<layer>/<weight>`` in Keras names (written by bench/optimize.py from the
Flax variables): conv kernels HWIO (no bias), BatchNormalization gamma/beta/moving_mean/
moving_variance (epsilon 1e-5 as in Flax), dense kernel (in, out) and bias. The twin is what a
Keras user writes: Conv2D -> BatchNormalization -> ReLU, AveragePooling2D, Dropout,
GlobalAveragePooling2D, Dense. Prints JSON: versions and the H5 size. Imports TensorFlow: never
imported by the project.
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
    stack = [layers.InputLayer(input_shape=(32, 32, 3), name="input")]
    for stage, features in enumerate((32, 64)):
        for i in range(2):
            stack += [layers.Conv2D(features, 3, padding="same", use_bias=False, name=f"conv{stage}_{i}"),
                      layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=f"bn{stage}_{i}"),
                      layers.ReLU(name=f"relu{stage}_{i}")]
        stack.append(layers.AveragePooling2D(2, name=f"pool{stage}"))
    stack += [layers.Dropout(0.25, name="dropout"), layers.GlobalAveragePooling2D(name="mean"),
              layers.Dense(10, name="head")]
    model = keras.Sequential(stack, name="bn_cnn")
    for layer in model.layers:
        names = {"Conv2D": ["kernel"], "BatchNormalization": ["gamma", "beta", "moving_mean", "moving_variance"],
                 "Dense": ["kernel", "bias"]}.get(type(layer).__name__)
        if names:
            layer.set_weights([params[f"{layer.name}/{n}"] for n in names])
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
