#!/usr/bin/env bash
# Checks the container image without a Docker engine, with the release binaries the image ships:
# tests/interop/test_image.py builds the image's tree with scripts/image-tree.sh (the Dockerfile's build stage),
# applies the runtime stage's RUN lines to a debootstrapped Debian root, and starts the ENTRYPOINT from the stacked
# layers (read-only root, the image's ENV and USER, its own network/mount/PID namespaces), then runs the HEALTHCHECK,
# inferences over both protocols, and a SIGTERM. The test command runs the same test with the debug build.
# Needs root and Debian's mirror (first run ~30 s for debootstrap; cached under .image/).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
bash scripts/setup-system.sh >/dev/null
bash scripts/setup-python.sh >/dev/null
SWITCHYARD_IMAGE_PROFILE="${PROFILE:-release}" exec .venv/bin/python -m pytest tests/interop/test_image.py -v -p no:cacheprovider
