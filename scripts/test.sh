#!/usr/bin/env bash
# Set everything up, then run every test (the README's test command; CI runs this).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
exec "${PYTHON:-python}" -m pytest "$@"
