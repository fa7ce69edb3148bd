#!/usr/bin/env bash
# Create .venv-tfjs/ at the repo root with the official `tensorflowjs` Python package.
#
# Only the tests use it: they load our model.json with
# `tensorflowjs.converters.load_keras_model` to prove the official stack accepts it.
# It lives in its own virtualenv because TF 2.19 needs numpy < 2.2 while the project
# itself runs on numpy 2.x. The pins are the only combination known to install and
# import here (ydf 0.16 breaks the import with a protobuf error).
#
# Idempotent: if the venv already imports tensorflowjs, nothing is done.
#
# Example:
#   scripts/setup_tfjs_venv.sh            # ~100 s and ~2.9 GB the first time
#   PYTHON=python3.11 scripts/setup_tfjs_venv.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-tfjs"
PY="${PYTHON:-python3}"

# The same check the tests rely on: the package imports with its converters.
check() {
  TF_CPP_MIN_LOG_LEVEL=3 "$VENV/bin/python" -c \
    "import tensorflowjs, tensorflowjs.converters; print('tensorflowjs', tensorflowjs.__version__)" \
    2>/dev/null
}

if [ -x "$VENV/bin/python" ] && check; then
  echo "setup_tfjs_venv: $VENV is already complete"
  exit 0
fi

if ! command -v "$PY" >/dev/null 2>&1; then
  echo "setup_tfjs_venv: '$PY' not found; set PYTHON to a Python 3.9-3.12 interpreter" >&2
  exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup_tfjs_venv: creating $VENV with $("$PY" --version 2>&1)"
  "$PY" -m venv "$VENV"
fi

"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install \
  "tensorflowjs==4.22.0" "tensorflow==2.19.0" "tf-keras==2.19.0" \
  "tensorflow-decision-forests==1.12.0" "ydf==0.15.0" "setuptools<82"

if ! check; then
  echo "setup_tfjs_venv: installed, but 'import tensorflowjs' still fails in $VENV:" >&2
  TF_CPP_MIN_LOG_LEVEL=3 "$VENV/bin/python" -c "import tensorflowjs.converters" >&2 || true
  exit 1
fi
echo "setup_tfjs_venv: done"
