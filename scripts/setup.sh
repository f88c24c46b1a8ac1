#!/usr/bin/env bash
# Create .venv and install the benchmark with its test tools. Idempotent; ~2 minutes on a fresh machine.
# torch/torchvision are pinned in pyproject.toml (torch==2.14.1, torchvision==0.29.1): never unpinned.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"
.venv/bin/python -m pip check
