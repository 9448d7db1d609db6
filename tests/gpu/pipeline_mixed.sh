#!/bin/sh
# A 2-rank pipeline, rank 0 (baton-server --oneshot) on cuda:0 and rank 1 (baton-rankd) on the
# CPU, then the other way round; each must print what baton-cli prints on the CPU (greedy,
# stories260K). Activations cross between the ranks over MPI in host memory.
# Usage: pipeline_mixed.sh GPU_PROBE BATON_CLI BATON_SERVER BATON_RANKD (env BATON_SHARED).
# Exit 77 without a CUDA device or without mpiexec.
set -u
probe=$1 cli=$2 server=$3 rankd=$4
model=${BATON_SHARED:-../shared}/models/stories260K.gguf
"$probe" || exit $?
command -v mpiexec > /dev/null || { echo "SKIP: mpiexec not found"; exit 77; }
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
args="-m $model -p 'Once upon a time' -n 100 -c 512 --temp 0 -t 1"
eval "'$cli' $args" > "$tmp/want" 2> "$tmp/cli.err" || { cat "$tmp/cli.err"; exit 1; }
for devs in "cuda:0 cpu" "cpu cuda:0"; do
  set -- $devs
  eval "timeout 120 mpiexec -n 1 '$server' --oneshot $args --device $1 : -n 1 '$rankd' $args --device $2" \
    > "$tmp/out" 2> "$tmp/err"
  rc=$?
  if [ $rc -ne 0 ] || ! cmp -s "$tmp/want" "$tmp/out"; then
    echo "FAIL: rank 0 on $1, rank 1 on $2: exit $rc"
    tail -30 "$tmp/err"
    diff "$tmp/want" "$tmp/out" | head -10
    exit 1
  fi
  echo "ok: rank 0 on $1, rank 1 on $2: output identical to baton-cli on the CPU"
done
