#!/usr/bin/env bash
# Proves the CUDA path end to end on a machine with an NVIDIA GPU:
#   1. a model whose config asks for KIND_GPU loads on CUDA (execution_provider "cuda:0" in its metadata),
#   2. the same model pinned to KIND_CPU loads on CPU,
#   3. both answer the same request, and their outputs agree within 2e-3 (TF32 math on the GPU),
#   4. KIND_GPU without a usable CUDA provider fails the load instead of falling back silently
#      (run with SWITCHYARD_GPU_CHECK_EXPECT_FAIL=1 on a CPU-only machine to see that half).
#
# Needs: the switchyard binary (SWITCHYARD_BIN, default target/release/switchyard), ONNX Runtime's CUDA build on
# ORT_DYLIB_PATH with libonnxruntime_providers_cuda.so and the CUDA/cuDNN libraries on LD_LIBRARY_PATH
# (../shared/gpu/prepare.sh stages them for the device machine), curl and python3.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$here/.." && pwd)"
bin="${SWITCHYARD_BIN:-$repo_root/target/release/switchyard}"
models="${SWITCHYARD_MODELS:-$repo_root/models}"
port="${SWITCHYARD_GPU_CHECK_PORT:-18500}"
work="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT

for kind in GPU CPU; do
  dir="$work/repo/classifier_${kind,,}"
  mkdir -p "$dir/1"
  cp "$models/classifier/1/model.onnx" "$dir/1/"
  sed -e "s/name: \"classifier\"/name: \"classifier_${kind,,}\"/" -e "s/KIND_CPU/KIND_$kind/" \
    "$models/classifier/config.pbtxt" > "$dir/config.pbtxt"
done

"$bin" --model-repository "$work/repo" --http-address 127.0.0.1 --grpc-address 127.0.0.1 \
  --metrics-address 127.0.0.1 --http-port "$port" --grpc-port $((port + 1)) --metrics-port $((port + 2)) \
  --strict-readiness false > "$work/server.log" 2>&1 &
pid=$!
url="http://127.0.0.1:$port"
for _ in $(seq 1 300); do
  curl -sf "$url/v2/health/ready" >/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/server.log"; echo "server exited"; exit 1; }
  sleep 0.1
done
curl -sf "$url/v2/health/ready" >/dev/null || { cat "$work/server.log"; echo "not ready"; exit 1; }

if [ "${SWITCHYARD_GPU_CHECK_EXPECT_FAIL:-0}" = 1 ]; then
  index="$(curl -s -X POST "$url/v2/repository/index")"
  echo "$index"
  python3 - "$index" <<'PY'
import json, sys
gpu = [m for m in json.loads(sys.argv[1]) if m["name"] == "classifier_gpu"]
ok = gpu and gpu[0].get("state") == "UNAVAILABLE" and "CUDA" in gpu[0].get("reason", "")
print("OK: KIND_GPU without CUDA fails the load" if ok else "FAIL: KIND_GPU did not fail without CUDA")
sys.exit(0 if ok else 1)
PY
  exit $?
fi

echo "== metadata"
gpu_meta="$(curl -sf "$url/v2/models/classifier_gpu")" || { cat "$work/server.log"; exit 1; }
cpu_meta="$(curl -sf "$url/v2/models/classifier_cpu")"
echo "$gpu_meta"
grep -q '"execution_provider":"cuda:0"' <<<"$gpu_meta" || { echo "FAIL: not on CUDA"; cat "$work/server.log"; exit 1; }
grep -q '"execution_provider":"cpu"' <<<"$cpu_meta" || { echo "FAIL: CPU model not on CPU"; exit 1; }

echo "== inference, GPU vs CPU"
body="$(python3 -c 'import json,random; random.seed(1); print(json.dumps({"inputs":[{"name":"features","shape":[8,16],"datatype":"FP32","data":[random.uniform(-2,2) for _ in range(128)]}]}))')"
gpu_out="$(curl -sf -X POST "$url/v2/models/classifier_gpu/infer" -d "$body")"
cpu_out="$(curl -sf -X POST "$url/v2/models/classifier_cpu/infer" -d "$body")"
python3 - "$gpu_out" "$cpu_out" <<'PY'
import json, sys
g = json.loads(sys.argv[1])["outputs"][0]["data"]
c = json.loads(sys.argv[2])["outputs"][0]["data"]
diff = max(abs(a - b) for a, b in zip(g, c))
print(f"max |gpu - cpu| = {diff:.2e} over {len(g)} values")
sys.exit(0 if len(g) == len(c) == 32 and diff <= 2e-3 else 1)
PY
echo "== statistics (GPU model)"
curl -sf "$url/v2/models/classifier_gpu/stats"; echo
echo "OK: CUDA path works end to end"
