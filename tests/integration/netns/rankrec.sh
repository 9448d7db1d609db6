#!/bin/bash
# rankrec.sh: records where each MPI rank of a `baton run` job really ran (test_multihost.sh).
#
#   BATON_MPIEXEC=rankrec.sh RANKREC_LOG=FILE baton run ...
#       as the launcher's mpiexec: runs the real mpiexec (RANKREC_MPIEXEC, default mpiexec) with
#       the same arguments, except that every rank program `.../baton --wrap ...` is started as
#       `rankrec.sh --rank FILE .../baton --wrap ...`
#   rankrec.sh --rank FILE CMD...
#       on the rank's host: appends "rank=R netns=INODE pid=PID" (R from hydra's PMI_RANK, INODE
#       of /proc/self/ns/net) to FILE, then execs CMD (same pid, same environment)
#
# The ranks' own log lines name the host by hostname, which every namespace shares; this gives
# the network namespace of each rank even after the ranks have exited.
set -u
self=$(readlink -f "$0")

if [ "${1:-}" = --rank ]; then
    log=$2
    shift 2
    echo "rank=${PMI_RANK:-?} netns=$(stat -L -c %i /proc/self/ns/net) pid=$$" >>"$log"
    exec "$@"
fi

log=${RANKREC_LOG:?rankrec.sh: RANKREC_LOG is not set}
args=()
prev=
for a in "$@"; do
    # the launcher's MPMD sections: -n COUNT /path/baton --wrap [--report] -- BIN ...
    if [ "$a" = --wrap ] && [ "${prev##*/}" = baton ]; then
        unset 'args[${#args[@]}-1]'
        args+=("$self" --rank "$log" "$prev")
    fi
    args+=("$a")
    prev=$a
done
exec "${RANKREC_MPIEXEC:-mpiexec}" "${args[@]}"
