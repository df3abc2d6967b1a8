#!/usr/bin/env bash
# Creates <repo>/.venv with the pinned packages of scripts/requirements-test.txt (Triton clients and perf_analyzer,
# onnx, onnxruntime, numpy, pytest), makes sure Debian's libb64-0d (needed by perf_analyzer) is installed, and
# checks that scripts/perf_analyzer starts. A stamp holding the requirements file's hash skips pip when unchanged.
# Set PYTHON to pick the interpreter that creates the venv (default python3; the pins assume 3.11).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.venv"
reqs="$repo/scripts/requirements-test.txt"
stamp="$venv/.requirements.sha256"

if [ "$(dpkg-query -W -f='${Status}' libb64-0d 2>/dev/null)" != "install ok installed" ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -qq libb64-0d || { $sudo apt-get update -qq && $sudo apt-get install -y -qq libb64-0d; }
fi

want="$(sha256sum "$reqs" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    [ -x "$venv/bin/python" ] || "${PYTHON:-python3}" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$reqs"
    echo "$want" > "$stamp"
fi

# perf_analyzer has no --help option: it prints its usage and exits with status 99, which is what we look for.
usage="$("$repo/scripts/perf_analyzer" --help 2>&1 || true)"
if ! grep -q '^Usage:' <<<"$usage"; then
    echo "setup-python: scripts/perf_analyzer does not start:" >&2
    head -5 <<<"$usage" >&2
    exit 1
fi
echo "$venv"
