"""pytest set-up of baton's integration tests (the helpers are in harness.py): the `check`
fixture, the exit status meson reads (77 when every selected test skipped), SIGTERM as an
interrupt (so fixtures stop their servers when run_pytest.sh's timeout fires), and the servers of
test_server.py: real servers on stories260K bound to 127.0.0.1 only, each with its listening
socket from the test (--listen-fd, as the supervisor will pass it), so the port is free by
construction. Every wait polls a condition with a deadline."""
import collections
import os
import shutil
import signal
import tempfile

import pytest

from harness import API_KEY, LAUNCHER, SERVER, Checks, Server, close_all

_outcomes = collections.Counter()


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config):
    signal.signal(signal.SIGTERM, _interrupt)


def pytest_unconfigure(config):
    close_all()


def pytest_collectreport(report):
    if report.skipped:
        _outcomes["skipped"] += 1


def pytest_runtest_logreport(report):
    if report.when == "call" or report.outcome != "passed":
        _outcomes[report.outcome] += 1


def pytest_sessionfinish(session, exitstatus):
    """meson's convention: 77 (skipped) when nothing ran but skips. Interrupted (SIGTERM, ^C):
    every job is killed first, so no fixture waits for one on its way out."""
    if exitstatus == pytest.ExitCode.INTERRUPTED:
        close_all()
    if exitstatus in (0, 5) and _outcomes["skipped"] and not _outcomes["passed"] \
            and not _outcomes["failed"]:
        session.exitstatus = 77


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """A test that used `check` fails when one of its checks failed (after it ran to its end)."""
    result = yield
    c = item.funcargs.get("check")
    if isinstance(c, Checks) and c.failures:
        raise AssertionError(f"{len(c.failures)} check(s) failed:\n" +
                             "\n".join("FAIL: " + f for f in c.failures))
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """item.baton_failed: the test's setup or call failed (fixtures show their logs then)."""
    rep = yield
    if rep.failed:
        item.baton_failed = True
    return rep


@pytest.fixture
def scratch():
    """A directory of the test's own, removed afterwards."""
    d = tempfile.mkdtemp(prefix="baton-test-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def check():
    """check(cond, what): an "ok:"/"FAIL:" line; the test fails at its end if any failed."""
    return Checks()


def _check_binary():
    if not os.access(SERVER, os.X_OK):
        pytest.fail(f"no baton-server at {SERVER} (BATON_BUILD or BATON_SERVER_BIN)")


@pytest.fixture(scope="session", params=[None, 1, 3], ids=["server", "serve-1", "serve-3"])
def srv(request):
    """The main server: 4 slots, an API key, a small body cap; run three ways: baton-server
    alone, `baton serve --ranks 1` and `baton serve --ranks 3` (a pipeline)."""
    _check_binary()
    if request.param and not os.access(LAUNCHER, os.X_OK):
        pytest.fail(f"no baton launcher at {LAUNCHER} (BATON_BUILD or BATON_LAUNCHER_BIN)")
    s = Server(["--parallel", "4", "--ctx-size", "256", "--api-key", API_KEY, "--max-body", "8K",
                "--model-alias", "stories"], ranks=request.param)
    s.n_ranks = request.param or 1
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="session")
def slow():
    """One slot, a queue of one, 10 ms per step: requests stay long enough to be observed."""
    _check_binary()
    s = Server(["--parallel", "1", "--queue", "1", "--ctx-size", "512", "--test-step-delay-ms",
                "10"], env={"BATON_API_KEY": API_KEY})
    yield s
    assert s.stop() == 0
