#!/bin/bash
# netns.sh: several "hosts" on one machine, as network namespaces on a bridge (DESIGN §9,
# notes/mpich-faults.md §6). Nothing is added to the root namespace; the addresses exist only
# inside the namespaces. Needs root and iproute2 (nftables for `drop`).
#
#   eval "$(netns.sh up)"      create hosts h1..hN (10.77.0.1..N/24 on eth1, lo up) and a bridge
#                              namespace; prints the variables the other commands and
#                              baton-hostexec need (export BATON_NETNS_ID=... BATON_NETNS_FMT=...)
#   netns.sh down              kill (by pid) what runs in this run's namespaces, delete them
#   netns.sh ns HOST           print HOST's namespace name
#   netns.sh exec HOST CMD...  run CMD inside HOST
#   netns.sh linkdown HOST SECONDS   cut HOST's link (ip link set eth1 down), restore it after
#                              SECONDS (0: leave it down); returns when restored
#   netns.sh linkup HOST
#   netns.sh drop HOST SECONDS nftables: drop everything in and out of HOST's eth1 (the link
#                              stays up, packets vanish), heal after SECONDS (0: keep dropping)
#   netns.sh undrop HOST
#
# HOST is hN, N, or 10.77.0.N. Runs are kept apart by BATON_NETNS_ID (default: a new id from the
# pid of `up`), so parallel runs never share a namespace; BATON_NETNS_HOSTS sets N (default 3).
set -u

die() {
    echo "netns.sh: $*" >&2
    exit 1
}

id=${BATON_NETNS_ID:-}
nhosts=${BATON_NETNS_HOSTS:-3}
case "$nhosts" in [1-9] | [1-9][0-9]) ;; *) die "BATON_NETNS_HOSTS='$nhosts': expected 1..99" ;; esac

need_id() {
    [ -n "$id" ] || die "BATON_NETNS_ID is not set (use: eval \"\$(netns.sh up)\")"
    case "$id" in *[!A-Za-z0-9_]*) die "BATON_NETNS_ID='$id': letters, digits and _ only" ;; esac
}
ns_of() { echo "baton-h$1-$id"; }
br_ns() { echo "baton-br-$id"; }

# resolve HOST: set $ns to HOST's namespace (dies on an unknown host).
resolve() {
    need_id
    local h=$1
    case "$h" in
    10.77.0.*) h=${h#10.77.0.} ;;
    h*) h=${h#h} ;;
    esac
    case "$h" in [1-9] | [1-9][0-9]) ;; *) die "unknown host '$1' (expected hN, N or 10.77.0.N)" ;; esac
    [ "$h" -le "$nhosts" ] || die "host '$1': only $nhosts hosts"
    ns=$(ns_of "$h")
}

ns_exists() { ip netns list | awk '{print $1}' | grep -qx -- "$1"; }

down() {
    need_id
    local ns pid
    for ns in $(ip netns list | awk '{print $1}' | grep -E -- "^baton-(h[0-9]+|br)-$id\$"); do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            kill -KILL "$pid" 2>/dev/null
        done
        ip netns delete "$ns" || echo "netns.sh: could not delete $ns" >&2
    done
}

up() {
    [ -n "$id" ] || id="r$$"
    need_id
    local br i ns
    br=$(br_ns)
    ns_exists "$br" && die "namespaces of run '$id' exist already (netns.sh down first)"
    {
        ip netns add "$br" &&
            ip -n "$br" link add br0 type bridge &&
            ip -n "$br" link set br0 up &&
            ip -n "$br" link set lo up
    } || { down; die "cannot create the bridge namespace (root and 'ip netns' needed)"; }
    for i in $(seq "$nhosts"); do
        ns=$(ns_of "$i")
        {
            ip netns add "$ns" &&
                ip -n "$br" link add "vb$i" type veth peer name eth1 netns "$ns" &&
                ip -n "$br" link set "vb$i" master br0 &&
                ip -n "$br" link set "vb$i" up &&
                ip -n "$ns" addr add "10.77.0.$i/24" dev eth1 &&
                ip -n "$ns" link set eth1 up &&
                ip -n "$ns" link set lo up
        } || { down; die "cannot create host h$i"; }
    done
    echo "export BATON_NETNS_ID=$id BATON_NETNS_HOSTS=$nhosts BATON_NETNS_FMT=baton-h%s-$id"
}

# nft_fault NS add|del: a table dropping all traffic through eth1 in both directions.
nft_fault() {
    if [ "$2" = add ]; then
        ip netns exec "$1" nft -f - <<'EOF'
table inet baton_fault {
    chain in { type filter hook input priority -10; policy accept; iifname "eth1" drop; }
    chain out { type filter hook output priority -10; policy accept; oifname "eth1" drop; }
}
EOF
    else
        ip netns exec "$1" nft delete table inet baton_fault 2>/dev/null || true
    fi
}

check_seconds() {
    case "$1" in [0-9] | [1-9][0-9] | [1-9][0-9][0-9] | [1-9][0-9][0-9][0-9]) ;;
    *) die "SECONDS='$1': expected a whole number 0..9999" ;; esac
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
up) up ;;
down) down ;;
ns) [ $# -eq 1 ] || die "usage: netns.sh ns HOST"; resolve "$1"; echo "$ns" ;;
exec)
    [ $# -ge 2 ] || die "usage: netns.sh exec HOST CMD..."
    resolve "$1"
    shift
    exec ip netns exec "$ns" "$@"
    ;;
linkdown | drop)
    [ $# -eq 2 ] || die "usage: netns.sh $cmd HOST SECONDS"
    check_seconds "$2"
    resolve "$1"
    if [ "$cmd" = linkdown ]; then
        ip -n "$ns" link set eth1 down || die "cannot set eth1 down in $ns"
    else
        nft_fault "$ns" add || die "cannot add the nftables drop in $ns"
    fi
    [ "$2" -eq 0 ] && exit 0
    sleep "$2" # the fault's duration
    if [ "$cmd" = linkdown ]; then
        ip -n "$ns" link set eth1 up || die "cannot set eth1 up in $ns"
    else
        nft_fault "$ns" del
    fi
    ;;
linkup)
    [ $# -eq 1 ] || die "usage: netns.sh linkup HOST"
    resolve "$1"
    ip -n "$ns" link set eth1 up
    ;;
undrop)
    [ $# -eq 1 ] || die "usage: netns.sh undrop HOST"
    resolve "$1"
    nft_fault "$ns" del
    ;;
*)
    die "usage: netns.sh up|down|ns|exec|linkdown|linkup|drop|undrop ... (see the header)"
    ;;
esac
