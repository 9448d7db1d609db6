#!/bin/bash
# test_netns.sh PROBE: multi-host MPI over network namespaces (suite 'netns').
#
# 1. hydra's ssh launcher with tests/integration/netns/nswrap.sh (= deploy/baton-hostexec, netns
#    mode): the three ranks of PROBE (netns_probe) must run in three namespaces, each with its
#    own 10.77.0.N, on TCP (4 MiB ring seen on eth1), allreduce right.
# 2. The compose path: deploy/baton-node rank (agent) in h2, h3 and deploy/baton-node launch in
#    h1 (BATON_HOSTEXEC=tcp): same checks; a wrong token is refused; killing the launcher's
#    process group ends the remote ranks.
# 3. netns.sh linkdown/linkup and drop/undrop really cut and heal h2's traffic.
#
# Exit 77 (skip) when not root, without `ip netns`, mpiexec, socat or nft.
set -u

probe=${1:?usage: test_netns.sh PROBE}
here=$(cd "$(dirname "$0")" && pwd)
deploy=$(cd "$here/../../../deploy" && pwd)
netns="$here/netns.sh"

# shellcheck source=common.sh
. "$here/common.sh"
need_netns socat "socat is not installed (Debian package socat)" \
    nft "nft is not installed (Debian package nftables)"

tmp=$(mktemp -d /tmp/baton-netns-test.XXXXXX)
bg_pids=()
export BATON_NETNS_ID="t$$"
cleanup() {
    for p in "${bg_pids[@]}"; do
        kill -KILL "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    "$netns" down
    rm -rf "$tmp"
}
trap cleanup EXIT
eval "$("$netns" up)" || fail "netns.sh up"
h1=$("$netns" ns h1)
h2=$("$netns" ns h2)
h3=$("$netns" ns h3)
hosts=10.77.0.1,10.77.0.2,10.77.0.3
root_netns=$(stat -L -c %i /proc/self/ns/net)

# check_probe OUT: the probe's report shows 3 ranks in 3 namespaces talking over eth1.
check_probe() {
    awk -v root="$root_netns" '
        /^rank=/ {
            for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
            n++
            if (addr[f["addr"]]++) { print "duplicate address " f["addr"]; bad = 1 }
            if (ns[f["netns"]]++) { print "two ranks share netns " f["netns"]; bad = 1 }
            if (f["netns"] == root) { print "rank " f["rank"] " runs in the root namespace"; bad = 1 }
            if (f["local"] != 1) { print "rank " f["rank"] " shares memory with " f["local"]; bad = 1 }
            if (f["rx"] < 4194304) { print "rank " f["rank"] " eth1 received only " f["rx"]; bad = 1 }
            if (f["ring"] != "ok") { print "rank " f["rank"] " ring payload corrupt"; bad = 1 }
        }
        /^size=/ { sum = $0 }
        END {
            if (n != 3) { print "expected 3 ranks, got " n; bad = 1 }
            for (i = 1; i <= 3; i++) if (!addr["10.77.0." i]) { print "no rank on 10.77.0." i; bad = 1 }
            if (sum != "size=3 allreduce=6 expected=6") { print "bad allreduce: " sum; bad = 1 }
            exit bad
        }' "$1"
}

echo "== 1. launcher-exec nswrap.sh (ip netns exec)"
timeout -s KILL 60 ip netns exec "$h1" mpiexec -launcher ssh -launcher-exec "$here/nswrap.sh" \
    -iface eth1 -hosts "$hosts" -n 3 -genv UCX_TLS tcp,self -genv UCX_NET_DEVICES eth1 \
    "$probe" eth1 >"$tmp/p1.out" 2>"$tmp/p1.err"
rc=$?
cat "$tmp/p1.out"
[ $rc -eq 0 ] || { cat "$tmp/p1.err"; fail "mpiexec through nswrap.sh exited $rc"; }
check_probe "$tmp/p1.out" || fail "nswrap.sh run"

echo "== 2. baton-node agents (the docker-compose path)"
export BATON_CLUSTER_TOKEN="tok-$$-$RANDOM"
for ns in "$h2" "$h3"; do
    ip netns exec "$ns" "$deploy/baton-node" rank >>"$tmp/agents.log" 2>&1 &
    bg_pids+=("$!")
done
# node_launch OUT ERR PROBE-ARGS...: baton-node launch in h1; run it in a subshell (it execs),
# which then leads its own process group.
node_launch() {
    local out=$1 err=$2
    shift 2
    exec setsid timeout -s KILL 60 ip netns exec "$h1" env BATON_IFACE=eth1 BATON_HOSTS="$hosts" \
        BATON_WAIT_S=20 "$deploy/baton-node" launch mpiexec -hosts "$hosts" -n 3 "$probe" "$@" \
        >"$out" 2>"$err"
}
(node_launch "$tmp/p2.out" "$tmp/p2.err" eth1)
rc=$?
cat "$tmp/p2.out"
[ $rc -eq 0 ] || { cat "$tmp/p2.err" "$tmp/agents.log"; fail "baton-node launch exited $rc"; }
check_probe "$tmp/p2.out" || fail "baton-node run"

echo "-- wrong token"
(BATON_CLUSTER_TOKEN=wrong node_launch "$tmp/p3.out" "$tmp/p3.err" eth1)
rc=$?
if [ $rc -eq 0 ] || [ $rc -eq 137 ]; then
    fail "a launch with the wrong token did not fail at once (rc=$rc)"
fi
grep -q '^rank=' "$tmp/p3.out" && fail "ranks ran with the wrong token"
grep -q 'wrong cluster token' "$tmp/p3.err" || { cat "$tmp/p3.err"; fail "no 'wrong cluster token' message"; }
echo "refused (mpiexec rc=$rc)"

echo "-- killing the launcher ends the remote ranks"
probes_in() { # number of netns_probe processes in namespace $1
    local n=0 p
    for p in $(ip netns pids "$1" 2>/dev/null); do
        [ "$(cat "/proc/$p/comm" 2>/dev/null)" = netns_probe ] && n=$((n + 1))
    done
    echo $n
}
node_launch "$tmp/p4.out" "$tmp/p4.err" eth1 120 &
launch_pid=$!
bg_pids+=("$launch_pid")
deadline=$((SECONDS + 30))
until grep -q '^holding' "$tmp/p4.out" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { cat "$tmp/p4.err"; fail "the holding job did not start"; }
    kill -0 $launch_pid 2>/dev/null || { cat "$tmp/p4.err"; fail "the holding job ended early"; }
    sleep 0.2
done
if [ "$(probes_in "$h2")" -ne 1 ] || [ "$(probes_in "$h3")" -ne 1 ]; then
    fail "ranks not found in h2/h3"
fi
kill -KILL -- "-$launch_pid" # setsid made it a group leader: mpiexec and its launchers
wait "$launch_pid" 2>/dev/null
deadline=$((SECONDS + 15))
until [ "$(probes_in "$h2")" -eq 0 ] && [ "$(probes_in "$h3")" -eq 0 ]; do
    [ $SECONDS -lt $deadline ] || fail "ranks in h2/h3 outlived their launcher by 15 s"
    sleep 0.2
done
echo "remote ranks gone $((SECONDS - deadline + 15)) s after the kill"

echo "== 3. fault helpers"
ip netns exec "$h2" socat TCP-LISTEN:7001,reuseaddr,fork EXEC:cat >/dev/null 2>&1 &
bg_pids+=("$!")
reach() { # h1 -> h2:7001 echo within 1.5 s
    # shellcheck disable=SC2016 # (expanded by the inner bash)
    ip netns exec "$h1" timeout 1.5 bash -c '
        exec 3<>/dev/tcp/10.77.0.2/7001 && echo ping >&3 && IFS= read -r l <&3 && [ "$l" = ping ]' \
        2>/dev/null
}
reach_within() { # reach_within SECONDS: h2 answers again
    local deadline=$((SECONDS + $1))
    until reach; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.2
    done
}
reach_within 10 || fail "h2's echo server does not answer"
"$netns" linkdown h2 0 || fail "linkdown"
ip -n "$h2" link show eth1 | grep -q 'state DOWN' || fail "eth1 of h2 is not down"
reach && fail "h2 answers with its link down"
"$netns" linkup h2 || fail "linkup"
reach_within 10 || fail "h2 does not answer after linkup"
"$netns" linkdown h2 1 || fail "linkdown h2 1"
ip -n "$h2" link show eth1 | grep -q 'state DOWN' && fail "linkdown h2 1 left eth1 down"
reach_within 10 || fail "h2 does not answer after a 1 s link cut"
echo "linkdown/linkup ok"
"$netns" drop h2 0 || fail "drop"
ip netns exec "$h2" nft list table inet baton_fault >/dev/null || fail "no nftables table in h2"
ip -n "$h2" link show eth1 | grep -q 'state UP' || fail "drop took the link down"
reach && fail "h2 answers while its traffic is dropped"
"$netns" undrop h2 || fail "undrop"
reach_within 10 || fail "h2 does not answer after undrop"
"$netns" drop h2 1 || fail "drop h2 1"
ip netns exec "$h2" nft list table inet baton_fault >/dev/null 2>&1 && fail "drop h2 1 left the drop"
reach_within 10 || fail "h2 does not answer after a 1 s drop"
echo "drop/undrop ok"

echo "PASS"
