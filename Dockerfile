# Multi-stage build. The build stage runs scripts/image-tree.sh: ONNX Runtime (CPU) provisioned from its PyPI wheel as
# scripts/setup-ort.sh does, the release binaries, the example models, laid out as the runtime image's files under /out.
# The runtime stage copies that tree to / and runs the server as a non-root user, with the client as its health check.
# Without a Docker engine, tests/interop/test_image.py (scripts/image-check.sh) builds the same tree, applies this
# runtime stage's RUN lines to a debootstrapped Debian root, and starts the ENTRYPOINT from it with this ENV and USER.
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3-pip unzip && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN bash scripts/image-tree.sh /out

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 switchyard \
 && useradd --system --uid 10001 --gid 10001 --no-create-home switchyard
COPY --from=build /out/ /
ENV SWITCHYARD_ORT_LIBRARY=/opt/switchyard/lib/libonnxruntime.so \
    SWITCHYARD_MODEL_REPOSITORY=/models \
    SWITCHYARD_LOG_FORMAT=json
USER switchyard
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s CMD ["switchyard-client", "--url", "http://127.0.0.1:8000", "ready"]
ENTRYPOINT ["switchyard"]
