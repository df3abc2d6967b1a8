#!/usr/bin/env bash
# What shadow mirroring costs the primary, in one run on one machine. The MLP is served as versions 1 and 2 (the
# same file); rounds alternate a traffic override without a shadow (`{"default": 1}`) and with every request
# mirrored to version 2 (`{"default": 1, "shadow": {"target": 2}}`), on one server, so both sides share its warm
# state.
#
#   (a) spare capacity: open loop (`perf --request-rate RATE`, constant), server on all cores. The primary's p50
#       and p99 with the shadow on against off (goal: within 1.1x: the copy runs after the answer is sent).
#   (b) saturated: server pinned to SERVER_CPUS, client to CLIENT_CPUS, closed loop at CONCURRENCY over gRPC.
#       Primary throughput with the shadow on against off (goal: at least 0.95x: copies are shed first), and the
#       copies the server shed, by reason, from `GET /v2/models/{m}/shadow`.
#
#   benches/shadow.sh [MODEL_DIR]        (default benches/models/mlp; `models/generate.py --bench` writes it)
#
# Environment: RATE (1000), CONCURRENCY (32), SECONDS_PER_POINT (5), ROUNDS (3), SERVER_CPUS (0), CLIENT_CPUS (1),
# OUT (target/shadow).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
model_dir="${1:-benches/models/mlp}"
model="$(basename "$model_dir")"
rate="${RATE:-1000}"
conc="${CONCURRENCY:-32}"
secs="${SECONDS_PER_POINT:-5}"
rounds="${ROUNDS:-3}"
server_cpus="${SERVER_CPUS:-0}"
client_cpus="${CLIENT_CPUS:-1}"
out="${OUT:-target/shadow}"
mkdir -p "$out"
bash scripts/setup-ort.sh >/dev/null
export ORT_DYLIB_PATH="$root/.ort/lib/libonnxruntime.so"
cargo build --release --quiet -p switchyard -p switchyard-client
bin=target/release
repo="$(mktemp -d)"
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$repo"' EXIT
mkdir -p "$repo/$model/1" "$repo/$model/2"
cp "$model_dir/1/model.onnx" "$repo/$model/1/"
cp "$model_dir/1/model.onnx" "$repo/$model/2/"
grep -v '^version_policy' "$model_dir/config.pbtxt" > "$repo/$model/config.pbtxt"
cat >> "$repo/$model/config.pbtxt" <<'CFG'
version_policy: { all { } }
parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
dynamic_batching { }
CFG

port=19000
http="127.0.0.1:$port"
start() { # $@: the taskset prefix, or nothing
  "$@" "$bin/switchyard" --model-repository "$repo" --http-address 127.0.0.1 --grpc-address 127.0.0.1 \
    --metrics-address 127.0.0.1 --http-port $port --grpc-port $((port + 1)) --metrics-port $((port + 2)) \
    --shutdown-drain-secs 0 --log warn >> "$out/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 300); do curl -sf "$http/v2/models/$model/versions/2/ready" >/dev/null && return; sleep 0.1; done
  echo "server did not get ready; see $out/server.log" >&2
  exit 1
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""; }
policy() { # $1: off|on
  local body='{"default": 1}'
  [ "$1" = on ] && body='{"default": 1, "shadow": {"target": 2, "sample_rate": 1.0, "in_flight": 64}}'
  curl -sf -X PUT -H 'Content-Type: application/json' -d "$body" "$http/v2/models/$model/traffic" >/dev/null
}
field() { # $1: report file, $2: python expression over r (the first report)
  python3 -c "import json,sys; r=json.load(open(sys.argv[1]))[0]; print($2)" "$1"
}
perf() { # $1: output file, then the load arguments
  local file="$1"; shift
  taskset -c "$client_cpus" "$bin/switchyard-client" --protocol grpc --url "http://127.0.0.1:$((port + 1))" \
    perf -m "$model" "$@" --warmup-secs 1 --measurement-secs "$secs" --json "$file" >/dev/null
}

echo "== (a) spare capacity: open loop at ${rate} req/s, server unpinned"
start
declare -A p50=([off]="" [on]="") p99=([off]="" [on]="")
for r in $(seq 1 "$rounds"); do
  for v in off on; do
    policy "$v"
    perf "$out/open-$v-$r.json" --request-rate "$rate"
    p50[$v]+="$(field "$out/open-$v-$r.json" "r['latency_us']['p50']") "
    p99[$v]+="$(field "$out/open-$v-$r.json" "r['latency_us']['p99']") "
    echo "round $r shadow $v: p50 $(field "$out/open-$v-$r.json" "r['latency_us']['p50']") us," \
      "p99 $(field "$out/open-$v-$r.json" "r['latency_us']['p99']") us," \
      "errors $(field "$out/open-$v-$r.json" "sum(r['errors'].values())")"
  done
done
curl -sf "$http/v2/models/$model/shadow" > "$out/open-report.json"
stop

echo "== (b) saturated: server on cpu $server_cpus, client on cpu $client_cpus, gRPC concurrency $conc"
start taskset -c "$server_cpus"
declare -A tput=([off]="" [on]="")
for r in $(seq 1 "$rounds"); do
  for v in off on; do
    policy "$v"
    perf "$out/closed-$v-$r.json" --concurrency "$conc"
    tput[$v]+="$(field "$out/closed-$v-$r.json" "r['throughput_infer_per_s']") "
    echo "round $r shadow $v: $(field "$out/closed-$v-$r.json" "round(r['throughput_infer_per_s'])") inf/s," \
      "errors $(field "$out/closed-$v-$r.json" "sum(r['errors'].values())")"
  done
done
curl -sf "$http/v2/models/$model/shadow" > "$out/closed-report.json"
stop

python3 - "${p50[off]}" "${p50[on]}" "${p99[off]}" "${p99[on]}" "${tput[off]}" "${tput[on]}" \
  "$out/open-report.json" "$out/closed-report.json" <<'PY'
import json, statistics, sys
m = [statistics.median(float(x) for x in a.split()) for a in sys.argv[1:7]]
p50_off, p50_on, p99_off, p99_on, t_off, t_on = m
print(f"(a) primary p50 {p50_off:.0f} -> {p50_on:.0f} us ({p50_on / p50_off:.2f}x), "
      f"p99 {p99_off:.0f} -> {p99_on:.0f} us ({p99_on / p99_off:.2f}x)")
print(f"(b) primary throughput {t_off:.0f} -> {t_on:.0f} inf/s ({t_on / t_off:.2f}x)")
for name, path in (("(a)", sys.argv[7]), ("(b)", sys.argv[8])):
    r = json.load(open(path))
    print(f"{name} shadow report (last round): pairs {r['totals']['pairs']} {r['totals']['outcomes']}, "
          f"dropped {r['dropped']}")
PY
