#!/bin/bash
# test_standby.sh BATON BATON_CLI: a host that stays down (suite 'netns'; docs/faults.md, "A host
# that stays down").
#
# netns.sh makes hosts h1..h4 (10.77.0.1..4); `baton serve --ranks 3 --hosts h1,h2,h3` runs in
# h1 with hydra configured by environment as in test_multihost.sh, short fault bounds
# (--heartbeat-interval 0.25 --heartbeat-misses 4 --step-timeout 2 --launch-timeout 3: a probe
# takes at most 1.5 s) and --readmit-interval 3; curl runs inside h1.
#
# A. with --spare-hosts h4 (and --on-evict writing its environment to a file):
#  1. kill -9 of rank 2 (h3) once: the service is back on h1, h2, h3 with baton-cli's text, one
#     failure charged to h3, nobody evicted, /health "ok" with no host evicted.
#  2. h2's link down for good: h2 is charged three times (a fault, then two starts that do not
#     come up: its probe fails) and evicted; the service answers again on h1, h4, h3 (the rank
#     processes sit in those namespaces) within evict-after x (launch-timeout + backoff) + the
#     start, with baton-cli's text (greedy output identical to before); /health 200 "degraded"
#     with h2 evicted and no spare left, /metrics' host gauges 3/1/0, one eviction error line,
#     --on-evict ran with BATON_EVICTED_HOST=10.77.0.2.
#  3. h2's link back while two clients send requests one after another (plain and streaming):
#     after the readmission interval h2 is back in service (h1, h2, h3; h4 a spare again, nothing
#     evicted, status "ok"), through a restart at an idle moment; no request failed.
# B. without a spare:
#  4. h2's link down for good: the service answers on h1 and h3 with the layers re-split (2 ranks
#     covering every layer, even by bytes), baton-cli's text; /health "degraded", resplit true.
#     Then the link back: h2 rejoins (3 ranks again).
# C. a spare without the model file (other_model.sh as BATON_MPIEXEC gives h4's ranks a missing
#    file): h2 cut off for good, h4 stands in and cannot load: the supervisor says so, evicts h4
#    for good (not a configuration error) and runs on h1, h3 re-split, baton-cli's text.
# Every wait polls a condition against a deadline; every curl has a -m bound. The times from the
# link's cut to the first correct answer, and from its return to h2 in service, are printed.
#
# Exit 77 (skip) when not root, without `ip netns`, mpiexec, curl or python3.
set -u

baton=${1:?usage: test_standby.sh BATON BATON_CLI}
cli=${2:?usage: test_standby.sh BATON BATON_CLI}
here=$(cd "$(dirname "$0")" && pwd)
netns="$here/netns.sh"
shared=${BATON_SHARED:-$here/../../../../shared}
model="$shared/models/stories260K.gguf"
prompt="Once upon a time"
H1=10.77.0.1 H2=10.77.0.2 H3=10.77.0.3 H4=10.77.0.4

# shellcheck source=common.sh
. "$here/common.sh"
need_netns curl "curl is not installed" python3 "python3 is not installed"
[ -f "$model" ] || skip "no model at $model"

tmp=$(mktemp -d /tmp/baton-standby.XXXXXX)
serve_pid=
loop_pids=()
export BATON_NETNS_ID="s$$" BATON_NETNS_HOSTS=4
cleanup() {
    for p in "${loop_pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
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
for i in 1 2 3 4; do
    ns[i]=$("$netns" ns "h$i")
    ns_ino[$i]=$(stat -L -c %i "/run/netns/${ns[$i]}") || fail "no /run/netns/${ns[$i]}"
done
export HYDRA_LAUNCHER=ssh HYDRA_LAUNCHER_EXEC="$here/nswrap.sh" HYDRA_IFACE=eth1
export UCX_TLS=tcp,self UCX_NET_DEVICES=eth1

timeout -s KILL 30 "$cli" -m "$model" -p "$prompt" -n 60 -c 512 --temp 0 >"$tmp/want" \
    2>"$tmp/cli.err" || { cat "$tmp/cli.err"; fail "baton-cli failed"; }
[ "$(wc -c <"$tmp/want")" -gt 50 ] || fail "baton-cli wrote only $(wc -c <"$tmp/want") bytes"

L=3 # --launch-timeout
opts=(-m "$model" -c 512 -t 1 --ranks 3 --hosts "$H1,$H2,$H3" --host "$H1" --port 8080
    --heartbeat-interval 0.25 --heartbeat-misses 4 --step-timeout 2 --launch-timeout "$L"
    --readmit-interval 3 --drain-timeout 5)
url="http://$H1:8080"
h1_curl() { ip netns exec "${ns[1]}" curl -sS -m "$@"; }
now() { echo "$EPOCHREALTIME"; }
# elapsed T0 [T1]: seconds from T0 to T1 (default now)
elapsed() { awk -v a="$1" -v b="${2:-$EPOCHREALTIME}" 'BEGIN { printf "%.2f", b - a }'; }
log() { grep -v -e '^\[proxy' -e '^\[mpiexec' "$tmp/serve.err"; }

serve() { # serve ARGS...: baton serve in h1, in its own process group
    : >"$tmp/serve.err"
    setsid timeout -s KILL 300 ip netns exec "${ns[1]}" "$baton" serve "${opts[@]}" "$@" \
        >"$tmp/serve.out" 2>"$tmp/serve.err" &
    serve_pid=$!
}
stop_serve() {
    kill -TERM "$serve_pid"
    local deadline=$((SECONDS + 30))
    while kill -0 "$serve_pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
    kill -0 "$serve_pid" 2>/dev/null && fail "the supervisor did not stop within 30 s of SIGTERM"
    wait "$serve_pid"
    local rc=$?
    serve_pid=
    [ $rc -eq 0 ] || { log | tail -n 20; fail "baton serve exited $rc after SIGTERM"; }
}

# health_is SECS COND: poll /health until the python expression COND on h (the JSON) and code
# (the HTTP status) holds; the last answer in $tmp/health
health_is() {
    local deadline=$((SECONDS + $1)) code
    while [ $SECONDS -lt $deadline ]; do
        code=$(h1_curl 2 -o "$tmp/health" -w '%{http_code}' "$url/health" 2>/dev/null)
        if python3 - "$tmp/health" "${code:-0}" "$2" <<'EOF'; then return 0; fi
import json, sys
try:
    h = json.load(open(sys.argv[1]))
except (OSError, ValueError):
    sys.exit(1)
code = int(sys.argv[2])
hosts = h.get("hosts", {})
ranks = h.get("ranks", [])
ready = bool(ranks) and all(r.get("state") == "ready" for r in ranks)
nodes = [r.get("node") for r in ranks]
sys.exit(0 if eval(sys.argv[3]) else 1)
EOF
        sleep 0.1
    done
    echo "--- /health: $(cat "$tmp/health" 2>/dev/null)"
    return 1
}

# completion N MAX_S OUT: a greedy completion of N tokens; its text in OUT; 0 when HTTP 200
completion() {
    h1_curl "$2" "$url/v1/completions" -H 'Content-Type: application/json' \
        -d "{\"prompt\": \"$prompt\", \"max_tokens\": $1, \"temperature\": 0}" \
        >"$3.json" 2>/dev/null || return 1
    python3 -c 'import json, sys
sys.stdout.write(json.load(open(sys.argv[1]))["choices"][0]["text"])' "$3.json" >"$3" 2>/dev/null
}
# answers_again T0 SECS: a greedy 60-token completion equal to baton-cli's text within SECS of T0
# (while no job is up a try waits in the listening socket's backlog); $t_ok: when it came
answers_again() {
    local left
    while :; do
        left=$(awk -v a="$1" -v s="$2" -v n="$EPOCHREALTIME" 'BEGIN { printf "%d", a + s - n }')
        [ "$left" -gt 0 ] || return 1
        if completion 60 "$left" "$tmp/again.txt" && cmp -s "$tmp/want" "$tmp/again.txt"; then
            t_ok=$EPOCHREALTIME
            return 0
        fi
        sleep 0.1
    done
}

# ranks_in I0 I1 I2: rank k's process (the pid rank 0 logged last for it) lives in h(Ik)
ranks_in() {
    local want=("$@") k pid server=
    for p in $(ip netns pids "${ns[${want[0]}]}"); do
        [ "$(cat "/proc/$p/comm" 2>/dev/null)" = baton-server ] && server=$p
    done
    [ -n "$server" ] || fail "no baton-server in h${want[0]}"
    for ((k = 1; k < ${#want[@]}; k++)); do
        pid=$(sed -n "s/.*rank $k on host [^ ]* (pid \([0-9]*\),.*/\1/p" "$tmp/serve.err" |
            tail -n 1)
        [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = baton-rankd ] ||
            fail "rank $k: no live baton-rankd (pid '$pid')"
        [ "$(stat -L -c %i "/proc/$pid/ns/net")" = "${ns_ino[${want[$k]}]}" ] ||
            fail "rank $k (pid $pid) is not in h${want[$k]}"
    done
    rpid2=$pid
}

# client NAME STREAM: requests one after another until $tmp/stop exists; each line of
# $tmp/NAME.log: "ok" or what went wrong
client() {
    (
        while [ ! -e "$tmp/stop" ]; do
            out=$(h1_curl 30 -N -w '\n%{http_code}' "$url/v1/completions" \
                -H 'Content-Type: application/json' \
                -d "{\"prompt\": \"$prompt\", \"max_tokens\": 16, \"temperature\": 0, \"stream\": $2}" \
                2>&1)
            python3 - "$2" "$tmp/want" "$out" <<'EOF' >>"$tmp/$1.log"
import json, sys
stream, want, out = sys.argv[1] == "true", open(sys.argv[2]).read(), sys.argv[3]
body, _, code = out.rpartition("\n")
if code != "200":
    print(f"HTTP {code}: {body[:200]!r}")
    sys.exit()
if stream:
    lines = [l[6:] for l in body.splitlines() if l.startswith("data: ")]
    if not lines or lines[-1] != "[DONE]" or any('"error"' in l for l in lines):
        print(f"bad stream: {body[-200:]!r}")
        sys.exit()
    text = "".join(json.loads(l)["choices"][0]["text"] for l in lines[:-1])
else:
    text = json.loads(body)["choices"][0]["text"]
print("ok" if want.startswith(text) and text else f"text {text!r}")
EOF
        done
    ) &
    loop_pids+=($!)
}

# ---- A: three hosts and a spare -----------------------------------------------------------------
echo "== A. baton serve --ranks 3 --hosts h1,h2,h3 --spare-hosts h4"
serve --spare-hosts "$H4" --on-evict "env | grep '^BATON_' | sort >> '$tmp/alerts'"
health_is 60 "code == 200 and h['status'] == 'ok' and ready and \
hosts['in_service'] == ['$H1', '$H2', '$H3'] and hosts['spares'] == ['$H4'] and \
nodes == ['$H1', '$H2', '$H3']" || { log | tail -n 30; fail "/health never showed 3 ready ranks"; }
completion 60 30 "$tmp/first.txt" && cmp -s "$tmp/want" "$tmp/first.txt" ||
    fail "the first completion differs from baton-cli's text"
echo "ok: ready on h1, h2, h3, spare h4; greedy completion identical to baton-cli's"

echo "== A1. kill -9 of rank 2 (h3) once: not evicted"
ranks_in 1 2 3
t0=$(now)
kill -KILL "$rpid2"
answers_again "$t0" 30 || { log | tail -n 30; fail "no correct completion within 30 s of the kill"; }
echo "ok: answers again $(elapsed "$t0" "$t_ok") s after the kill"
health_is 10 "code == 200 and h['status'] == 'ok' and ready and hosts['evicted'] == [] and \
nodes == ['$H1', '$H2', '$H3']" || fail "/health after the kill"
log | grep -q "failure 1 in a row charged to host $H3" || fail "the kill was not charged to h3"
log | grep -q "supervisor: host .* evicted" &&
    { log | grep "supervisor: host"; fail "a host was evicted after one failure"; }
ranks_in 1 2 3
echo "ok: one failure charged to h3, nobody evicted, running on h1, h2, h3"

echo "== A2. h2's link down for good"
ip -n "${ns[2]}" link set eth1 down || fail "cannot set eth1 down in h2"
t0=$(now)
# evict-after x (launch-timeout + backoff) + the start: the backoffs after A1's restart are
# 0.5, 1, 2 s (they double while jobs die young); the fault itself takes 1-2.5 s to notice and
# the start about 1 s on this VM: 3 x (3 + 2) + 10 = 25 s
bound=25
answers_again "$t0" "$bound" ||
    { log | tail -n 40; fail "no correct completion within $bound s of the cut"; }
t_spare=$(elapsed "$t0" "$t_ok")
echo "ok: answers again $t_spare s after h2 was cut off, with baton-cli's text"
health_is 5 "code == 200 and h['status'] == 'degraded' and ready and \
hosts['evicted'] == ['$H2'] and hosts['spares'] == [] and not hosts['resplit'] and \
hosts['in_service'] == ['$H1', '$H4', '$H3'] and nodes == ['$H1', '$H4', '$H3'] and \
'$H2' in h.get('message', '')" || fail "/health does not report h2 evicted, no spare left"
cat "$tmp/health"
echo
ranks_in 1 4 3
h1_curl 2 "$url/metrics" >"$tmp/metrics" || fail "GET /metrics"
for m in "baton_hosts_in_service 3" "baton_hosts_evicted 1" "baton_hosts_spare 0"; do
    grep -qx "$m" "$tmp/metrics" || fail "/metrics lacks '$m'"
done
[ "$(log | grep -c "error: supervisor: host $H2 evicted after 3 failures")" -eq 1 ] ||
    { log | grep -i evict; fail "not exactly one eviction error line for h2"; }
log | grep -E "charged to host|evicted" | sed 's/^/    /'
deadline=$((SECONDS + 10))
until grep -q "BATON_EVICTED_HOST=$H2" "$tmp/alerts" 2>/dev/null || [ $SECONDS -ge $deadline ]; do
    sleep 0.1
done
grep -q "BATON_EVICTED_HOST=$H2" "$tmp/alerts" 2>/dev/null || fail "--on-evict did not run for h2"
grep -q "BATON_HOSTS_IN_SERVICE=$H1,$H4,$H3" "$tmp/alerts" || fail "--on-evict: hosts in service"
echo "ok: h2 evicted (one error line, --on-evict ran), spare h4 in its place; ranks in h1, h4, h3"

echo "== A3. h2's link back: readmitted at an idle moment, no request failed"
rm -f "$tmp/stop" "$tmp/c1.log" "$tmp/c2.log"
client c1 false
client c2 true
deadline=$((SECONDS + 10))
until [ -s "$tmp/c1.log" ] && [ -s "$tmp/c2.log" ] || [ $SECONDS -ge $deadline ]; do sleep 0.1; done
ip -n "${ns[2]}" link set eth1 up || fail "cannot set eth1 up in h2"
t0=$(now)
health_is 30 "code == 200 and h['status'] == 'ok' and ready and hosts['evicted'] == [] and \
hosts['spares'] == ['$H4'] and hosts['in_service'] == ['$H1', '$H2', '$H3'] and \
nodes == ['$H1', '$H2', '$H3']" ||
    { log | tail -n 30; fail "h2 not back in service within 30 s of its link's return"; }
t_readmit=$(elapsed "$t0")
n_before=$(cat "$tmp/c1.log" "$tmp/c2.log" | wc -l)
deadline=$((SECONDS + 10)) # a few requests on the new job too
until [ "$(cat "$tmp/c1.log" "$tmp/c2.log" | wc -l)" -ge $((n_before + 4)) ] ||
    [ $SECONDS -ge $deadline ]; do sleep 0.1; done
touch "$tmp/stop"
for p in "${loop_pids[@]}"; do wait "$p"; done
loop_pids=()
n_req=$(cat "$tmp/c1.log" "$tmp/c2.log" | wc -l)
n_bad=$(grep -cv '^ok$' "$tmp/c1.log" "$tmp/c2.log" | awk -F: '{ s += $2 } END { print s }')
[ "$n_bad" -eq 0 ] || { grep -v '^ok$' "$tmp/c1.log" "$tmp/c2.log"; fail "$n_bad requests failed"; }
[ "$n_req" -ge 10 ] || fail "only $n_req requests were made"
log | grep -q "rank 0 left at an idle moment as asked" || fail "no restart at an idle moment"
ranks_in 1 2 3
echo "ok: h2 back in service $t_readmit s after its link came back (h4 a spare again);" \
    "$n_req requests meanwhile, none failed"
stop_serve

# ---- B: three hosts, no spare -------------------------------------------------------------------
echo "== B. baton serve --ranks 3 --hosts h1,h2,h3 (no spare): h2's link down for good"
serve
health_is 60 "code == 200 and h['status'] == 'ok' and ready and len(ranks) == 3 and \
hosts['spares'] == []" || { log | tail -n 30; fail "/health never showed 3 ready ranks"; }
ip -n "${ns[2]}" link set eth1 down || fail "cannot set eth1 down in h2"
t0=$(now)
answers_again "$t0" "$bound" ||
    { log | tail -n 40; fail "no correct completion within $bound s of the cut"; }
t_resplit=$(elapsed "$t0" "$t_ok")
echo "ok: answers again $t_resplit s after h2 was cut off, with baton-cli's text"
health_is 5 "code == 200 and h['status'] == 'degraded' and ready and hosts['resplit'] and \
hosts['evicted'] == ['$H2'] and hosts['in_service'] == ['$H1', '$H3'] and \
nodes == ['$H1', '$H3'] and ranks[0]['layers'][0] == 0 and \
ranks[0]['layers'][1] == ranks[1]['layers'][0] and ranks[1]['layers'][1] == 5" ||
    fail "/health does not show the layers re-split over h1 and h3"
python3 - "$tmp/health" <<'EOF'
import json, sys
ranks = json.load(open(sys.argv[1]))["ranks"]
print("layers now: " + ", ".join("rank %d on %s: %s" % (r["rank"], r["node"], r["layers"])
                                 for r in ranks))
EOF
log | grep -q "re-splits the layers over 2 hosts ($H1, $H3)" || fail "no re-split in the log"
ranks_in 1 3
ip -n "${ns[2]}" link set eth1 up || fail "cannot set eth1 up in h2"
t0=$(now)
health_is 30 "code == 200 and h['status'] == 'ok' and ready and len(ranks) == 3 and \
hosts['evicted'] == [] and nodes == ['$H1', '$H2', '$H3']" ||
    { log | tail -n 30; fail "h2 not back within 30 s of its link's return"; }
t_readmit2=$(elapsed "$t0")
completion 60 30 "$tmp/last.txt" && cmp -s "$tmp/want" "$tmp/last.txt" ||
    fail "the completion after the readmission differs"
echo "ok: h2 back $t_readmit2 s after its link came back, 3 ranks, baton-cli's text"
stop_serve

# ---- C: a spare that cannot load ---------------------------------------------------------------
echo "== C. a spare without the model file (other_model.sh gives h4's ranks a missing file)"
BATON_MPIEXEC="$here/../other_model.sh" OTHER_HOST=$H4 OTHER_MODEL=/nonexistent/model.gguf \
    serve --spare-hosts "$H4"
health_is 60 "code == 200 and h['status'] == 'ok' and ready and len(ranks) == 3" ||
    { log | tail -n 30; fail "/health never showed 3 ready ranks"; }
ip -n "${ns[2]}" link set eth1 down || fail "cannot set eth1 down in h2"
t0=$(now)
answers_again "$t0" "$bound" ||
    { log | tail -n 40; fail "no correct completion within $bound s of the cut"; }
t_unfit=$(elapsed "$t0" "$t_ok")
log | grep -q "error: supervisor: host $H4 evicted: its rank 1 could not load its stage in place of $H2" ||
    { log | grep -i -e evict -e "failed to load"; fail "the spare's failed load was not reported"; }
health_is 5 "code == 200 and h['status'] == 'degraded' and ready and hosts['resplit'] and \
hosts['evicted'] == ['$H2', '$H4'] and hosts['spares'] == [] and nodes == ['$H1', '$H3']" ||
    fail "/health does not show h2 and the spare evicted, the layers re-split over h1 and h3"
[ "$(log | grep -c 'job started')" -ge 4 ] || fail "fewer starts than expected"
echo "ok: the spare could not load (evicted for good, said so); answers again on h1, h3" \
    "$t_unfit s after the cut, with baton-cli's text"
ip -n "${ns[2]}" link set eth1 up || fail "cannot set eth1 up in h2"
stop_serve

echo "measured (--launch-timeout $L, probes 1.5 s, --readmit-interval 3, heartbeats 0.25 s x 4):" \
    "answering again after h2 was cut off for good: $t_spare s with a spare, $t_resplit s" \
    "without (re-split), $t_unfit s with a spare that cannot load; h2 back in service" \
    "$t_readmit s / $t_readmit2 s after its link came back"
echo "PASS"
