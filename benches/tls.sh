#!/usr/bin/env bash
# The cost of TLS, in one run on one machine: gRPC closed-loop throughput on the MLP at concurrency 32 with
# plaintext and with TLS (alternating rounds, medians and the ratio), then the TLS handshake rate (`openssl
# s_time`, new sessions per second, no resumption). Certificates are made by the script in a temporary folder.
#
#   benches/tls.sh [MODEL_DIR]        (default benches/models/mlp; `models/generate.py --bench` writes it)
#
# Environment: CONCURRENCY (32), SECONDS_PER_POINT (5), ROUNDS (3), SERVER_CPUS (0), CLIENT_CPUS (1),
# OUT (target/tls).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
model_dir="${1:-benches/models/mlp}"
model="$(basename "$model_dir")"
conc="${CONCURRENCY:-32}"
secs="${SECONDS_PER_POINT:-5}"
rounds="${ROUNDS:-3}"
server_cpus="${SERVER_CPUS:-0}"
client_cpus="${CLIENT_CPUS:-1}"
out="${OUT:-target/tls}"
mkdir -p "$out"
bash scripts/setup-ort.sh >/dev/null
export ORT_DYLIB_PATH="$root/.ort/lib/libonnxruntime.so"
cargo build --release --quiet -p switchyard -p switchyard-client
bin=target/release
pki="$(mktemp -d)"
trap 'rm -rf "$pki"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=bench-ca \
  -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > "$pki/ext"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
  -keyout "$pki/server.key" -out "$pki/server.csr" 2>/dev/null
openssl x509 -req -in "$pki/server.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial -days 1 \
  -extfile "$pki/ext" -out "$pki/server.crt" 2>/dev/null

port=18800
start() { # $1: plain|tls
  local extra=()
  [ "$1" = tls ] && extra=(--grpc-use-ssl --grpc-server-cert "$pki/server.crt" --grpc-server-key "$pki/server.key")
  taskset -c "$server_cpus" "$bin/switchyard" --model-repository "$(dirname "$model_dir")" --load-model "$model" \
    --model-control-mode explicit --http-address 127.0.0.1 --grpc-address 127.0.0.1 --metrics-address 127.0.0.1 \
    --http-port $port --grpc-port $((port + 1)) --metrics-port $((port + 2)) --shutdown-drain-secs 0 \
    --log warn "${extra[@]}" > "$out/server-$1.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 300); do curl -sf "127.0.0.1:$port/v2/health/ready" >/dev/null && break; sleep 0.1; done
}
declare -A results=([plain]="" [tls]="")
for r in $(seq 1 "$rounds"); do
  for variant in plain tls; do
    start "$variant"
    url="http://127.0.0.1:$((port + 1))"; tls=()
    [ "$variant" = tls ] && { url="https://127.0.0.1:$((port + 1))"; tls=(--ca-file "$pki/ca.crt"); }
    taskset -c "$client_cpus" "$bin/switchyard-client" --protocol grpc --url "$url" "${tls[@]}" perf -m "$model" \
      --concurrency "$conc" --warmup-secs 1 --measurement-secs "$secs" --json "$out/$variant-$r.json" >/dev/null
    tput=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[0]['throughput_infer_per_s'])" "$out/$variant-$r.json")
    results[$variant]+="$tput "
    echo "round $r $variant: $tput inf/s"
    if [ "$variant" = tls ] && [ "$r" = 1 ]; then
      hs=$(taskset -c "$client_cpus" openssl s_time -connect "127.0.0.1:$((port + 1))" -new -time 5 2>/dev/null \
        | grep -oE '[0-9.]+ connections/user sec' | head -1 || true)
      echo "TLS handshakes (openssl s_time -new, 5 s): ${hs:-n/a}"
    fi
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
python3 - "${results[plain]}" "${results[tls]}" <<'PY'
import statistics, sys
plain = [float(x) for x in sys.argv[1].split()]
tls = [float(x) for x in sys.argv[2].split()]
p, t = statistics.median(plain), statistics.median(tls)
print(f"median plaintext {p:.0f} inf/s, TLS {t:.0f} inf/s, TLS/plaintext {t / p:.2f}")
PY
