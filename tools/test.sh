#!/usr/bin/env bash
# Build baton and run its test suites; the README's test command.
#   tools/test.sh [BUILD_DIR] [-- extra meson test args]
# Installs what is missing first (tools/deps.sh --test; root on Debian 12).
# Env: MESON_SETUP_ARGS (e.g. "-Dwerror=true -Db_sanitize=address,undefined"), TEST_ARGS.
# Prints "N passed, N failed[, N skipped]" last; exits non-zero if anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."
bash tools/deps.sh --test || exit 1
export BATON_VENV=${BATON_VENV:-/opt/baton-venv}
build=${1:-build}
[ $# -gt 0 ] && shift
[ "${1:-}" = "--" ] && shift
if [ ! -f "$build/build.ninja" ]; then
    # shellcheck disable=SC2086
    meson setup "$build" ${MESON_SETUP_ARGS:-} >"$build.setup.log" 2>&1 || {
        cat "$build.setup.log"
        echo "0 passed, 1 failed"
        exit 1
    }
fi
if ! ninja -C "$build" >"$build.ninja.log" 2>&1; then
    tail -n 60 "$build.ninja.log"
    echo "build failed"
    echo "0 passed, 1 failed"
    exit 1
fi
rm -f "$build/meson-logs/testlog.json"
# shellcheck disable=SC2086
meson test -C "$build" --print-errorlogs ${TEST_ARGS:-} "$@"
rc=$?
python3 - "$build/meson-logs/testlog.json" <<'PY'
import json, sys
p = f = s = 0
try:
    for line in open(sys.argv[1]):
        r = json.loads(line).get("result")
        if r in ("OK", "EXPECTEDFAIL"): p += 1
        elif r == "SKIP": s += 1
        else: f += 1
except FileNotFoundError:
    f = 1
print(f"{p} passed, {f} failed, {s} skipped")
PY
exit $rc
