#!/usr/bin/env bash
# Provisions the ONNX Runtime 1.31.1 CPU shared library into <repo>/.ort/lib/ from the official PyPI wheel
# (hash-pinned in scripts/ort-requirements.txt) and checks the extracted libraries against pinned sha256 sums.
# Does nothing but the checks when the libraries are already in place. Prints the library path at the end.
set -euo pipefail

ORT_VERSION=1.31.1
LIB_SHA256=fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3
SHARED_SHA256=086ec1d5388f64153d9c63470d126693db9a182c8ce236d3a1119068471b8a0d

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
libdir="$repo/.ort/lib"
lib="$libdir/libonnxruntime.so.$ORT_VERSION"
shared="$libdir/libonnxruntime_providers_shared.so"

sums_ok() {
    printf '%s  %s\n%s  %s\n' "$LIB_SHA256" "$lib" "$SHARED_SHA256" "$shared" | sha256sum --check --status 2>/dev/null
}

if ! sums_ok; then
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        --platform manylinux_2_28_x86_64 --python-version 3.11 --implementation cp \
        --require-hashes -r "$repo/scripts/ort-requirements.txt" -d "$tmp"
    unzip -q -o "$tmp"/onnxruntime-"$ORT_VERSION"-*.whl \
        "onnxruntime/capi/libonnxruntime.so.$ORT_VERSION" \
        'onnxruntime/capi/libonnxruntime_providers_shared.so' -d "$tmp"
    mkdir -p "$libdir"
    install -m 0755 "$tmp/onnxruntime/capi/libonnxruntime.so.$ORT_VERSION" \
        "$tmp/onnxruntime/capi/libonnxruntime_providers_shared.so" "$libdir/"
    if ! sums_ok; then
        echo "setup-ort: sha256 mismatch for the libraries in $libdir" >&2
        exit 1
    fi
fi

ln -sfn "libonnxruntime.so.$ORT_VERSION" "$libdir/libonnxruntime.so"
echo "$lib"
