#!/bin/sh
# Greedy parity of baton-cli on stories260K: --device cuda:0 prints exactly what the CPU prints.
# Usage: cli_parity.sh GPU_PROBE BATON_CLI (env BATON_SHARED). Exit 77 without a CUDA device.
set -u
probe=$1 cli=$2
model=${BATON_SHARED:-../shared}/models/stories260K.gguf
"$probe" || exit $?
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
for kv in f32 f16; do
  args="-m $model -p 'Once upon a time' -n 200 -c 512 --temp 0 --kv-type $kv"
  eval "'$cli' $args --device cpu" > "$tmp/cpu" 2> "$tmp/cpu.err" || { cat "$tmp/cpu.err"; exit 1; }
  eval "'$cli' $args --device cuda:0" > "$tmp/gpu" 2> "$tmp/gpu.err" || { cat "$tmp/gpu.err"; exit 1; }
  if ! cmp -s "$tmp/cpu" "$tmp/gpu"; then
    echo "FAIL: kv $kv: baton-cli --device cuda:0 differs from --device cpu"
    diff "$tmp/cpu" "$tmp/gpu" | head -20
    exit 1
  fi
  echo "ok: kv $kv: greedy output identical ($(wc -c < "$tmp/cpu") bytes)"
done
