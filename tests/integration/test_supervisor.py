#!/usr/bin/env python3
"""The supervisor in `baton serve`: restarts a job whose rank 0 died, keeps the port, stops on
configuration errors, kills and restarts a job that never comes up (--launch-timeout), exits 0 on
SIGTERM. Python stdlib only; everything bounded in time.

usage: test_supervisor.py BUILD_DIR   (env BATON_SHARED: ../shared)
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

BUILD = sys.argv[1]
SHARED = os.environ.get("BATON_SHARED", os.path.join(os.path.dirname(__file__), "../../../shared"))
MODEL = os.path.join(SHARED, "models/stories260K.gguf")
BATON = os.path.join(BUILD, "baton")
failures = 0


def check(cond, what):
    global failures
    if cond:
        print(f"ok: {what}")
    else:
        failures += 1
        print(f"FAIL: {what}")


class Serve:
    """`baton serve` on 127.0.0.1 with a free port; its stderr collected in a file."""

    def __init__(self, *args, env=None):
        self.log = open(f"/tmp/baton-sup-{os.getpid()}-{time.monotonic_ns()}.log", "w+")
        self.p = subprocess.Popen([BATON, "serve", "--port", "0", *args], stdout=subprocess.DEVNULL,
                                  stderr=self.log, start_new_session=True, env=env)
        self.port = None

    def text(self):
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()

    def wait_port(self, timeout=30):
        end = time.monotonic() + timeout
        while time.monotonic() < end and self.p.poll() is None:
            m = re.search(r"serving on [^ ]+:(\d+)", self.text())
            if m:
                self.port = int(m.group(1))
                return self.port
            time.sleep(0.05)
        return None

    def request(self, path, body=None, timeout=10):
        url = f"http://127.0.0.1:{self.port}{path}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, None
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None, None

    def wait_ok(self, timeout=30):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            st, body = self.request("/v1/completions",
                                    {"prompt": "Once upon a time", "max_tokens": 8,
                                     "temperature": 0}, timeout=5)
            if st == 200 and body and body["choices"][0]["text"]:
                return True
            time.sleep(0.05)
        return False

    def descendants(self):
        """Every process below the supervisor (hydra's proxies start new sessions)."""
        parent = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open(f"/proc/{d}/stat") as f:
                        st = f.read()
                    parent[int(d)] = (int(st[st.rindex(")") + 2:].split()[1]), st[st.index("(") + 1:st.rindex(")")])
                except (OSError, ValueError):
                    pass
        out, todo = [], [self.p.pid]
        while todo:
            p = todo.pop()
            for c, (pp, comm) in parent.items():
                if pp == p:
                    out.append((c, comm))
                    todo.append(c)
        return out

    def rank0_pid(self):
        pids = [p for p, comm in self.descendants() if comm == "baton-server"]
        return pids[0] if pids else None

    def stop(self):
        for pid, _ in self.descendants():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait(timeout=10)
        self.log.close()
        os.unlink(self.log.name)


def test_restart_after_kill():
    s = Serve("-m", MODEL, "--ranks", "1")
    try:
        port = s.wait_port()
        check(port is not None, "supervisor reports its port")
        check(s.wait_ok(), "first completion succeeds")
        pid = s.rank0_pid()
        check(pid is not None, "rank 0 (baton-server) is running")
        t0 = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        ok = s.wait_ok(timeout=30)
        dt = time.monotonic() - t0
        check(ok, f"a completion succeeds again after kill -9 of rank 0 ({dt:.2f} s)")
        check(dt < 10, "recovery took less than 10 s")
        check(s.request("/health")[0] == 200, "health is ok on the same port after the restart")
        new = s.rank0_pid()
        check(new is not None and new != pid, "a new rank 0 serves")
        check("restart #1" in s.text(), "the supervisor logged the restart")
        job = [pid for pid, _ in s.descendants()]
        s.p.send_signal(signal.SIGTERM)
        try:
            rc = s.p.wait(timeout=40)
        except subprocess.TimeoutExpired:
            rc = None
        check(rc == 0, f"SIGTERM: the supervisor exits 0 (rc={rc})")
        def alive(pid):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    return f.read().split(")")[-1].split()[0] != "Z"
            except OSError:
                return False
        left = [pid for pid in job if alive(pid)]
        check(job and not left, f"no process of the job is left ({len(job)} were running, {left})")
    finally:
        s.stop()


def test_config_error_not_restarted():
    s = Serve("-m", "/nonexistent/model.gguf", "--ranks", "1")
    try:
        try:
            rc = s.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            rc = None
        check(rc not in (None, 0), f"an unreadable model ends baton serve with an error (rc={rc})")
        check(s.text().count("job started") == 1, "the job was not restarted")
        check("not restarting" in s.text(), "the supervisor says why it stopped")
    finally:
        s.stop()


def test_launch_timeout():
    """A job that never comes up (hydra waits forever for a host it cannot reach; here a fake
    mpiexec that hangs on its first launch) is killed after --launch-timeout and started again."""
    tmp = tempfile.mkdtemp(prefix="baton-sup-")
    fake, state = os.path.join(tmp, "mpiexec"), os.path.join(tmp, "launches")
    with open(fake, "w") as f:
        f.write('#!/bin/sh\nn=$(cat "$STATE" 2>/dev/null || echo 0)\necho $((n + 1)) >"$STATE"\n'
                '[ "$n" -eq 0 ] && exec sleep 600\nexec mpiexec "$@"\n')
    os.chmod(fake, 0o755)
    env = dict(os.environ, BATON_MPIEXEC=fake, STATE=state)
    s = Serve("-m", MODEL, "--ranks", "1", "--launch-timeout", "1", env=env)
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
        hung = [pid for pid, comm in s.descendants() if comm == "sleep"]
        check(not hung, f"launch timeout: the hung job is gone ({hung})")
    finally:
        s.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def test_bad_option():
    p = subprocess.run([BATON, "serve", "-m", MODEL, "--no-such-option", "1"],
                       capture_output=True, text=True, timeout=10)
    check(p.returncode == 2, f"an unknown option exits 2 (rc={p.returncode})")
    check("no-such-option" in p.stderr, "the error names the option")


if not os.path.exists(MODEL):
    print(f"skip: {MODEL} not found")
    sys.exit(77)
test_bad_option()
test_config_error_not_restarted()
test_launch_timeout()
test_restart_after_kill()
print(f"{failures} failure(s)")
sys.exit(1 if failures else 0)
