#!/bin/bash
# other_model.sh: gives one rank of a `baton serve` job another model file (test_faults_more.py).
#
#   BATON_MPIEXEC=other_model.sh OTHER_RANK=R OTHER_MODEL=FILE baton serve -m MODEL ...
#       as the launcher's mpiexec: runs the real mpiexec (OTHER_MPIEXEC, default mpiexec) with the
#       same arguments, except that every rank program `.../baton --wrap ...` is started as
#       `other_model.sh --rank .../baton --wrap ...`
#   other_model.sh --rank CMD...
#       on the rank's host: on rank R (hydra's PMI_RANK) the value of `-m` becomes FILE, as if
#       the model file at the same path on that host were another one; then execs CMD (same pid,
#       same environment). Every other rank runs CMD unchanged. With OTHER_HOST=ADDR instead of
#       OTHER_RANK, the ranks on the host whose eth1 has ADDR (a namespace host of netns.sh:
#       test_standby.sh's spare without the model file) get FILE.
#
# `baton serve` gives every rank the same arguments, and the supervisor reruns the same command
# line after a fault, so this holds for every job it starts.
set -u
self=$(readlink -f "$0")

if [ "${1:-}" = --rank ]; then
    shift
    [ -n "${OTHER_RANK:-}${OTHER_HOST:-}" ] || { echo "other_model.sh: set OTHER_RANK or OTHER_HOST" >&2; exit 2; }
    here_addr=
    [ -n "${OTHER_HOST:-}" ] &&
        here_addr=$(ip -4 -o addr show dev eth1 2>/dev/null | awk '{ sub("/.*", "", $4); print $4 }')
    if { [ -n "${OTHER_RANK:-}" ] && [ "${PMI_RANK:-}" = "$OTHER_RANK" ]; } ||
        { [ -n "${OTHER_HOST:-}" ] && [ "$here_addr" = "$OTHER_HOST" ]; }; then
        args=()
        prev=
        for a in "$@"; do
            [ "$prev" = -m ] && a=${OTHER_MODEL:?other_model.sh: OTHER_MODEL is not set}
            args+=("$a")
            prev=$a
        done
        set -- "${args[@]}"
    fi
    exec "$@"
fi

args=()
prev=
for a in "$@"; do
    # the launcher's MPMD sections: -n COUNT /path/baton --wrap [--report] -- BIN ...
    if [ "$a" = --wrap ] && [ "${prev##*/}" = baton ]; then
        unset 'args[${#args[@]}-1]'
        args+=("$self" --rank "$prev")
    fi
    args+=("$a")
    prev=$a
done
exec "${OTHER_MPIEXEC:-mpiexec}" "${args[@]}"
