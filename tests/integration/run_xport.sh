#!/bin/sh
# run_xport.sh MPIEXEC XPORT_TEST MODE NPROCS [MPIEXEC_FLAG...]: one transport integration case
# under real mpiexec, bounded by timeout (TERM after 60 s, KILL 5 s later). Exit 77 (skip)
# without mpiexec.
mpiexec=$1 exe=$2 mode=$3 n=$4
shift 4
if ! command -v "$mpiexec" >/dev/null 2>&1; then
    echo "mpiexec not found: skipped"
    exit 77
fi
exec timeout -k 5 60 "$mpiexec" "$@" -n "$n" "$exe" "$mode"
