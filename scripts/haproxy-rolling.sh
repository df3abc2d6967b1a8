#!/usr/bin/env bash
# Three replicas behind HAProxy on loopback ports: a rolling restart under HTTP and gRPC load, then a new version
# in the shared repository (poll mode). Prints the requests, failures and times (tests/interop/test_haproxy.py,
# also run by scripts/test.sh). Needs haproxy (scripts/setup-system.sh) and a debug build of the server.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
bash scripts/setup-ort.sh >/dev/null
bash scripts/setup-system.sh >/dev/null 2>&1
bash scripts/setup-python.sh >/dev/null
export ORT_DYLIB_PATH="$repo/.ort/lib/libonnxruntime.so"
cargo build -p switchyard --quiet
SWITCHYARD_BIN="$repo/target/debug/switchyard" .venv/bin/python -m pytest tests/interop/test_haproxy.py -q -s \
    -p no:cacheprovider
