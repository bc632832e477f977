#!/usr/bin/env bash
# Create .venv (once) and install granite-rt with every extra the demo and the tests use.
# torch is installed first, pinned to the CPU build that lies on these machines' disks:
# an unpinned torch would resolve to several GB of CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[export,openvino,server,ray,test]"
