#!/usr/bin/env bash
# The whole check: lint, types, tests. Offline; fixtures are built by the tests themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
"$PY" -m ruff check harness tests
"$PY" -m mypy
"$PY" -m pytest "$@"
