#!/bin/sh
# Everything a GPU session should run, in one go, printing every figure:
#   1. configure and build with -Dcuda=enabled (build-gpu/), werror on
#   2. the unit suite and the gpu suite (CUDA vs CPU logits, baton-cli parity, mixed pipeline)
#   3. baton-bench on synthetic TinyLlama-1.1B shapes (F16, Q8_0, Q4_0) made by baton-mkmodel:
#      batch-1 decode tokens/s against the HBM bound, batch 8 and 32 throughput, prefill 128;
#      each also on the CPU of that machine for the ratio
# Usage: tests/gpu/run_gpu_checks.sh [BUILD_DIR] (from the repository root; env BATON_SHARED
# defaults to ../shared). Models go to $BATON_GPU_MODELS (default /tmp/baton-gpu-models).
# Exits non-zero on the first failing step; prints "no CUDA device" and exits 77 without a GPU.
set -eu
build=${1:-build-gpu}
export BATON_SHARED=${BATON_SHARED:-$(cd .. && pwd)/shared}
models=${BATON_GPU_MODELS:-/tmp/baton-gpu-models}
jobs=$(nproc 2>/dev/null || echo 2)

echo "== nvidia-smi"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true

echo "== configure + build ($build, -Dcuda=enabled -Dwerror=true)"
[ -d "$build" ] || PATH=/usr/local/cuda/bin:$PATH meson setup "$build" -Dcuda=enabled -Dwerror=true
PATH=/usr/local/cuda/bin:$PATH ninja -C "$build" -j "$jobs"

echo "== device"
set +e
"$build/tests/gpu_probe"
rc=$?
set -e
[ $rc -eq 0 ] || exit $rc

echo "== meson test --suite unit"
meson test -C "$build" --suite unit --print-errorlogs
echo "== meson test --suite gpu (verbose: the figures are in the output)"
meson test -C "$build" --suite gpu --verbose --print-errorlogs

echo "== benchmarks"
mkdir -p "$models"
for t in f16 q8_0 q4_0; do
  m="$models/tinyllama-1.1b-$t.gguf"
  [ -f "$m" ] || "$build/baton-mkmodel" -q -p tinyllama-1.1b -t "$t" -o "$m"
done
for t in f16 q8_0 q4_0; do
  m="$models/tinyllama-1.1b-$t.gguf"
  echo "-- $t on cuda:0 (batch 1 vs the HBM bound; batches 8, 32)"
  "$build/baton-bench" -m "$m" --device cuda:0 -p 128 -n 64 -r 3
  "$build/baton-bench" -m "$m" --device cuda:0 -p 128 -n 64 -r 3 --json
  echo "-- $t on the CPU of this machine ($jobs threads), for the ratio"
  "$build/baton-bench" -m "$m" -t "$jobs" -p 128 -n 16 -r 1 --json
done
echo "== all GPU checks passed"
