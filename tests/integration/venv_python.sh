#!/usr/bin/env bash
# Run a python test script with the test venv's python ($BATON_VENV, default /opt/baton-venv,
# made from tests/requirements.txt) when it has the official openai client, else with python3:
# the script then skips the cases that need the client (and says so).
#   venv_python.sh SCRIPT [ARGS...]
set -u
venv=${BATON_VENV:-/opt/baton-venv}
if "$venv/bin/python" -c 'import openai' 2>/dev/null; then
    exec "$venv/bin/python" "$@"
fi
echo "note: no venv with the openai client at $venv: running with python3"
exec python3 "$@"
