#!/usr/bin/env bash
# Run Python integration tests (tests/integration/test_*.py, helpers in harness.py) with pytest:
# from the venv made from tests/requirements.txt ($BATON_VENV, default /opt/baton-venv:
# python3 -m venv /opt/baton-venv && /opt/baton-venv/bin/pip install -r tests/requirements.txt),
# else with python3 if it has pytest (a module that needs the openai client then skips).
#   run_pytest.sh SECONDS PYTEST_ARGS...     e.g. run_pytest.sh 230 test_pipeline.py::test_greedy
# SECONDS bounds pytest (SIGTERM: the fixtures still stop their servers; SIGKILL 10 s later); give
# it a little less than meson's timeout. The binaries come from $BATON_BUILD (meson's test env).
# Exit 77 (skipped) without pytest, or when every selected test skipped (conftest.py).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
limit=${1:?usage: run_pytest.sh SECONDS PYTEST_ARGS...}
shift
venv=${BATON_VENV:-/opt/baton-venv}
py=
for cand in "$venv/bin/python" python3; do
    if "$cand" -c 'import pytest' 2>/dev/null; then
        py=$cand
        break
    fi
done
if [ -z "$py" ]; then
    echo "SKIP: no python with pytest (make the venv $venv from tests/requirements.txt)"
    exit 77
fi
export PYTHONDONTWRITEBYTECODE=1
for var in BATON_BUILD BATON_SHARED BATON_SRC; do # relative to where we were called
    [ -n "${!var:-}" ] && export "$var=$(realpath "${!var}")"
done
cd "$here" && exec timeout -k 10 "$limit" "$py" -m pytest -p no:cacheprovider -v -s -rs "$@"
