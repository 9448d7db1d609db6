#!/bin/bash
# bench_multihost.sh BUILD_DIR [REPS] [TOKENS]: generation tokens/s of a 3-rank `baton run`
# pipeline on stories260K, greedy, -t 1, over
#   shm      one namespace (h1), the default UCX transports (shared memory)
#   tcp-lo   one namespace (h1), UCX_TLS=tcp,self (TCP over loopback)
#   tcp-veth three namespaces h1, h2, h3 (--hosts 10.77.0.1,10.77.0.2,10.77.0.3), UCX_TLS=tcp,self
#            UCX_NET_DEVICES=eth1, launched as in test_multihost.sh
# plus baton-cli (one process) for reference. Prints one markdown row per case: the median, min
# and max of REPS runs (default 5) of TOKENS generated tokens (default 400), from rank 0's
# "generation: N tokens in S s" line. A job still running 15 s after it started (the MPI_Finalize
# hang over TCP, see test_multihost.sh) is counted, its figure kept (the output was complete) and
# its processes killed by pid. Needs root and ip netns.
set -u
build=${1:?usage: bench_multihost.sh BUILD_DIR [REPS] [TOKENS]}
build=$(cd "$build" && pwd)
reps=${2:-5}
tokens=${3:-400}
here=$(cd "$(dirname "$0")" && pwd)
netns="$here/netns.sh"
model=${BATON_SHARED:-$here/../../../../shared}/models/stories260K.gguf
prompt="Once upon a time"
hosts=10.77.0.1,10.77.0.2,10.77.0.3

[ "$(id -u)" -eq 0 ] || { echo "needs root (ip netns)"; exit 77; }
tmp=$(mktemp -d /tmp/baton-mhbench.XXXXXX)
export BATON_NETNS_ID="b$$"
trap '"$netns" down; rm -rf "$tmp"' EXIT
eval "$("$netns" up)" || exit 1
h1=$("$netns" ns h1)
export HYDRA_LAUNCHER=ssh HYDRA_LAUNCHER_EXEC="$here/nswrap.sh" HYDRA_IFACE=eth1

kill_ns_procs() { # everything left in this run's host namespaces, by pid
    local i p
    for i in 1 2 3; do
        for p in $(ip netns pids "$("$netns" ns "h$i")" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
    done
}

# one_run ENV... -- ARGS...: prints the t/s figure of one `baton run` inside h1 ("-" if none)
one_run() {
    local envs=()
    while [ "$1" != -- ]; do envs+=("$1"); shift; done
    shift
    env "${envs[@]}" timeout -s KILL 60 ip netns exec "$h1" "$build/baton" run -m "$model" \
        -p "$prompt" -n "$tokens" -c 512 --temp 0 -t 1 --ranks 3 "$@" >/dev/null 2>"$tmp/err" &
    local pid=$! t0=$SECONDS
    while kill -0 "$pid" 2>/dev/null && [ $((SECONDS - t0)) -lt 15 ]; do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        echo "$*" >>"$tmp/hangs"
        kill -KILL "$pid" 2>/dev/null
        kill_ns_procs
    fi
    wait "$pid" 2>/dev/null
    sed -n 's/.*generation: [0-9]* tokens in [0-9.]* s (\([0-9.]*\) t\/s).*/\1/p' "$tmp/err" |
        tail -n 1 | grep . || echo -
}

row() { # row NAME FIGURES...: median, min, max
    local name=$1
    shift
    printf '%s\n' "$@" | grep -v '^-$' | sort -g | awk -v name="$name" -v n=$# '
        { v[NR] = $1 }
        END {
            if (NR == 0) { printf "| %s | - | - | 0 of %d |\n", name, n; exit }
            med = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            printf "| %s | %.0f | %.0f-%.0f | %d of %d |\n", name, med, v[1], v[NR], NR, n
        }'
}

cli_run() {
    "$build/baton-cli" -m "$model" -p "$prompt" -n "$tokens" -c 512 --temp 0 -t 1 2>&1 >/dev/null |
        sed -n 's/.*generation: [0-9]* tokens in [0-9.]* s (\([0-9.]*\) t\/s).*/\1/p'
}

# The cases take turns, so a change in the machine's load touches all of them alike.
declare -A figs
cases="cli shm tcp-lo tcp-veth"
: >"$tmp/hangs"
for _ in $(seq "$reps"); do
    for case in $cases; do
        case $case in
        cli) f=$(cli_run) ;;
        shm) f=$(one_run A=1 --) ;;
        tcp-lo) f=$(one_run UCX_TLS=tcp,self --) ;;
        tcp-veth) f=$(one_run UCX_TLS=tcp,self UCX_NET_DEVICES=eth1 -- --hosts "$hosts") ;;
        esac
        figs[$case]="${figs[$case]:-} ${f:--}"
    done
done
echo "| case | generation t/s (median) | min-max | runs with a figure |"
echo "|---|---|---|---|"
for case in $cases; do
    # shellcheck disable=SC2086 # (the figures, one word each)
    case $case in
    cli) row "baton-cli, 1 process" ${figs[$case]} ;;
    *) row "3 ranks, $case" ${figs[$case]} ;;
    esac
done
echo "$reps runs of each, $tokens tokens, -t 1; $(grep -c . "$tmp/hangs") TCP jobs hung at exit" \
    "and were killed after their output; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
