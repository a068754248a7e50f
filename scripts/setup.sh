#!/usr/bin/env bash
# Creates .venv and installs the project with its test tools. Safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev]"
echo "Installed into .venv ($(.venv/bin/python -c 'import tensorflow as tf; print("TensorFlow", tf.__version__)'))"
