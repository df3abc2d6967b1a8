#!/usr/bin/env bash
# The test command: provisions ONNX Runtime, the Debian tools the tests start (nginx, haproxy, promtool, debootstrap for
# the container image check; scripts/setup-system.sh) and the Python test tools (with kubectl and kubernetes-validate
# for the manifests' checks in tests/interop/test_kubernetes.py), then runs the format and lint gates,
# the Rust unit and integration tests, and the interop tests with the real Triton clients (tritonclient over
# HTTP and gRPC, perf_analyzer). Works on a fresh machine; later runs reuse what is already set up.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

bash scripts/setup-ort.sh >/dev/null
bash scripts/setup-system.sh >/dev/null
bash scripts/setup-python.sh >/dev/null
export ORT_DYLIB_PATH="$repo/.ort/lib/libonnxruntime.so"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --workspace
echo "== interop tests (tritonclient, perf_analyzer)"
cargo build -p switchyard -p switchyard-client --quiet
SWITCHYARD_BIN="$repo/target/debug/switchyard" .venv/bin/python -m pytest tests/interop -q -p no:cacheprovider
