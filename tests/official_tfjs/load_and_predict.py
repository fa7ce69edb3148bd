"""Load model.json with the OFFICIAL `tensorflowjs` package and predict; run with .venv-tfjs.

This is the loadability check the user asked for: `tensorflowjs.converters.load_keras_model`
(tf-keras 2.19 underneath) must accept what flax2tfjs writes. It reads only `modelTopology`
and `weightsManifest` and would not notice weight bytes in the wrong order, so callers compare
the predictions, not just the successful load. Importing TensorFlow takes ~6 s, so one call can
run many jobs.

Usage (from the repository root, after scripts/setup_tfjs_venv.sh):

    .venv-tfjs/bin/python tests/official_tfjs/load_and_predict.py MODEL_DIR IN.npy OUT.npy [IN2.npy OUT2.npy ...]
    .venv-tfjs/bin/python tests/official_tfjs/load_and_predict.py --jobs jobs.json   # or --jobs - (stdin)

MODEL_DIR may also be the model.json path. A jobs file is a JSON list of
``{"model": DIR, "inputs": [IN.npy, ...], "outputs": [OUT.npy, ...]}`` (several inputs for a
multi-input model, in model input order; one output file per model output). ``"input"`` /
``"output"`` (single paths) are accepted too.

Prints one JSON line per job to stdout: ``{"model": ..., "ok": true, "outputs": [...]}`` or
``{"model": ..., "ok": false, "error": "..."}``; exit status 1 if any job failed.
"""
from __future__ import annotations

import json
import os
import sys
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _jobs_from_argv(argv: list[str]) -> list[dict]:
    if len(argv) >= 2 and argv[0] == "--jobs":
        text = sys.stdin.read() if argv[1] == "-" else open(argv[1], encoding="utf-8").read()
        jobs = json.loads(text)
        if not isinstance(jobs, list):
            raise SystemExit("--jobs: expected a JSON list of jobs")
        return jobs
    if len(argv) < 3 or (len(argv) - 1) % 2:
        raise SystemExit(__doc__)
    model, rest = argv[0], argv[1:]
    return [{"model": model, "inputs": [rest[i]], "outputs": [rest[i + 1]]}
            for i in range(0, len(rest), 2)]


def _model_json(path: str) -> str:
    return os.path.join(path, "model.json") if os.path.isdir(path) else path


def run_job(job: dict, load_keras_model, np) -> dict:
    """Load one model, predict on its inputs, save its outputs; returns the status line."""
    model_json = _model_json(job["model"])
    inputs = job.get("inputs") or [job["input"]]
    outputs = job.get("outputs") or [job["output"]]
    model = load_keras_model(model_json)
    xs = [np.load(p) for p in inputs]
    ys = model.predict(xs[0] if len(xs) == 1 else xs, verbose=0)
    ys = ys if isinstance(ys, list) else [ys]
    if len(ys) != len(outputs):
        raise ValueError(f"model has {len(ys)} outputs but {len(outputs)} output paths were given")
    for path, y in zip(outputs, ys):
        np.save(path, np.asarray(y))
    return {"model": model_json, "ok": True, "outputs": outputs,
            "output_shapes": [list(np.shape(y)) for y in ys]}


def main(argv: list[str]) -> int:
    jobs = _jobs_from_argv(argv)
    import numpy as np
    from tensorflowjs.converters import load_keras_model

    failed = 0
    for job in jobs:
        try:
            status = run_job(job, load_keras_model, np)
        except Exception as e:  # report every job; one bad model must not hide the others
            failed += 1
            status = {"model": str(job.get("model")), "ok": False,
                      "error": f"{type(e).__name__}: {e}",
                      "traceback": traceback.format_exc(limit=3)}
        print(json.dumps(status), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
