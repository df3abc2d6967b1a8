#!/usr/bin/env bash
# End-to-end comparison, in one run on one machine: in-process ONNX Runtime (the server's own executor code, no
# server) at batch sizes 1..64, then the server under closed-loop load at concurrency 1..64 with dynamic batching
# on and off, and the ratios. The server and the in-process run get the same budget: one executor with one
# intra-op thread, pinned to SERVER_CPUS; the load generator runs on CLIENT_CPUS.
#
#   benches/compare.sh [MODEL_DIR]        (default benches/models/mlp; `models/generate.py --bench` writes it)
#
# Environment: PROTOCOL (grpc|http, default grpc), CONCURRENCY ("1 8 32 64"), BATCHES ("1 2 4 8 16 32 64"),
# SECONDS per point (5), SERVER_CPUS (0), CLIENT_CPUS (1), OUT (a results folder, default target/compare).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
model_dir="${1:-benches/models/mlp}"
model="$(basename "$model_dir")"
protocol="${PROTOCOL:-grpc}"
concurrency="${CONCURRENCY:-1 8 32 64}"
batches="${BATCHES:-1 2 4 8 16 32 64}"
secs="${SECONDS_PER_POINT:-5}"
server_cpus="${SERVER_CPUS:-0}"
client_cpus="${CLIENT_CPUS:-1}"
out="${OUT:-target/compare}"
mkdir -p "$out"
bash scripts/setup-ort.sh >/dev/null
export ORT_DYLIB_PATH="$root/.ort/lib/libonnxruntime.so"
cargo build --release --quiet -p switchyard -p switchyard-client -p switchyard-benches --bins
bin=target/release

echo "== in-process ONNX Runtime, 1 intra-op thread, cpus $server_cpus"
taskset -c "$server_cpus" "$bin/inproc" --model "$model_dir" --intra-op-threads 1 --seconds "$secs" \
  --batch "$(tr ' ' ',' <<<"$batches")" --json "$out/inproc.json"

port=18700
for variant in batching no-batching; do
  repo="$(mktemp -d)"
  mkdir -p "$repo/$model/1"
  cp "$model_dir"/1/model.onnx "$repo/$model/1/"
  grep -v -e '^dynamic_batching' -e '^instance_group' -e '^parameters' "$model_dir/config.pbtxt" > "$repo/$model/config.pbtxt"
  cat >> "$repo/$model/config.pbtxt" <<CFG
instance_group [ { kind: KIND_CPU, count: 1 } ]
parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
CFG
  [ "$variant" = batching ] && echo 'dynamic_batching { }' >> "$repo/$model/config.pbtxt"
  taskset -c "$server_cpus" "$bin/switchyard" --model-repository "$repo" --http-address 127.0.0.1 \
    --grpc-address 127.0.0.1 --metrics-address 127.0.0.1 --http-port $port --grpc-port $((port + 1)) \
    --metrics-port $((port + 2)) --log warn > "$out/server-$variant.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 300); do curl -sf "127.0.0.1:$port/v2/health/ready" >/dev/null && break; sleep 0.1; done
  url="http://127.0.0.1:$port"; [ "$protocol" = grpc ] && url="http://127.0.0.1:$((port + 1))"
  echo "== server, $variant, $protocol, cpus $server_cpus (load generator on cpus $client_cpus)"
  reports=()
  for c in $concurrency; do
    taskset -c "$client_cpus" "$bin/switchyard-client" --protocol "$protocol" --url "$url" perf -m "$model" \
      --concurrency "$c" --warmup-secs 1 --measurement-secs "$secs" --json "$out/server-$variant-c$c.json" \
      | grep -E '^Concurrency' || true
    reports+=("$out/server-$variant-c$c.json")
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$repo"
  port=$((port + 10))
done

python3 - "$out" "$concurrency" <<'PY'
import json, sys
out, conc = sys.argv[1], sys.argv[2].split()
inproc = {r["batch"]: r for r in json.load(open(f"{out}/inproc.json"))}
def report(variant, c):
    r = json.load(open(f"{out}/server-{variant}-c{c}.json"))
    return r[0] if isinstance(r, list) else r
print(f"\n{'conc':>5} {'in-proc inf/s @batch=conc':>26} {'server inf/s (batching)':>24} {'ratio':>6} "
      f"{'server inf/s (no batching)':>27} {'batching gain':>14} {'p50 us':>8} {'p99 us':>8} {'avg batch':>9}")
for c in conc:
    b = min(inproc, key=lambda k: abs(k - int(c)))
    on, off = report("batching", c), report("no-batching", c)
    srv = on.get("server") or {}
    print(f"{c:>5} {inproc[b]['infer_per_s']:>26.0f} {on['throughput_infer_per_s']:>24.0f} "
          f"{on['throughput_infer_per_s'] / inproc[b]['infer_per_s']:>6.2f} {off['throughput_infer_per_s']:>27.0f} "
          f"{on['throughput_infer_per_s'] / max(off['throughput_infer_per_s'], 1e-9):>14.2f} "
          f"{on['latency_us']['p50']:>8.0f} {on['latency_us']['p99']:>8.0f} {srv.get('avg_batch_size', 0):>9.2f}")
PY
