"""The supervisor in `baton serve`: restarts a job whose rank 0 died, keeps the port, stops on
configuration errors, kills and restarts a job that never comes up (--launch-timeout), exits 0 on
SIGTERM. Everything bounded in time.

    tests/integration/run_pytest.sh 170 test_supervisor.py   (env BATON_BUILD, BATON_SHARED)
"""
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from harness import LAUNCHER, MODEL, Serve, alive, wait_exit

if not os.path.exists(MODEL):
    pytest.skip(f"{MODEL} not found", allow_module_level=True)


def rank0_pid(s):
    pids = [p for p, name in s.descendants().items() if name == "baton-server"]
    return pids[0] if pids else None


def test_bad_option(check):
    p = subprocess.run([LAUNCHER, "serve", "-m", MODEL, "--no-such-option", "1"],
                       capture_output=True, text=True, timeout=10)
    check(p.returncode == 2, f"an unknown option exits 2 (rc={p.returncode})")
    check("no-such-option" in p.stderr, "the error names the option")


def test_host_options(check):
    """--hosts, --spare-hosts and the hostfile: the first job's command line (--dry-run: hydra
    gets NAME:RANKS per host, spares none), and a clear error (exit 2) for bad input."""
    tmp = tempfile.mkdtemp(prefix="baton-sup-")
    hostfile = os.path.join(tmp, "hosts")
    with open(hostfile, "w") as f:
        f.write("# the cluster\nnode1:2\nnode2\nnode3 spare\n")

    def dry(*args):
        return subprocess.run([LAUNCHER, "serve", "-m", MODEL, "--dry-run", *args],
                              capture_output=True, text=True, timeout=10)

    try:
        p = dry("--ranks", "3", "--hosts", "h1,h2,h3", "--spare-hosts", "h4")
        check(p.returncode == 0 and " -hosts h1:1,h2:1,h3:1 -n 1 " in p.stdout,
              f"--hosts: one rank per host, the spare unused ({p.stdout.strip()[:120]!r})")
        p = dry("--ranks", "3", "--hostfile", hostfile)
        check(p.returncode == 0 and " -hosts node1:2,node2:1 -n 1 " in p.stdout and
              " -f " not in p.stdout, f"hostfile with a spare ({p.stdout.strip()[:120]!r})")
        bad = [
            (["--ranks", "2", "--hosts", "a,b", "--spare-hosts", "b"],
             "host b is both a regular host and a spare"),
            (["--ranks", "2", "--hosts", "a,b", "--min-hosts", "3"],
             "option min-hosts: 3 is more than the 2 hosts that get a rank"),
            (["--ranks", "2", "--spare-hosts", "b"], "option spare-hosts: needs --hosts"),
            (["--hosts", "a,b", "--spare-hosts", "c:2"], "with a rank count"),
            (["--hosts", "a,a"], "host a is named twice"),
            (["--hosts", "a;b"], "holds ';'"),
            (["--hosts", "a", "--evict-after", "-1"], "evict-after"),
            (["--hosts", "a", "--readmit-interval", "x"], "readmit-interval"),
            (["--hostfile", os.path.join(tmp, "none")], "cannot open"),
        ]
        for args, says in bad:
            p = dry(*args)
            check(p.returncode == 2 and says in p.stderr,
                  f"{' '.join(args)}: exit 2 saying {says!r} (rc={p.returncode}, "
                  f"{p.stderr.strip()[:160]!r})")
        with open(hostfile, "w") as f:
            f.write("node1\nnode2 standby\n")
        p = dry("--hostfile", hostfile)
        check(p.returncode == 2 and f"{hostfile}:2: expected" in p.stderr,
              f"a bad hostfile line is named ({p.stderr.strip()[:160]!r})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_config_error_not_restarted(check):
    s = Serve("-m", "/nonexistent/model.gguf", "--ranks", "1", name="sup")
    try:
        rc = wait_exit(s.p, 30)
        check(rc not in (None, 0), f"an unreadable model ends baton serve with an error (rc={rc})")
        check(s.text().count("job started") == 1, "the job was not restarted")
        check("not restarting" in s.text(), "the supervisor says why it stopped")
    finally:
        s.close()


def test_launch_timeout(check):
    """A job that never comes up (hydra waits forever for a host it cannot reach; here a fake
    mpiexec that hangs on its first launch) is killed after --launch-timeout and started again."""
    tmp = tempfile.mkdtemp(prefix="baton-sup-")
    fake, state = os.path.join(tmp, "mpiexec"), os.path.join(tmp, "launches")
    with open(fake, "w") as f:
        f.write('#!/bin/sh\nn=$(cat "$STATE" 2>/dev/null || echo 0)\necho $((n + 1)) >"$STATE"\n'
                '[ "$n" -eq 0 ] && exec sleep 600\nexec mpiexec "$@"\n')
    os.chmod(fake, 0o755)
    s = Serve("-m", MODEL, "--ranks", "1", "--launch-timeout", "1", name="sup",
              env={"BATON_MPIEXEC": fake, "STATE": state})
    try:
        check(s.wait_port() is not None, "launch timeout: the supervisor reports its port")
        t0 = time.monotonic()
        ok = s.wait_ok(timeout=20)
        dt = time.monotonic() - t0
        check(ok and dt < 10, f"launch timeout: a completion succeeds ({dt:.2f} s)")
        check("did not come up within --launch-timeout 1 s" in s.text(),
              "launch timeout: the supervisor says why it killed the first job")
        with open(state) as f:
            check(f.read().strip() == "2", "launch timeout: the job was started twice")
        hung = [pid for pid, name in s.descendants().items() if name == "sleep"]
        check(not hung, f"launch timeout: the hung job is gone ({hung})")
    finally:
        s.close()
        shutil.rmtree(tmp, ignore_errors=True)


def test_restart_after_kill(check):
    s = Serve("-m", MODEL, "--ranks", "1", name="sup")
    try:
        port = s.wait_port()
        check(port is not None, "supervisor reports its port")
        check(s.wait_ok(), "first completion succeeds")
        pid = rank0_pid(s)
        check(pid is not None, "rank 0 (baton-server) is running")
        t0 = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        ok = s.wait_ok(timeout=30)
        dt = time.monotonic() - t0
        check(ok, f"a completion succeeds again after kill -9 of rank 0 ({dt:.2f} s)")
        check(dt < 10, "recovery took less than 10 s")
        check(s.get_json("/health", timeout=10)[0] == 200,
              "health is ok on the same port after the restart")
        new = rank0_pid(s)
        check(new is not None and new != pid, "a new rank 0 serves")
        check("restart #1" in s.text(), "the supervisor logged the restart")
        job = list(s.descendants())
        rc = s.term(timeout=40)
        check(rc == 0, f"SIGTERM: the supervisor exits 0 (rc={rc})")
        left = [pid for pid in job if alive(pid)]
        check(job and not left, f"no process of the job is left ({len(job)} were running, {left})")
    finally:
        s.close()


def test_restart_after_init_timeout(check):
    """A job whose rank 0 leaves through its normal exit (here past --init-timeout: rank 1 starts
    loading 3 s late on the first launch only) is restarted, and the listening socket still
    takes connections: rank 0's HTTP shut the shared socket down for every process before (the
    next job's clients were refused), found with the spare that cannot load (test_standby.sh)."""
    tmp = tempfile.mkdtemp(prefix="baton-sup-")
    fake, state = os.path.join(tmp, "mpiexec"), os.path.join(tmp, "launches")
    with open(fake, "w") as f:
        f.write('#!/bin/sh\nn=$(cat "$STATE" 2>/dev/null || echo 0)\necho $((n + 1)) >"$STATE"\n'
                '[ "$n" -eq 0 ] && export BATON_INIT_TIMEOUT=1 BATON_TEST_LOAD_DELAY_MS=3000 '
                'BATON_TEST_LOAD_DELAY_RANK=1\nexec mpiexec "$@"\n')
    os.chmod(fake, 0o755)
    s = Serve("-m", MODEL, "--ranks", "2", name="sup", env={"BATON_MPIEXEC": fake, "STATE": state})
    try:
        check(s.wait_port() is not None, "init timeout: the supervisor reports its port")
        t0 = time.monotonic()
        ok = s.wait_ok(timeout=30)
        dt = time.monotonic() - t0
        check(ok, f"init timeout: a completion succeeds on the next job ({dt:.2f} s)")
        check("not ready within --init-timeout 1 s" in s.text() and "restart #1" in s.text(),
              "init timeout: the first job left for a restart")
        with open(state) as f:
            check(f.read().strip() == "2", "init timeout: the job was started twice")
    finally:
        s.close()
        shutil.rmtree(tmp, ignore_errors=True)
