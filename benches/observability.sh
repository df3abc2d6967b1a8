#!/usr/bin/env bash
# Cost of observability, in one run on one machine: the server under closed-loop load at one concurrency with
# metrics and the prediction log (sampling 1.0, inputs and outputs, JSONL file) ON, against both OFF
# (--allow-metrics false, no log), alternating the two variants ROUNDS times so drift of a shared machine hits
# both alike. Reports throughput and p99 of each round and the ratio of medians (target: >= 0.95).
#
#   benches/observability.sh [MODEL_DIR]      (default benches/models/mlp; `models/generate.py --bench` writes it)
#
# VARIANTS (default "off on"): off = --allow-metrics false and no log; on = metrics + log with payloads (sink
# threads at the lowest priority, the default); full = the same with --prediction-log-low-priority false;
# metrics = metrics only; log = log with payloads, no metrics; meta = metrics + log without payloads;
# quality = metrics + live quality and fairness (every request's predictions kept in a feedback store file, its
# group counted; QUALITY_ATTRIBUTE, default input:x[0], and favourable class 0): compare it with `metrics`.
# Environment: PROTOCOL (grpc|http, default grpc), CONCURRENCY (32), SECONDS_PER_POINT (8), ROUNDS (3),
# SERVER_CPUS (0), CLIENT_CPUS (1), OUT (default target/observability).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
model_dir="${1:-benches/models/mlp}"
model="$(basename "$model_dir")"
protocol="${PROTOCOL:-grpc}"
conc="${CONCURRENCY:-32}"
secs="${SECONDS_PER_POINT:-8}"
rounds="${ROUNDS:-3}"
server_cpus="${SERVER_CPUS:-0}"
client_cpus="${CLIENT_CPUS:-1}"
out="${OUT:-target/observability}"
mkdir -p "$out"
bash scripts/setup-ort.sh >/dev/null
export ORT_DYLIB_PATH="$root/.ort/lib/libonnxruntime.so"
cargo build --release --quiet -p switchyard -p switchyard-client --bins
bin=target/release

port=18800
run() { # variant round
  local variant=$1 round=$2 repo logdir extra=()
  repo="$(mktemp -d)"; logdir="$(mktemp -d)"
  mkdir -p "$repo/$model/1"
  cp "$model_dir"/1/model.onnx "$repo/$model/1/"
  grep -v -e '^dynamic_batching' -e '^instance_group' -e '^parameters' "$model_dir/config.pbtxt" > "$repo/$model/config.pbtxt"
  cat >> "$repo/$model/config.pbtxt" <<CFG
dynamic_batching { }
instance_group [ { kind: KIND_CPU, count: 1 } ]
parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
CFG
  case "$variant" in
    on) extra=(--prediction-log-dir "$logdir") ;;
    full) extra=(--prediction-log-dir "$logdir" --prediction-log-low-priority false) ;;
    log) extra=(--prediction-log-dir "$logdir" --allow-metrics false) ;;
    meta) extra=(--prediction-log-dir "$logdir") ;;
    metrics) extra=() ;;
    quality) extra=(--feedback-store "$logdir/feedback.redb") ;;
    off) extra=(--allow-metrics false) ;;
  esac
  if [ "$variant" = on ] || [ "$variant" = full ] || [ "$variant" = log ] || [ "$variant" = meta ]; then
    echo 'parameters { key: "prediction_log.sample_rate" value: { string_value: "1.0" } }' >> "$repo/$model/config.pbtxt"
  fi
  if [ "$variant" = quality ]; then
    cat >> "$repo/$model/config.pbtxt" <<CFG
parameters { key: "quality.min_accuracy" value: { string_value: "0.5" } }
parameters { key: "fairness.attribute" value: { string_value: "${QUALITY_ATTRIBUTE:-input:x[0]}" } }
parameters { key: "fairness.favourable_class" value: { string_value: "0" } }
CFG
  fi
  if [ "$variant" = meta ]; then
    echo 'parameters { key: "prediction_log.payloads" value: { string_value: "false" } }' >> "$repo/$model/config.pbtxt"
  fi
  taskset -c "$server_cpus" "$bin/switchyard" --model-repository "$repo" --http-address 127.0.0.1 \
    --grpc-address 127.0.0.1 --metrics-address 127.0.0.1 --http-port $port --grpc-port $((port + 1)) \
    --metrics-port $((port + 2)) --log warn "${extra[@]}" > "$out/server-$variant-$round.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 300); do curl -sf "127.0.0.1:$port/v2/health/ready" >/dev/null && break; sleep 0.1; done
  local url="http://127.0.0.1:$port"; [ "$protocol" = grpc ] && url="http://127.0.0.1:$((port + 1))"
  taskset -c "$client_cpus" "$bin/switchyard-client" --protocol "$protocol" --url "$url" perf -m "$model" \
    --concurrency "$conc" --warmup-secs 2 --measurement-secs "$secs" --json "$out/$variant-$round.json" >/dev/null
  # CPU time of the server process per inference (less sensitive to a noisy neighbour than throughput).
  awk '{print $14 + $15}' "/proc/$pid/stat" > "$out/$variant-$round.ticks"
  curl -s "127.0.0.1:$port/v2/models/$model/stats" > "$out/$variant-$round.stats.json"
  if [ "$variant" = on ] || [ "$variant" = full ]; then
    curl -s "127.0.0.1:$((port + 2))/metrics" | grep -E '^switchyard_prediction_log_(records|dropped)_total' \
      > "$out/$variant-$round.predlog.txt" || true
    du -sb "$logdir" | cut -f1 > "$out/$variant-$round.logbytes"
  fi
  if [ "$variant" = quality ]; then
    curl -s "127.0.0.1:$((port + 2))/metrics" | grep -E '^switchyard_(feedback_store_records|quality_dropped_total)' \
      > "$out/$variant-$round.quality.txt" || true
  fi
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$repo" "$logdir"
  port=$((port + 10))
}
variants="${VARIANTS:-off on}"
for r in $(seq 1 "$rounds"); do
  for v in $variants; do run "$v" "$r"; done
done

python3 - "$out" "$rounds" "$variants" <<'PY'
import json, statistics, sys
out, rounds, variants = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()
def load(v, r):
    j = json.load(open(f"{out}/{v}-{r}.json"))
    return j[0] if isinstance(j, list) else j
rows = {v: [load(v, r) for r in range(1, rounds + 1)] for v in variants}
for r in range(rounds):
    cells = [f"{v} {rows[v][r]['throughput_infer_per_s']:.0f} inf/s (p99 {rows[v][r]['latency_us']['p99']:.0f} us)"
             for v in variants]
    print(f"round {r + 1}: " + ", ".join(cells))
    for v in ("on", "full"):
        if v in variants:
            print(f"   prediction log ({v}): " + " ".join(open(f"{out}/{v}-{r + 1}.predlog.txt").read().split()))
    if "quality" in variants:
        print("   quality: " + " ".join(open(f"{out}/quality-{r + 1}.quality.txt").read().split()))
import os
hz = os.sysconf("SC_CLK_TCK")
def cpu_us(v, r):
    ticks = float(open(f"{out}/{v}-{r}.ticks").read())
    count = json.load(open(f"{out}/{v}-{r}.stats.json"))["model_stats"][0]["inference_count"]
    return ticks / hz * 1e6 / max(int(count), 1)
cpu = {v: statistics.median(cpu_us(v, r) for r in range(1, rounds + 1)) for v in variants}
print("median server CPU per inference: " + ", ".join(f"{v} {cpu[v]:.1f} us" for v in variants))
for v in variants:
    if v != "off" and "off" in cpu:
        print(f"{v}: CPU per inference x{cpu[v] / cpu['off']:.3f} -> throughput-equivalent {cpu['off'] / cpu[v]:.3f} of off")
med = {v: statistics.median(x["throughput_infer_per_s"] for x in rows[v]) for v in variants}
print("median throughput: " + ", ".join(f"{v} {med[v]:.0f} inf/s" for v in variants))
for v in variants:
    if v != "off" and "off" in med:
        print(f"{v}/off = {med[v] / med['off']:.3f}")
if "quality" in med and "metrics" in med:
    print(f"quality/metrics = {med['quality'] / med['metrics']:.3f}")
PY
