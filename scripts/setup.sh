#!/usr/bin/env bash
# Create .venv (once) and install granite-rt with every extra the demo and the tests use. A later run checks
# what is installed (scripts/setup_check.py, no pip) and installs only what is missing: usually nothing.
# torch is installed first, pinned to the CPU build that lies on these machines' disks:
# an unpinned torch would resolve to several GB of CUDA wheels.
# `bash scripts/setup.sh --check` lists what would be installed and installs nothing (exit 1 if anything).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH=2.13.0
EXTRAS=export,openvino,server,ray,test
say() { echo "setup: $*" >&2; }

if [ ! -x .venv/bin/python ]; then
  if [ "${1:-}" = "--check" ]; then say "would create .venv and install everything"; exit 1; fi
  say "creating .venv ($("$PY" --version)) and updating pip"
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
. .venv/bin/activate
todo=$(python scripts/setup_check.py "$TORCH" "$EXTRAS")
if [ -z "$todo" ]; then
  say ".venv is up to date (torch $TORCH, granite-rt editable with $EXTRAS): nothing to install"
  exit 0
fi
if [ "${1:-}" = "--check" ]; then say "would install:"; echo "$todo" | sed 's/^/  /' >&2; exit 1; fi
if echo "$todo" | grep -q '^torch=='; then
  say "installing torch==$TORCH, the CPU build (about 1 minute) ..."
  start=$SECONDS
  python -m pip install -q "torch==$TORCH"
  say "torch installed in $((SECONDS - start)) s"
fi
if echo "$todo" | grep -qv '^torch=='; then
  say "installing granite-rt (editable) with its extras $EXTRAS: onnxruntime, openvino, transformers," \
      "sentence-transformers, onnx, nncf, starlette, uvicorn, ray, pyarrow, pytest, ... (a few minutes on the first run) ..."
  start=$SECONDS
  python -m pip install -q -e ".[$EXTRAS]"
  python scripts/setup_check.py --stamp
  say "granite-rt installed in $((SECONDS - start)) s"
fi
