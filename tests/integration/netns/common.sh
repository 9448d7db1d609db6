#!/bin/bash
# common.sh: what the namespace tests share (test_netns.sh, test_multihost.sh source it):
#   . "$here/common.sh"
#   skip WHY...     print "SKIP: WHY", exit 77 (meson's skipped)
#   fail WHY...     print "FAIL: WHY", exit 1
#   need_netns [COMMAND WHY]...
#                   skip unless root with iproute2, mpiexec, each COMMAND (WHY says what is
#                   missing) and working `ip netns`
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    echo "common.sh is sourced by the netns tests, not run" >&2
    exit 2
fi

skip() {
    echo "SKIP: $*"
    exit 77
}
fail() {
    echo "FAIL: $*"
    exit 1
}

need_netns() {
    [ "$(id -u)" -eq 0 ] || skip "needs root (ip netns)"
    command -v ip >/dev/null || skip "iproute2 (ip) is not installed"
    command -v mpiexec >/dev/null || skip "mpiexec (mpich) is not installed"
    while [ $# -ge 2 ]; do
        command -v "$1" >/dev/null || skip "$2"
        shift 2
    done
    ip netns add "baton-probe-$$" 2>/dev/null || skip "ip netns is not available here"
    ip netns delete "baton-probe-$$"
}
