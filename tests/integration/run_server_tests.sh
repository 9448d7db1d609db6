#!/usr/bin/env bash
# Run baton-server's integration tests (pytest + the official openai client) from the venv made
# from tests/requirements.txt: $BATON_VENV, default /opt/baton-venv
# (python3 -m venv /opt/baton-venv && /opt/baton-venv/bin/pip install -r tests/requirements.txt).
#   run_server_tests.sh BATON_SERVER_BINARY BATON_LAUNCHER_BINARY [pytest args]
# Exit 77 (skipped) when the venv is missing.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${BATON_VENV:-/opt/baton-venv}
py=$venv/bin/python
if ! "$py" -c 'import openai, pytest' 2>/dev/null; then
    echo "SKIP: no venv with openai and pytest at $venv (see tests/requirements.txt)"
    exit 77
fi
export BATON_SERVER_BIN=$(realpath "$1")
export BATON_LAUNCHER_BIN=$(realpath "$2")
shift 2
cd "$here" && exec timeout 280 "$py" -m pytest -q -p no:cacheprovider -x "$here/test_server.py" "$@"
