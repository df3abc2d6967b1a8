#!/usr/bin/env bash
# Idle resident memory and start-to-ready per repository (README, Performance: memory and start-up). For each
# repository — empty, each model alone, the three together, the three with `enable_mem_arena: "0"` — and each
# build in SERVER_BINS, RUNS times with the builds alternated run by run: start the server, time launch to the
# first 200 from /v2/health/ready, wait SETTLE_SECS (the idle state is what is measured, so this wait is the
# measurement's definition, not a synchronisation), read VmRSS from /proc/PID/status. Prints the medians.
# Models are configured as in benches/protocols.sh (max_batch_size 64, dynamic batching, one instance, one
# intra-op thread), so the warm-up runs at batch 64 as a user's would.
#
#   benches/memory.sh               (`models/generate.py --bench` writes benches/models/{mlp,cnn}; tiny is models/simple)
#
# Environment: SERVER_BINS (target/release/switchyard; several builds, space-separated, to compare), RUNS (3),
# SETTLE_SECS (2), MODELS ("tiny mlp cnn").
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
runs="${RUNS:-3}"
settle="${SETTLE_SECS:-2}"
models="${MODELS:-tiny mlp cnn}"
bash scripts/setup-ort.sh >/dev/null
export ORT_DYLIB_PATH="$root/.ort/lib/libonnxruntime.so"
if [ -z "${SERVER_BINS:-}" ]; then
  cargo build --release --quiet -p switchyard
  bins=target/release/switchyard
else
  bins="$SERVER_BINS"
fi

work="$(mktemp -d)"
pid=""
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
model_dir() { case "$1" in tiny) echo models/simple ;; *) echo "benches/models/$1" ;; esac; }
# add_model REPO MODEL [extra config line]
add_model() {
  local src version
  src="$(model_dir "$2")"
  [ -f "$src/config.pbtxt" ] || { echo "$src is missing: run .venv/bin/python models/generate.py --bench" >&2; exit 1; }
  version="$(find "$src" -mindepth 1 -maxdepth 1 -type d -name '[0-9]*' | sort -V | tail -1)"
  mkdir -p "$1/$2/1"
  cp "$version/model.onnx" "$1/$2/1/"
  { echo "name: \"$2\""; echo "max_batch_size: 64"
    sed -e '/^name:/d' -e '/^max_batch_size/d' -e '/^dynamic_batching/d' -e '/^instance_group/d' \
      -e '/^parameters/d' -e '/^version_policy/d' "$src/config.pbtxt"
    echo "dynamic_batching { max_queue_delay_microseconds: 500 }"
    echo 'instance_group [ { kind: KIND_CPU, count: 1 } ]'
    echo 'parameters { key: "intra_op_thread_count" value: { string_value: "1" } }'
    [ -z "${3:-}" ] || echo "$3"
  } > "$1/$2/config.pbtxt"
}
repos="empty"
mkdir -p "$work/empty"
for m in $models; do
  add_model "$work/$m" "$m"
  repos="$repos $m"
done
mkdir -p "$work/all" "$work/all-no-arena"
for m in $models; do
  add_model "$work/all" "$m"
  add_model "$work/all-no-arena" "$m" 'parameters { key: "enable_mem_arena" value: { string_value: "0" } }'
done
repos="$repos all all-no-arena"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# measure BIN REPO -> "ready_ms rss_kib"
measure() {
  local http grpc metrics t0 t1 rss
  http="$(free_port)"; grpc="$(free_port)"; metrics="$(free_port)"
  t0=$(date +%s%N)
  "$1" --model-repository "$2" --http-address 127.0.0.1 --grpc-address 127.0.0.1 --metrics-address 127.0.0.1 \
    --http-port "$http" --grpc-port "$grpc" --metrics-port "$metrics" --log warn > "$work/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 6000); do
    curl -sf -o /dev/null "127.0.0.1:$http/v2/health/ready" && break
    kill -0 "$pid" 2>/dev/null || { echo "the server exited; see its log:" >&2; cat "$work/server.log" >&2; exit 1; }
    sleep 0.005
  done
  t1=$(date +%s%N)
  curl -sf -o /dev/null "127.0.0.1:$http/v2/health/ready" || { echo "not ready after 30 s" >&2; exit 1; }
  sleep "$settle"
  rss="$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")"
  kill -9 "$pid"; wait "$pid" 2>/dev/null || true; pid=""
  echo "$(( (t1 - t0) / 1000000 )) $rss"
}

printf '%-14s %-40s %10s %14s\n' repository build "ready ms" "idle RSS MiB"
for r in $repos; do
  declare -A ready=() rss=()
  for _ in $(seq 1 "$runs"); do
    for b in $bins; do
      read -r t k < <(measure "$b" "$work/$r")
      ready[$b]="${ready[$b]:-} $t"; rss[$b]="${rss[$b]:-} $k"
    done
  done
  for b in $bins; do
    python3 - "$r" "$b" "${ready[$b]}" "${rss[$b]}" <<'PY'
import statistics, sys
r, b, ready, rss = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split()
print(f"{r:<14} {b:<40} {statistics.median(map(int, ready)):>10.0f} {statistics.median(map(int, rss)) / 1024:>14.1f}")
PY
  done
  unset ready rss
done
