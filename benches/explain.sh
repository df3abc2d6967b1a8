#!/usr/bin/env bash
# What explanations cost normal requests, in one run on one machine: `credit` (models/credit) under an open-loop
# load at a fixed rate (`perf --request-rate RATE`, constant gaps, gRPC), with EXPLAINERS loops of back-to-back
# explanation calls (`POST /v2/models/credit/explain`, Shapley at the budget's limit: 16,384 evaluations each)
# against none, rounds alternated on one server so both sides share its warm state. Reports the normal requests'
# p50 and p99 of each round and the ratio of medians (goal: p99 within 1.1x: explanation rows are background work,
# queued behind every request, and each call works at most a tenth of its time), and the explanations finished and
# rows evaluated.
#
#   benches/explain.sh
#
# The server is pinned to SERVER_CPUS, the load generator and the explanation loops to CLIENT_CPUS; each loop is one
# curl process posting 100 calls on one keep-alive connection, so the loops do not fork a process per call.
#
# Environment: RATE (500), EXPLAINERS (1; the server runs 2 at once at most), SECONDS_PER_POINT (5), ROUNDS (3),
# SERVER_CPUS (0), CLIENT_CPUS (1), PROFILE (release; debug reuses a debug build), OUT (target/explain).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
rate="${RATE:-500}"
explainers="${EXPLAINERS:-1}"
secs="${SECONDS_PER_POINT:-5}"
rounds="${ROUNDS:-3}"
profile="${PROFILE:-release}"
server_cpus="${SERVER_CPUS:-0}"
client_cpus="${CLIENT_CPUS:-1}"
out="${OUT:-target/explain}"
mkdir -p "$out"
bash scripts/setup-ort.sh >/dev/null
export ORT_DYLIB_PATH="$root/.ort/lib/libonnxruntime.so"
if [ "$profile" = release ]; then
  cargo build --release --quiet -p switchyard -p switchyard-client --bins
else
  cargo build --quiet -p switchyard -p switchyard-client --bins
fi
bin="target/$profile"
repo="$(mktemp -d)"
pid=""
loops=()
port=19100
stop_loops() { # the loops, then the curl each was running
  for l in "${loops[@]}"; do kill "$l" 2>/dev/null || true; wait "$l" 2>/dev/null || true; done
  loops=()
  pkill -f "curl .*127.0.0.1:$port/v2/models/credit/explain" 2>/dev/null || true
}
cleanup() {
  stop_loops
  [ -n "$pid" ] && kill "$pid" 2>/dev/null
  rm -rf "$repo"
}
trap cleanup EXIT
cp -r models/credit "$repo/"

http="127.0.0.1:$port"
taskset -c "$server_cpus" "$bin/switchyard" --model-repository "$repo" --http-address 127.0.0.1 --grpc-address 127.0.0.1 \
  --metrics-address 127.0.0.1 --http-port $port --grpc-port $((port + 1)) --metrics-port $((port + 2)) \
  --shutdown-drain-secs 0 --log warn >> "$out/server.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do curl -sf "$http/v2/models/credit/ready" >/dev/null && break; sleep 0.1; done
curl -sf "$http/v2/models/credit/ready" >/dev/null || { echo "server did not get ready; see $out/server.log" >&2; exit 1; }

body='{"inputs":[{"name":"features","datatype":"FP32","shape":[1,8],"data":[1.0,0.3,0.8,-0.5,0.2,1.2,0.7,1.0]}],
"parameters":{"method":"shapley","max_evaluations":16384}}'
urls=()
for _ in $(seq 1 100); do urls+=("$http/v2/models/credit/explain"); done
explain_loop() {
  while true; do
    taskset -c "$client_cpus" curl -s -X POST -H 'Content-Type: application/json' -d "$body" "${urls[@]}" >/dev/null
  done
}
counter() { # $1: metric name; the sum of its series
  curl -s "127.0.0.1:$((port + 2))/metrics" | awk -v m="$1" '$1 ~ "^"m"[{ ]" || $1 == m {s += $2} END {print s + 0}'
}
field() { # $1: report file, $2: python expression over r (the first report)
  python3 -c "import json,sys; r=json.load(open(sys.argv[1]))[0]; print($2)" "$1"
}
perf() { # $1: output file
  taskset -c "$client_cpus" "$bin/switchyard-client" --protocol grpc --url "http://127.0.0.1:$((port + 1))" perf -m credit \
    --request-rate "$rate" --warmup-secs 1 --measurement-secs "$secs" --json "$1" >/dev/null
}

declare -A p50=([off]="" [on]="") p99=([off]="" [on]="")
for r in $(seq 1 "$rounds"); do
  for v in off on; do
    if [ "$v" = on ]; then
      for _ in $(seq 1 "$explainers"); do explain_loop & loops+=($!); done
    fi
    before=$(counter switchyard_explanations_total); rows_before=$(counter switchyard_explanation_evaluations_total)
    perf "$out/$v-$r.json"
    done_calls=$(( $(counter switchyard_explanations_total) - before ))
    rows=$(( $(counter switchyard_explanation_evaluations_total) - rows_before ))
    stop_loops
    p50[$v]+="$(field "$out/$v-$r.json" "r['latency_us']['p50']") "
    p99[$v]+="$(field "$out/$v-$r.json" "r['latency_us']['p99']") "
    echo "round $r explanations $v: p50 $(field "$out/$v-$r.json" "r['latency_us']['p50']") us," \
      "p99 $(field "$out/$v-$r.json" "r['latency_us']['p99']") us," \
      "errors $(field "$out/$v-$r.json" "sum(r['errors'].values())"), explanations $done_calls ($rows rows)"
  done
done

python3 - "${p50[off]}" "${p50[on]}" "${p99[off]}" "${p99[on]}" <<'PY'
import statistics, sys
p50_off, p50_on, p99_off, p99_on = [statistics.median(float(x) for x in a.split()) for a in sys.argv[1:5]]
print(f"normal requests: p50 {p50_off:.0f} -> {p50_on:.0f} us ({p50_on / p50_off:.2f}x), "
      f"p99 {p99_off:.0f} -> {p99_on:.0f} us ({p99_on / p99_off:.2f}x)")
PY
