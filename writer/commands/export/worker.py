"""The export-savedmodel worker: builds, saves, reloads and runs the SavedModel inside TensorFlow's interpreter.

:mod:`writer.commands.export.savedmodel` runs it by path, isolated (``python -I
writer/commands/export/worker.py --worker JOB``), so nothing of this environment leaks into TensorFlow's: it imports only the standard
library, numpy, tensorflow and keras, and loads the one TF.js weight reader,
:mod:`writer.tfjs_files` (numpy only), from its file. It prints one JSON line: the result, or
``{"ok": false, "error": ...}`` for the parent to report.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

_READER_FILE = Path(__file__).resolve().parents[2] / "tfjs_files.py"  # writer/tfjs_files.py, from writer/commands/export/


def _tfjs_files() -> Any:
    # Isolated (-I), the project is not importable here: load the reader from its file.
    spec = importlib.util.spec_from_file_location("flax2tfjs_tfjs_files", _READER_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _keras():
    try:
        import tf_keras as keras  # Keras 2 for TF >= 2.16
        return keras
    except ImportError:
        from tensorflow import keras
        if not keras.__version__.startswith("2."):
            raise ImportError(f"tf.keras is Keras {keras.__version__}; install tf-keras to read Keras-2 model.json")
        return keras


def _set_weights(model: Any, weights: dict) -> None:
    for layer in model.layers:
        values = []
        for variable in layer.weights:
            full = variable.name.split(":")[0]
            candidates = [full, f"{layer.name}/{full.split('/')[-1]}"]
            name = next((c for c in candidates if c in weights), None)
            if name is None:
                raise KeyError(f"model.json has no weight for {full} (tried {', '.join(candidates)})")
            values.append(weights.pop(name))
        if values:
            layer.set_weights(values)
    if weights:
        raise KeyError(f"weights in the manifest that no layer takes: {', '.join(sorted(weights))}")


def worker(job: dict) -> dict:
    """Build, save, reload and run the SavedModel (inside the TensorFlow interpreter).

    ``job`` names the model folder, the staging folder to save into, the input ``.npy``
    files and the folder for the output ``.npy`` files.

    Example:
        >>> worker({"model_dir": "out", "saved_dir": "staging", "inputs": ["x0.npy"], "outputs": "y"})  # doctest: +SKIP
        {'ok': True, 'outputs': ['y/y0.npy'], ...}
    """
    import numpy as np

    try:
        import tensorflow as tf
        keras = _keras()
    except ImportError as exc:
        return {"ok": False, "code": "TENSORFLOW_NOT_INSTALLED", "error": str(exc)}
    files = _tfjs_files()
    folder = Path(job["model_dir"])
    document = files.read_model_json(folder)
    topology = document["modelTopology"]
    model = keras.models.model_from_json(json.dumps(topology.get("model_config", topology)))
    _set_weights(model, files.read_weights(folder, document))  # dequantized as tfjs does
    saved = Path(job["saved_dir"])
    model.save(str(saved), save_format="tf", include_optimizer=False)
    loaded = tf.saved_model.load(str(saved))
    signature = loaded.signatures["serving_default"]
    xs = [np.load(p) for p in job["inputs"]]
    arg_names = sorted(signature.structured_input_signature[1])
    by_position = {t.name.split(":")[0]: i for i, t in enumerate(model.inputs)}
    feed = {}
    for name in arg_names:
        index = by_position.get(name, arg_names.index(name))
        feed[name] = tf.constant(xs[index])
    result = signature(**feed)
    keys = [k for k in model.output_names if k in result] or sorted(result)
    Path(job["outputs"]).mkdir(parents=True, exist_ok=True)
    paths = []
    for i, key in enumerate(keys):
        path = Path(job["outputs"]) / f"y{i}.npy"
        np.save(path, np.asarray(result[key]))
        paths.append(str(path))
    return {"ok": True, "outputs": paths, "tensorflow": tf.__version__, "keras": keras.__version__,
            "signature": "serving_default", "inputs": arg_names, "output_keys": keys}


def _worker_main(argv: list[str]) -> int:
    job = json.loads(argv[1])
    try:
        result = worker(job)
    except Exception as exc:  # reported to the parent, which raises SAVEDMODEL_FAILED
        text = f"{type(exc).__name__}: {exc}"
        result = {"ok": False, "error": text if len(text) <= 600 else text[:600] + " ..."}
    print(json.dumps(result), flush=True)
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        sys.exit(_worker_main(sys.argv[1:]))
    print("usage: python -m writer export-savedmodel OUT SAVED_DIR (this module's --worker is internal)",
          file=sys.stderr)
    sys.exit(2)
