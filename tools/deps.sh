#!/usr/bin/env bash
# Install what baton needs on Debian 12 (as root; a no-op when everything is there).
#   tools/deps.sh          build and run: compiler, meson, MPICH, libmicrohttpd, cJSON
#   tools/deps.sh --test   also what the tests use: iproute2 socat nftables (namespace harness),
#                          prometheus (promtool), docker-compose (compose file check), chromium
#                          (chat page), clang (fuzz targets), and a Python venv with the official
#                          openai client and pytest at $BATON_VENV (default /opt/baton-venv).
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs="meson ninja-build pkg-config gcc python3 mpich libmpich-dev libmicrohttpd-dev libcjson-dev curl"
if [ "${1:-}" = "--test" ]; then
    pkgs="$pkgs python3-venv clang iproute2 socat nftables prometheus docker-compose chromium"
fi
# shellcheck disable=SC2086
if ! dpkg -s $pkgs >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "deps.sh: missing Debian packages; as root run: apt-get install $pkgs" >&2
        exit 1
    fi
    echo "deps.sh: installing Debian packages (a few minutes the first time)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $pkgs >/tmp/baton-apt.log 2>&1 ||
        { tail -n 30 /tmp/baton-apt.log >&2; exit 1; }
fi
if [ "${1:-}" = "--test" ]; then
    venv=${BATON_VENV:-/opt/baton-venv}
    if ! "$venv/bin/python" -c 'import openai, pytest' 2>/dev/null; then
        echo "deps.sh: creating the test venv $venv (openai, pytest)" >&2
        python3 -m venv "$venv" && "$venv/bin/pip" install -q -r tests/requirements.txt \
            >/tmp/baton-pip.log 2>&1 || { tail -n 30 /tmp/baton-pip.log >&2; exit 1; }
    fi
fi
