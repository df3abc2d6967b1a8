#!/usr/bin/env bash
# The performance issue's table, in one run on one machine: three models configured the way users configure them
# (`max_batch_size: 64`, `dynamic_batching { max_queue_delay_microseconds: DELAY_US }`, one instance, one intra-op
# thread), one row per request, closed loop at concurrency 1, 8 and 32, over HTTP/1.1 JSON with wrk and over gRPC
# (`raw_input_contents`, protobuf built with tritonclient's stubs) with h2load, against in-process ONNX Runtime (the
# server's own executor code) at batch = concurrency. The server is pinned to SERVER_CPUS, the load tools to
# CLIENT_CPUS. Failed requests are read from the server's own counters after each point (gRPC errors ride on HTTP
# 200, which h2load cannot see) and reported; a point with failures is marked.
#
#   benches/protocols.sh            (`models/generate.py --bench` writes benches/models/{mlp,cnn}; tiny is models/simple)
#
# Environment: MODELS ("tiny mlp cnn"), CONCURRENCY ("1 8 32"), PROTOCOLS ("http grpc"), SECONDS_PER_POINT (5),
# DELAY_US (500), BATCHER (adaptive | fixed: Triton's rule), H2_STREAMS (1: one stream per h2load connection, as wrk
# has one request per connection; N: ceil(c/N) connections of N streams), SERVER_CPUS (0), CLIENT_CPUS (1),
# OUT (target/protocols), SERVER_BIN (target/release/switchyard; another build to compare two side by side).
# Needs wrk and h2load (Debian: wrk, nghttp2-client).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
models="${MODELS:-tiny mlp cnn}"
concurrency="${CONCURRENCY:-1 8 32}"
protocols="${PROTOCOLS:-http grpc}"
secs="${SECONDS_PER_POINT:-5}"
delay="${DELAY_US:-500}"
batcher="${BATCHER:-adaptive}"
streams="${H2_STREAMS:-1}"
server_cpus="${SERVER_CPUS:-0}"
client_cpus="${CLIENT_CPUS:-1}"
out="${OUT:-target/protocols}"
for tool in wrk h2load; do
  command -v "$tool" >/dev/null || { echo "$tool is missing (apt-get install wrk nghttp2-client)" >&2; exit 1; }
done
mkdir -p "$out"
rm -f "$out"/*.txt "$out"/*.json "$out"/*.log
bash scripts/setup-ort.sh >/dev/null
export ORT_DYLIB_PATH="$root/.ort/lib/libonnxruntime.so"
cargo build --release --quiet -p switchyard -p switchyard-benches --bins
bin=target/release
py=.venv/bin/python
[ -x "$py" ] || { echo "run scripts/setup-python.sh first (tritonclient builds the gRPC bodies)" >&2; exit 1; }

model_dir() { case "$1" in tiny) echo models/simple ;; *) echo "benches/models/$1" ;; esac; }
repo="$(mktemp -d)"
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$repo"; }
trap cleanup EXIT
for m in $models; do
  src="$(model_dir "$m")"
  [ -f "$src/config.pbtxt" ] || { echo "$src is missing: run .venv/bin/python models/generate.py --bench" >&2; exit 1; }
  version="$(find "$src" -mindepth 1 -maxdepth 1 -type d -name '[0-9]*' | sort -V | tail -1)"
  mkdir -p "$repo/$m/1"
  cp "$version/model.onnx" "$repo/$m/1/"
  # The model's inputs and outputs, renamed, with the issue's batching settings.
  sed -e '/^name:/d' -e '/^max_batch_size/d' -e '/^dynamic_batching/d' -e '/^instance_group/d' -e '/^parameters/d' \
    -e '/^version_policy/d' "$src/config.pbtxt" > "$repo/$m/body.pbtxt"
  { echo "name: \"$m\""; echo "max_batch_size: 64"; cat "$repo/$m/body.pbtxt"
    echo "dynamic_batching { max_queue_delay_microseconds: $delay }"
    echo 'instance_group [ { kind: KIND_CPU, count: 1 } ]'
    echo 'parameters { key: "intra_op_thread_count" value: { string_value: "1" } }'
    echo "parameters { key: \"dynamic_batching_delay\" value: { string_value: \"$batcher\" } }"
  } > "$repo/$m/config.pbtxt"
  rm "$repo/$m/body.pbtxt"
done

echo "== in-process ONNX Runtime, 1 intra-op thread, cpus $server_cpus"
for m in $models; do
  taskset -c "$server_cpus" "$bin/inproc" --model "$repo/$m" --intra-op-threads 1 --seconds "$secs" \
    --batch "$(tr ' ' ',' <<<"$concurrency")" --json "$out/inproc-$m.json" | sed "s/^/$m /"
done

# Request bodies: one row, as JSON (wrk) and as a length-prefixed gRPC message (h2load).
"$py" - "$repo" "$out" $models <<'PY'
import json, re, struct, sys
import numpy as np
from tritonclient.grpc import service_pb2
repo, out, models = sys.argv[1], sys.argv[2], sys.argv[3:]
types = {"TYPE_FP32": ("FP32", np.float32), "TYPE_INT32": ("INT32", np.int32), "TYPE_INT64": ("INT64", np.int64)}
for m in models:
    text = open(f"{repo}/{m}/config.pbtxt").read()
    section = text[text.index("input"):text.index("output")]
    inputs = re.findall(r'name:\s*"([^"]+)"\s*data_type:\s*(\w+)\s*dims:\s*\[([^\]]*)\]', section)
    rng = np.random.default_rng(7)
    js, req = [], service_pb2.ModelInferRequest(model_name=m)
    for name, dt, dims in inputs:
        wire, np_type = types[dt]
        shape = [1] + [int(d) for d in dims.split(",")]
        data = (rng.standard_normal(shape) * 3).astype(np_type)
        js.append({"name": name, "datatype": wire, "shape": shape, "data": data.flatten().tolist()})
        t = req.inputs.add(name=name, datatype=wire)
        t.shape.extend(shape)
        req.raw_input_contents.append(data.tobytes())
    open(f"{out}/body-{m}.json", "w").write(json.dumps({"inputs": js}))
    msg = req.SerializeToString()
    open(f"{out}/body-{m}.grpc", "wb").write(struct.pack(">BI", 0, len(msg)) + msg)
PY

port=18900
taskset -c "$server_cpus" "${SERVER_BIN:-$bin/switchyard}" --model-repository "$repo" --http-address 127.0.0.1 \
  --grpc-address 127.0.0.1 --metrics-address 127.0.0.1 --http-port $port --grpc-port $((port + 1)) \
  --metrics-port $((port + 2)) --log warn > "$out/server.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do curl -sf "127.0.0.1:$port/v2/health/ready" >/dev/null && break; sleep 0.1; done
curl -sf "127.0.0.1:$port/v2/health/ready" >/dev/null || { echo "server did not get ready; see $out/server.log" >&2; exit 1; }
failures() { # $1: model; failed requests so far (Triton's counter, both protocols)
  curl -s "127.0.0.1:$((port + 2))/metrics" | awk -v m="$1" '$1 ~ "^nv_inference_request_failure\\{" && $1 ~ "model=\""m"\"" {s += $2} END {print s + 0}'
}
cat > "$out/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("BODY"), "r"); wrk.body = f:read("*a"); f:close()
LUA

echo "== server, $batcher delay ${delay} us, cpus $server_cpus (wrk and h2load on cpus $client_cpus)"
for m in $models; do
  for proto in $protocols; do
    for c in $concurrency; do
      before=$(failures "$m")
      f="$out/$proto-$m-c$c.txt"
      if [ "$proto" = http ]; then
        BODY="$out/body-$m.json" taskset -c "$client_cpus" wrk -t 1 -c "$c" -d "${secs}s" --latency -s "$out/post.lua" \
          "http://127.0.0.1:$port/v2/models/$m/infer" > "$f"
      else
        conns=$(( (c + streams - 1) / streams )); per=$(( c < streams ? c : streams ))
        taskset -c "$client_cpus" h2load -t 1 -c "$conns" -m "$per" -D "$secs" --warm-up-time 1 \
          -d "$out/body-$m.grpc" -H 'content-type: application/grpc' -H 'te: trailers' \
          --log-file "$out/$proto-$m-c$c.log" \
          "http://127.0.0.1:$((port + 1))/inference.GRPCInferenceService/ModelInfer" > "$f"
      fi
      echo "$(( $(failures "$m") - before ))" > "$out/$proto-$m-c$c.failed"
    done
  done
  # The server's own breakdown of the model's requests (Triton's statistics: queue, compute input/infer/output).
  curl -s "127.0.0.1:$port/v2/models/$m/stats" > "$out/stats-$m.json"
done
kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""

python3 - "$out" "$models" "$concurrency" "$protocols" <<'PY'
import json, re, statistics, sys
out, models, conc, protos = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4].split()
def unit_us(v, u):
    return float(v) * {"us": 1, "ms": 1e3, "s": 1e6}[u]
def wrk(path):
    t = open(path).read()
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
    pct = {p: unit_us(v, u) for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\b", t, re.M)}
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
    return rate, pct.get("50"), pct.get("99"), int(bad.group(1)) if bad else 0
def h2(path, log):
    t = open(path).read()
    rate = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", t).group(1))
    durs = sorted(int(l.split()[2]) for l in open(log) if len(l.split()) == 3)
    q = lambda p: durs[min(len(durs) - 1, int(p * len(durs)))] if durs else None
    ok = re.search(r"status codes: (\d+) 2xx", t)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done", t)
    return rate, q(0.5), q(0.99), (int(done.group(1)) - int(ok.group(1))) if ok and done else 0
fmt = lambda v, f="{:.0f}": "-" if v is None else f.format(v)
print(f"\n| model | c | in-process inf/s (batch c) | protocol | server inf/s | ratio | p50 us | p99 us | failed |")
print("|---|---|---|---|---|---|---|---|---|")
for m in models:
    inproc = {r["batch"]: r for r in json.load(open(f"{out}/inproc-{m}.json"))}
    for c in conc:
        ip = inproc.get(int(c))
        for p in protos:
            base = f"{out}/{p}-{m}-c{c}"
            rate, p50, p99, bad = wrk(base + ".txt") if p == "http" else h2(base + ".txt", base + ".log")
            failed = int(open(base + ".failed").read()) + bad
            ratio = rate / ip["infer_per_s"] if ip else None
            print(f"| {m} | {c} | {fmt(ip and ip['infer_per_s'])} | {p} | {rate:.0f} | {fmt(ratio, '{:.2f}')} | "
                  f"{fmt(p50)} | {fmt(p99)} | {failed}{' (!)' if failed else ''} |")
    print(f"| {m} | 1 | in-process p50 at batch 1: {fmt(inproc.get(1, {}).get('p50_us'), '{:.1f}')} us | | | | | | |")
PY
