#!/bin/sh
# run_engine_parity.sh MPIEXEC ENGINE_PARITY BATON_RANKD MODEL RANKS: engine_parity.c as rank 0 of
# a RANKS-rank pipeline whose other ranks are baton-rankd, bounded by timeout. Exit 77 (skip)
# without mpiexec. The rankd options match what engine_parity loads with (the handshake checks).
mpiexec=$1 exe=$2 rankd=$3 model=$4 ranks=$5
if ! command -v "$mpiexec" >/dev/null 2>&1; then
    echo "mpiexec not found: skipped"
    exit 77
fi
exec timeout -k 5 120 "$mpiexec" -n 1 "$exe" "$model" : -n $((ranks - 1)) "$rankd" -m "$model" \
    --parallel 3 --ctx-size 128 --prefill-chunk 16 -t 1
