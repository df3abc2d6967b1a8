#!/usr/bin/env bash
# The container image's build stage (the Dockerfile runs exactly this): provisions ONNX Runtime with
# scripts/setup-ort.sh, builds the server and the client, and lays out OUT as the runtime image's files, which the
# runtime stage copies to / as they are:
#   OUT/usr/local/bin/{switchyard,switchyard-client}   the binaries
#   OUT/opt/switchyard/lib/                             libonnxruntime.so and its providers_shared library
#   OUT/models/                                         the example model repository
# PROFILE selects the cargo profile (default release; scripts/image-check.sh and its test use debug to reuse the
# test build). Usage: scripts/image-tree.sh OUT
set -euo pipefail
out="${1:?usage: scripts/image-tree.sh OUT}"
profile="${PROFILE:-release}"
[ "$profile" != debug ] || profile=dev
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

bash scripts/setup-ort.sh >/dev/null
cargo build --profile "$profile" --quiet -p switchyard -p switchyard-client
dir="$profile"
[ "$profile" != dev ] || dir=debug

rm -rf "$out"
mkdir -p "$out/usr/local/bin" "$out/opt/switchyard/lib" "$out/models"
install -m 0755 "target/$dir/switchyard" "target/$dir/switchyard-client" "$out/usr/local/bin/"
install -m 0644 -D "$(readlink -f .ort/lib/libonnxruntime.so)" "$out/opt/switchyard/lib/libonnxruntime.so"
install -m 0644 .ort/lib/libonnxruntime_providers_shared.so "$out/opt/switchyard/lib/"
# The example models (what the Dockerfile's context holds; no Python caches).
cp -R models/. "$out/models/"
find "$out/models" -name __pycache__ -prune -exec rm -rf {} +
echo "$out"
