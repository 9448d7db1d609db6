#!/bin/bash
# test_multihost.sh BATON BATON_CLI: baton across three "hosts" over TCP (suite 'netns').
#
# netns.sh makes hosts h1..h3 (10.77.0.1..3 on eth1, namespaces on a bridge). Everything below
# runs inside h1's namespace, through the launcher, with hydra configured only by environment:
#   HYDRA_LAUNCHER=ssh HYDRA_LAUNCHER_EXEC=nswrap.sh (= deploy/baton-hostexec, netns mode)
#   HYDRA_IFACE=eth1, UCX_TLS=tcp,self UCX_NET_DEVICES=eth1 (hydra hands the environment to
#   every rank; without UCX_TLS=tcp,self UCX would use shared memory across the namespaces).
#
# 1. `baton run ... --ranks 3 --hosts 10.77.0.1,10.77.0.2,10.77.0.3`: stdout byte-identical to
#    baton-cli's; rank N ran in the namespace of h(N+1) (rankrec.sh, as BATON_MPIEXEC, records
#    each rank's /proc/self/ns/net); the activations crossed eth1 of h2 and h3.
# 2. `baton serve --ranks 3 --hosts ... --host 10.77.0.1`: /health shows 3 ready ranks; a greedy
#    completion fetched with curl inside h1 from 10.77.0.1 gives baton-cli's text; the live rank
#    processes (pids from the rank-0 log) sit in h1, h2, h3; SIGTERM: exit 0, no rank left.
#
# MPI_Finalize over UCX TCP hangs in about 1 run of 3 after a clean shutdown; transport_mpi.c
# bounds it (5 s) and `baton run` exits with rank 0's reported result. A job still running after
# 20 s fails the test, naming where it is stuck.
#
# Exit 77 (skip) when not root, without `ip netns`, mpiexec, curl or python3.
set -u

baton=${1:?usage: test_multihost.sh BATON BATON_CLI}
cli=${2:?usage: test_multihost.sh BATON BATON_CLI}
here=$(cd "$(dirname "$0")" && pwd)
netns="$here/netns.sh"
shared=${BATON_SHARED:-$here/../../../../shared}
model="$shared/models/stories260K.gguf"
prompt="Once upon a time"
hosts=10.77.0.1,10.77.0.2,10.77.0.3

skip() {
    echo "SKIP: $*"
    exit 77
}
fail() {
    echo "FAIL: $*"
    exit 1
}

[ "$(id -u)" -eq 0 ] || skip "needs root (ip netns)"
command -v ip >/dev/null || skip "iproute2 (ip) is not installed"
command -v mpiexec >/dev/null || skip "mpiexec (mpich) is not installed"
command -v curl >/dev/null || skip "curl is not installed"
command -v python3 >/dev/null || skip "python3 is not installed"
[ -f "$model" ] || skip "no model at $model"
ip netns add "baton-probe-$$" 2>/dev/null || skip "ip netns is not available here"
ip netns delete "baton-probe-$$"

tmp=$(mktemp -d /tmp/baton-multihost.XXXXXX)
serve_pid=
run_pid=
export BATON_NETNS_ID="m$$"
cleanup() {
    if [ -n "$run_pid" ]; then
        kill -KILL "$run_pid" 2>/dev/null # timeout(1); netns.sh down kills the job
        wait "$run_pid" 2>/dev/null
    fi
    if [ -n "$serve_pid" ]; then
        kill -KILL -- "-$serve_pid" 2>/dev/null # setsid: the supervisor's whole group
        wait "$serve_pid" 2>/dev/null
    fi
    "$netns" down # kills by pid whatever is left in this run's namespaces
    rm -rf "$tmp"
}
trap cleanup EXIT
eval "$("$netns" up)" || fail "netns.sh up"
declare -A ns_ino
for i in 1 2 3; do
    ns[i]=$("$netns" ns "h$i")
    ns_ino[$i]=$(stat -L -c %i "/run/netns/${ns[$i]}") || fail "no /run/netns/${ns[$i]}"
done
root_ino=$(stat -L -c %i /proc/self/ns/net)

export HYDRA_LAUNCHER=ssh HYDRA_LAUNCHER_EXEC="$here/nswrap.sh" HYDRA_IFACE=eth1
export UCX_TLS=tcp,self UCX_NET_DEVICES=eth1

eth1_rx() { ip -n "${ns[$1]}" -s link show eth1 | awk 'NR == 4 { print $1 }'; }
eth1_tx() { ip -n "${ns[$1]}" -s link show eth1 | awk 'NR == 6 { print $1 }'; }

timeout -s KILL 30 "$cli" -m "$model" -p "$prompt" -n 60 -c 512 --temp 0 >"$tmp/want" \
    2>"$tmp/cli.err" || { cat "$tmp/cli.err"; fail "baton-cli failed"; }
[ "$(wc -c <"$tmp/want")" -gt 50 ] || fail "baton-cli wrote only $(wc -c <"$tmp/want") bytes"

echo "== 1. baton run --ranks 3 --hosts $hosts (inside h1)"
for i in 1 2 3; do rx0[i]=$(eth1_rx "$i"); tx0[i]=$(eth1_tx "$i"); done
t0=$SECONDS
BATON_MPIEXEC="$here/rankrec.sh" RANKREC_LOG="$tmp/ranks" timeout -s KILL 90 \
    ip netns exec "${ns[1]}" "$baton" run -m "$model" -p "$prompt" -n 60 -c 512 --temp 0 \
    --ranks 3 --hosts "$hosts" >"$tmp/run.out" 2>"$tmp/run.err" &
run_pid=$!
# The job exits within a second or two (6 s when MPI_Finalize hangs); give it 20 s.
while kill -0 "$run_pid" 2>/dev/null && [ $((SECONDS - t0)) -lt 20 ]; do sleep 0.1; done
if kill -0 "$run_pid" 2>/dev/null; then
    echo "--- still running after 20 s:"
    for i in 1 2 3; do
        for p in $(ip netns pids "${ns[$i]}"); do
            echo "h$i pid $p $(cat "/proc/$p/comm" 2>/dev/null)" \
                "in $(cat "/proc/$p/wchan" 2>/dev/null)"
        done
    done
    cat "$tmp/run.err"
    if cmp -s "$tmp/want" "$tmp/run.out" &&
        [ "$(grep -c 'SHUTDOWN from rank 0' "$tmp/run.err")" -eq 2 ]; then
        # MPI_Finalize over UCX TCP hangs in about 1 run of 3 (rank 0 spins in
        # ucp_worker_progress, ranks 1-2 wait in Finalize's PMI barrier; cf. openucx/ucx#8738);
        # transport_mpi.c bounds it to 5 s and baton run takes rank 0's reported result.
        fail "baton run printed the whole (correct) output and the ranks got SHUTDOWN," \
            "but the job does not exit: MPI_Finalize hangs over UCX TCP" \
            "(common/transport_mpi.c mpi_destroy)"
    fi
    fail "baton run over 3 namespaces did not finish within 20 s"
fi
wait "$run_pid"
rc=$?
run_pid=
grep -E 'rank [0-9] on host|pipeline of|generation' "$tmp/run.err"
[ $rc -eq 0 ] || { cat "$tmp/run.err"; fail "baton run over 3 namespaces exited $rc"; }
echo "ok: exit 0 in $((SECONDS - t0)) s"
cmp -s "$tmp/want" "$tmp/run.out" || {
    echo "--- baton-cli:"; cat "$tmp/want"; echo; echo "--- baton run:"; cat "$tmp/run.out"; echo
    fail "baton run --ranks 3 over TCP differs from baton-cli"
}
echo "ok: output byte-identical to baton-cli ($(wc -c <"$tmp/want") bytes)"
grep -q 'pipeline of 3 ranks ready' "$tmp/run.err" || fail "no 3-rank pipeline in the log"

cat "$tmp/ranks"
for r in 0 1 2; do
    got=$(awk -v r="$r" '$1 == "rank=" r { sub("netns=", "", $2); print $2 }' "$tmp/ranks")
    [ -n "$got" ] || fail "rank $r was not recorded"
    [ "$(echo "$got" | wc -l)" -eq 1 ] || fail "rank $r recorded more than once"
    [ "$got" != "$root_ino" ] || fail "rank $r ran in the root namespace"
    [ "$got" = "${ns_ino[$((r + 1))]}" ] ||
        fail "rank $r ran in netns $got, not in h$((r + 1)) (${ns_ino[$((r + 1))]})"
done
echo "ok: ranks 0, 1, 2 ran in h1, h2, h3 (three different namespaces)"

# What eth1 carried: without UCX_TLS=tcp,self only hydra's control traffic and UCX's wireup cross
# it (measured 8.9 KB received on h2); the 60 forwards of 64-float activations alone are 15 KiB
# into each of h2 and h3 (measured 41.8 KB with TCP).
for i in 1 2 3; do
    drx[i]=$(($(eth1_rx "$i") - rx0[i]))
    dtx[i]=$(($(eth1_tx "$i") - tx0[i]))
    echo "h$i eth1: received ${drx[$i]} B, sent ${dtx[$i]} B"
done
for i in 2 3; do
    [ "${drx[$i]}" -ge 24576 ] ||
        fail "h$i eth1 received only ${drx[$i]} B: the activations did not cross it"
    [ "${dtx[$i]}" -ge 8192 ] || fail "h$i eth1 sent only ${dtx[$i]} B"
done
echo "ok: the activations crossed eth1"

echo "== 2. baton serve --ranks 3 --hosts $hosts --host 10.77.0.1 (inside h1)"
port=8080 # h1's own namespace: no other listener there
setsid timeout -s KILL 120 ip netns exec "${ns[1]}" "$baton" serve -m "$model" -c 512 \
    --ranks 3 --hosts "$hosts" --host 10.77.0.1 --port $port --drain-timeout 5 \
    >"$tmp/serve.out" 2>"$tmp/serve.err" &
serve_pid=$!
h1_curl() { ip netns exec "${ns[1]}" curl -sS -m "$@"; }
ready=
deadline=$((SECONDS + 60))
while [ $SECONDS -lt $deadline ] && kill -0 "$serve_pid" 2>/dev/null; do
    h1_curl 2 "http://10.77.0.1:$port/health" >"$tmp/health" 2>/dev/null
    if [ "$(grep -o '"state":"ready"' "$tmp/health" | wc -l)" -eq 3 ]; then
        ready=1
        break
    fi
    sleep 0.2
done
[ -n "$ready" ] ||
    { cat "$tmp/health" "$tmp/serve.err"; fail "/health never showed 3 ready ranks"; }
cat "$tmp/health"
echo
h1_curl 60 "http://10.77.0.1:$port/v1/completions" -H 'Content-Type: application/json' \
    -d "{\"prompt\": \"$prompt\", \"max_tokens\": 60, \"temperature\": 0}" >"$tmp/cmpl.json" ||
    { cat "$tmp/serve.err"; fail "the completion request failed"; }
python3 -c 'import json, sys
sys.stdout.write(json.load(open(sys.argv[1]))["choices"][0]["text"])' \
    "$tmp/cmpl.json" >"$tmp/cmpl.txt" || { cat "$tmp/cmpl.json"; fail "bad completion reply"; }
cmp -s "$tmp/want" "$tmp/cmpl.txt" || {
    cat "$tmp/cmpl.json"; echo; fail "the completion over HTTP differs from baton-cli's text"
}
echo "ok: completion over HTTP from 10.77.0.1 identical to baton-cli's text"

in_ns() { # in_ns PID I: PID lives in h$I
    [ "$(stat -L -c %i "/proc/$1/ns/net" 2>/dev/null)" = "${ns_ino[$2]}" ]
}
server=
for p in $(ip netns pids "${ns[1]}"); do
    [ "$(cat "/proc/$p/comm" 2>/dev/null)" = baton-server ] && server=$p
done
[ -n "$server" ] || fail "no baton-server process in h1"
for r in 1 2; do
    pid=$(sed -n "s/.*rank $r on host [^ ]* (pid \([0-9]*\),.*/\1/p" "$tmp/serve.err" | tail -n 1)
    [ -n "$pid" ] || fail "rank 0 did not log rank $r's pid"
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = baton-rankd ] || fail "pid $pid is not a baton-rankd"
    in_ns "$pid" $((r + 1)) || fail "rank $r (pid $pid) is not in h$((r + 1))"
    rpid[r]=$pid
done
echo "ok: live ranks: baton-server pid $server in h1, baton-rankd ${rpid[1]} in h2," \
    "${rpid[2]} in h3"

kill -TERM "$serve_pid" # timeout hands SIGTERM to the supervisor
deadline=$((SECONDS + 45))
while kill -0 "$serve_pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
kill -0 "$serve_pid" 2>/dev/null && fail "the supervisor did not stop within 45 s of SIGTERM"
wait "$serve_pid"
rc=$?
serve_pid=
[ $rc -eq 0 ] || { tail -n 20 "$tmp/serve.err"; fail "baton serve exited $rc after SIGTERM"; }
for p in "$server" "${rpid[1]}" "${rpid[2]}"; do
    deadline=$((SECONDS + 10))
    while [ -e "/proc/$p" ] && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
    [ -e "/proc/$p" ] && fail "rank process $p outlived the supervisor"
done
[ "$(grep -c 'SHUTDOWN from rank 0' "$tmp/serve.err")" -eq 2 ] || fail "not both ranks got SHUTDOWN"
echo "ok: SIGTERM: exit 0, every rank gone"

echo "PASS"
