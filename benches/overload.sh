#!/usr/bin/env bash
# Overload: offers RATE requests/s (open loop, Poisson) for SECONDS to a server whose model can do about half of
# that, and records the server's RSS every 5 s. Admitted requests must keep a bounded latency, the rest must get
# the overload error (503 / UNAVAILABLE "exceeds maximum queue size"), and RSS must stay flat.
#
#   benches/overload.sh [MODEL_DIR]      (default benches/models/mlp)
# Environment: RATE (7000), DURATION_SECS (60), QUEUE (128: max_queue_size), MAX_BATCH (4: max_batch_size, which
# keeps the server's capacity within what one client core can offer twice over), SERVER_CPUS (0), CLIENT_CPUS (1),
# OUT. Measure the capacity first with DURATION_SECS=10 and a closed loop, e.g. `perf --concurrency 32`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
model_dir="${1:-benches/models/mlp}"
model="$(basename "$model_dir")"
rate="${RATE:-7000}"
secs="${DURATION_SECS:-60}"
queue="${QUEUE:-128}"
max_batch="${MAX_BATCH:-4}"
out="${OUT:-target/overload}"
mkdir -p "$out"
bash scripts/setup-ort.sh >/dev/null
export ORT_DYLIB_PATH="$root/.ort/lib/libonnxruntime.so"
cargo build --release --quiet -p switchyard -p switchyard-client
repo="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$repo"' EXIT
mkdir -p "$repo/$model/1"
cp "$model_dir/1/model.onnx" "$repo/$model/1/"
grep -v -e '^dynamic_batching' -e '^instance_group' -e '^parameters' "$model_dir/config.pbtxt" \
  | sed "s/^max_batch_size: .*/max_batch_size: $max_batch/" > "$repo/$model/config.pbtxt"
cat >> "$repo/$model/config.pbtxt" <<CFG
instance_group [ { kind: KIND_CPU, count: 1 } ]
parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
dynamic_batching { default_queue_policy { max_queue_size: $queue } }
CFG
port=18900
taskset -c "${SERVER_CPUS:-0}" target/release/switchyard --model-repository "$repo" --http-address 127.0.0.1 \
  --grpc-address 127.0.0.1 --metrics-address 127.0.0.1 --http-port $port --grpc-port $((port + 1)) \
  --metrics-port $((port + 2)) --log warn > "$out/server.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do curl -sf "127.0.0.1:$port/v2/health/ready" >/dev/null && break; sleep 0.1; done
( while kill -0 "$pid" 2>/dev/null; do
    echo "$(date +%s) $(awk '/VmRSS/ {print $2}' /proc/$pid/status)"; sleep 5
  done ) > "$out/rss.txt" &
taskset -c "${CLIENT_CPUS:-1}" target/release/switchyard-client --protocol grpc --url "http://127.0.0.1:$((port + 1))" \
  perf -m "$model" --request-rate "$rate" --distribution poisson --warmup-secs 2 --measurement-secs "$secs" \
  --json "$out/report.json"
echo "RSS (kB) every 5 s:"; awk '{print $2}' "$out/rss.txt" | paste -sd' '
curl -s "127.0.0.1:$((port + 2))/metrics" | grep -E '^switchyard_dropped_requests_total|^switchyard_inference_requests_total' || true
