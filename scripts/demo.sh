#!/usr/bin/env bash
# The main job: set up, export a model, embed and rerank the example query (see examples/demo.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
exec python examples/demo.py "$@"
