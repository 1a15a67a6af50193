#!/usr/bin/env bash
# Installs Debian's chromium for the headless-browser test of report.html
# (tests/test_report.py). Idempotent: does nothing when /usr/bin/chromium is already there.
# Needs root (or sudo) and network; CI runs it through `bash scripts/install.sh --dev`.
set -euo pipefail
if [[ -x /usr/bin/chromium ]]; then
  exit 0
fi
SUDO=""
if [[ "$(id -u)" != "0" ]]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "install-browser: not root and no sudo; install chromium yourself (apt-get install chromium)" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends chromium
/usr/bin/chromium --version
