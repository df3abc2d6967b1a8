#!/usr/bin/env bash
# The batcher's delay rule, in one run on one machine: the same model served three ways on one server each round,
# the way users configure it (max_batch_size 64, one instance, one intra-op thread), under closed-loop load:
#
#   none       no dynamic_batching
#   fixed      dynamic_batching { max_queue_delay_microseconds: DELAY }, parameter dynamic_batching_delay: fixed
#              (Triton's rule: a batch that is not full waits until its oldest request is DELAY old)
#   adaptive   the same, default delay rule (also runs as soon as arrivals pause)
#
# Goals: c=1 p50 with adaptive batching equal to no batching; c=32 throughput with adaptive at least fixed's.
# Rounds alternate the variants; the table gives medians over rounds and the ratios.
#
#   benches/batcher.sh [MODEL_DIR]       (default benches/models/mlp; `models/generate.py --bench` writes it)
#
# Environment: PROTOCOL (grpc|http, default grpc), CONCURRENCY ("1 8 32"), DELAY (500), SECONDS_PER_POINT (5),
# ROUNDS (3), SERVER_CPUS (0), CLIENT_CPUS (1), OUT (target/batcher).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
model_dir="${1:-benches/models/mlp}"
model="$(basename "$model_dir")"
protocol="${PROTOCOL:-grpc}"
concurrency="${CONCURRENCY:-1 8 32}"
delay="${DELAY:-500}"
secs="${SECONDS_PER_POINT:-5}"
rounds="${ROUNDS:-3}"
server_cpus="${SERVER_CPUS:-0}"
client_cpus="${CLIENT_CPUS:-1}"
out="${OUT:-target/batcher}"
mkdir -p "$out"
bash scripts/setup-ort.sh >/dev/null
export ORT_DYLIB_PATH="$root/.ort/lib/libonnxruntime.so"
cargo build --release --quiet -p switchyard -p switchyard-client
bin=target/release

repo="$(mktemp -d)"
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$repo"' EXIT
for variant in none fixed adaptive; do
  name="${model}_$variant"
  mkdir -p "$repo/$name/1"
  cp "$model_dir/1/model.onnx" "$repo/$name/1/"
  grep -v -e '^name' -e '^max_batch_size' -e '^dynamic_batching' -e '^instance_group' -e '^parameters' \
    "$model_dir/config.pbtxt" > "$repo/$name/config.pbtxt"
  cat >> "$repo/$name/config.pbtxt" <<CFG
name: "$name"
max_batch_size: 64
instance_group [ { kind: KIND_CPU, count: 1 } ]
parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
CFG
  case "$variant" in
    fixed) printf 'dynamic_batching { max_queue_delay_microseconds: %s }\nparameters { key: "dynamic_batching_delay" value: { string_value: "fixed" } }\n' "$delay" >> "$repo/$name/config.pbtxt" ;;
    adaptive) printf 'dynamic_batching { max_queue_delay_microseconds: %s }\n' "$delay" >> "$repo/$name/config.pbtxt" ;;
  esac
done

port=18800
taskset -c "$server_cpus" "$bin/switchyard" --model-repository "$repo" --http-address 127.0.0.1 \
  --grpc-address 127.0.0.1 --metrics-address 127.0.0.1 --http-port $port --grpc-port $((port + 1)) \
  --metrics-port $((port + 2)) --shutdown-drain-secs 0 --log warn > "$out/server.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do curl -sf "127.0.0.1:$port/v2/health/ready" >/dev/null && break; sleep 0.1; done
curl -sf "127.0.0.1:$port/v2/health/ready" >/dev/null || { echo "server not ready; see $out/server.log" >&2; exit 1; }
url="http://127.0.0.1:$port"; [ "$protocol" = grpc ] && url="http://127.0.0.1:$((port + 1))"

echo "== $model, $protocol, delay $delay us, server on cpus $server_cpus, load generator on cpus $client_cpus"
for r in $(seq 1 "$rounds"); do
  for c in $concurrency; do
    for variant in none fixed adaptive; do
      taskset -c "$client_cpus" "$bin/switchyard-client" --protocol "$protocol" --url "$url" perf \
        -m "${model}_$variant" --concurrency "$c" --warmup-secs 1 --measurement-secs "$secs" \
        --json "$out/$variant-c$c-r$r.json" >/dev/null
    done
  done
  echo "round $r done"
done
kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""

python3 - "$out" "$concurrency" "$rounds" <<'PY'
import json, statistics, sys
out, conc, rounds = sys.argv[1], sys.argv[2].split(), int(sys.argv[3])
def report(v, c, r):
    x = json.load(open(f"{out}/{v}-c{c}-r{r}.json"))
    return x[0] if isinstance(x, list) else x
def med(v, c, f):
    return statistics.median(f(report(v, c, r)) for r in range(1, rounds + 1))
thr = lambda x: x["throughput_infer_per_s"]
p50 = lambda x: x["latency_us"]["p50"]
p99 = lambda x: x["latency_us"]["p99"]
batch = lambda x: (x.get("server") or {}).get("avg_batch_size", 0)
print(f"\n{'conc':>4} {'variant':>9} {'inf/s':>9} {'p50 us':>8} {'p99 us':>8} {'avg batch':>9}")
for c in conc:
    for v in ("none", "fixed", "adaptive"):
        print(f"{c:>4} {v:>9} {med(v, c, thr):>9.0f} {med(v, c, p50):>8.0f} {med(v, c, p99):>8.0f} {med(v, c, batch):>9.2f}")
for c in conc:
    print(f"c={c}: adaptive/none p50 {med('adaptive', c, p50) / med('none', c, p50):.2f}x, "
          f"adaptive/fixed throughput {med('adaptive', c, thr) / med('fixed', c, thr):.2f}x, "
          f"adaptive/none throughput {med('adaptive', c, thr) / med('none', c, thr):.2f}x")
PY
