# Multi-stage build: the build stage provisions ONNX Runtime (CPU) from its PyPI wheel and builds the release
# binaries; the runtime stage carries the server, the client (used for the health check), the ONNX Runtime
# library and the example models, and runs as a non-root user.
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3-pip unzip && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN bash scripts/setup-ort.sh \
 && cargo build --release -p switchyard -p switchyard-client \
 && mkdir -p /out/lib \
 && cp target/release/switchyard target/release/switchyard-client /out/ \
 && cp -L .ort/lib/libonnxruntime.so /out/lib/libonnxruntime.so \
 && cp .ort/lib/libonnxruntime_providers_shared.so /out/lib/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home switchyard
COPY --from=build /out/switchyard /out/switchyard-client /usr/local/bin/
COPY --from=build /out/lib/ /opt/switchyard/lib/
COPY models/ /models/
ENV SWITCHYARD_ORT_LIBRARY=/opt/switchyard/lib/libonnxruntime.so \
    SWITCHYARD_MODEL_REPOSITORY=/models \
    SWITCHYARD_LOG_FORMAT=json
USER switchyard
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s CMD ["switchyard-client", "--url", "http://127.0.0.1:8000", "ready"]
ENTRYPOINT ["switchyard"]
