#!/bin/bash
# nswrap.sh: hydra's launcher-exec for the namespace hosts of netns.sh, called like ssh:
#   nswrap.sh [ssh options] HOST COMMAND...
# It is deploy/baton-hostexec in its netns mode (10.77.0.N -> printf "$BATON_NETNS_FMT" N, the
# command run there with `ip netns exec NS /bin/sh -c`), so the tests run the deployed script.
export BATON_HOSTEXEC=netns
exec "$(dirname "$(readlink -f "$0")")/../../../deploy/baton-hostexec" "$@"
