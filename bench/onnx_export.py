"""The yardstick's side of the browser benchmark: the same Flax models exported to ONNX by jax2onnx.

``python -m bench.onnx_export CKPT_DIR OUT_DIR`` reads the checkpoints written by
``python -m bench.transformer_models CKPT_DIR`` (the same weights the TF.js models are converted
from) and writes ``<name>.onnx`` for each, batch 1, for onnxruntime-web (bench/browser_compare.mjs).
Needs the ``bench`` extra (``pip install -e .[bench]``: jax2onnx 0.17.1).
"""
from __future__ import annotations

import sys
from pathlib import Path

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
            to_onnx(lambda *xs, v=variables, m=module: m.apply(v, *xs),
                    [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in inputs], model_name=name,
                    return_mode="file", output_path=str(path))
        except Exception as exc:  # noqa: BLE001  jax2onnx's own limits: that model runs without the yardstick
            if failures is None:
                raise
            failures[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
            continue
        written[name] = path
    return written


if __name__ == "__main__":
    for model, path in export(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:] or None).items():
        print(model, path)
