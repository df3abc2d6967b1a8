#!/usr/bin/env bash
# Sets up ONNX Runtime and runs the server (release build) on the example models in models/.
# Extra arguments go to the server, e.g. `scripts/serve.sh --model-control-mode poll`.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
bash scripts/setup-ort.sh >/dev/null
exec cargo run --release -p switchyard -- --model-repository models \
    --ort-library "$repo/.ort/lib/libonnxruntime.so" "$@"
