#!/bin/sh
# run_xport.sh MPIEXEC XPORT_TEST MODE NPROCS [MPIEXEC_FLAG...]: one transport integration case
# under real mpiexec, bounded by timeout (TERM after 60 s, KILL 5 s later). Exit 77 (skip)
# without mpiexec.
#
# sigusr1: every process leaves without MPI_Finalize (a peer died), and hydra then reports, in
# about 1 run of 10 on a loaded machine, "Hangup (signal 1)" for a rank that had already said
# "sigusr1 ok" and called _exit(0); so that case is judged by what each surviving rank reports
# (NPROCS - 1 lines "rank K: sigusr1 ok", none FAILED), not by mpiexec's exit status.
mpiexec=$1 exe=$2 mode=$3 n=$4
shift 4
if ! command -v "$mpiexec" >/dev/null 2>&1; then
    echo "mpiexec not found: skipped"
    exit 77
fi
if [ "$mode" != sigusr1 ]; then
    exec timeout -k 5 60 "$mpiexec" "$@" -n "$n" "$exe" "$mode"
fi
out=$(mktemp)
timeout -k 5 60 "$mpiexec" "$@" -n "$n" "$exe" "$mode" >"$out" 2>&1
rc=$?
cat "$out"
ok=$(grep -c '^rank [0-9]*: sigusr1 ok$' "$out")
bad=$(grep -c 'FAILED\|CHECK failed' "$out")
rm -f "$out"
if [ "$ok" -eq $((n - 1)) ] && [ "$bad" -eq 0 ]; then
    [ "$rc" -eq 0 ] || echo "(mpiexec exited $rc after every surviving rank reported ok)"
    exit 0
fi
echo "sigusr1: $ok of $((n - 1)) surviving ranks reported ok, $bad failure line(s), mpiexec $rc"
exit 1
