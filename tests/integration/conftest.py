"""Fixtures for baton-server's integration tests: real servers on stories260K, bound to
127.0.0.1 only. Each server gets its listening socket from the test (--listen-fd, as the
supervisor will pass it), so the port is free by construction. Every wait polls a condition with
a deadline."""
import http.client
import json
import os
import signal
import socket
import subprocess
import tempfile
import time

import pytest

SERVER = os.environ.get("BATON_SERVER_BIN", "")
LAUNCHER = os.environ.get("BATON_LAUNCHER_BIN", "")
SHARED = os.environ.get("BATON_SHARED", os.path.join(os.path.dirname(__file__), "../../../shared"))
MODEL = os.path.join(SHARED, "models", "stories260K.gguf")
API_KEY = "test-key"


class Server:
    """baton-server alone, or with ranks=R `baton serve --ranks R` (supervisor, mpiexec, R-1
    baton-rankd), which gets the same options and the same listening socket."""

    def __init__(self, args, env=None, listen_fd=True, wait_ready=True, ranks=None):
        self.log = tempfile.NamedTemporaryFile(prefix="baton-server-", suffix=".log", delete=False)
        head = [LAUNCHER, "serve", "--ranks", str(ranks)] if ranks else [SERVER]
        cmd = head + ["-m", MODEL, "-t", "1", "--http-threads", "2"] + list(args)
        pass_fds = ()
        self.sock = None
        if listen_fd:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.bind(("127.0.0.1", 0))
            self.sock.listen(64)
            self.port = self.sock.getsockname()[1]
            cmd += ["--listen-fd", str(self.sock.fileno())]
            pass_fds = (self.sock.fileno(),)
        else:
            cmd += ["--host", "127.0.0.1", "--port", "0"]
        full_env = dict(os.environ)
        full_env.pop("BATON_API_KEY", None)
        full_env.update(env or {})
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log, pass_fds=pass_fds,
                                     env=full_env)
        if not listen_fd:
            self.port = self._port_from_log()
        if wait_ready:
            self.wait_health(200, timeout=60 if ranks else 20)

    def _port_from_log(self):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with open(self.log.name) as f:
                for line in f:
                    if "listening on http://127.0.0.1:" in line:
                        return int(line.rsplit(":", 1)[1])
            assert self.proc.poll() is None, self.logtext()
            time.sleep(0.01)
        raise AssertionError("no port in the log:\n" + self.logtext())

    def logtext(self):
        with open(self.log.name, errors="replace") as f:
            return f.read()

    @property
    def base(self):
        return f"http://127.0.0.1:{self.port}"

    def request(self, method, path, body=None, headers=None, key=API_KEY, timeout=10):
        """(status, headers dict (lower-case names), body bytes)"""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        h = dict(headers or {})
        if key:
            h["Authorization"] = f"Bearer {key}"
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
            h.setdefault("Content-Type", "application/json")
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data

    def json(self, method, path, body=None, **kw):
        st, h, data = self.request(method, path, body, **kw)
        return st, h, json.loads(data) if data else None

    def metrics(self):
        st, _, data = self.request("GET", "/metrics")
        assert st == 200
        out = {}
        for line in data.decode().splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def wait_metric(self, name, pred, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            v = self.metrics().get(name)
            if v is not None and pred(v):
                return v
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} = {v}: condition not met in {timeout} s")
            time.sleep(0.01)

    def wait_health(self, status, timeout=20):
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, "server exited:\n" + self.logtext()
            try:
                st, _, _ = self.request("GET", "/health", key=None, timeout=2)
                if st == status:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"/health never gave {status}:\n" + self.logtext())
            time.sleep(0.01)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("server did not stop on SIGTERM:\n" + self.logtext())
        if self.sock:
            self.sock.close()
        rc = self.proc.returncode
        os.unlink(self.log.name)
        return rc


def _check_binary():
    if not SERVER or not os.access(SERVER, os.X_OK):
        pytest.fail("BATON_SERVER_BIN must name the baton-server binary")


@pytest.fixture(scope="session", params=[None, 1, 3], ids=["server", "serve-1", "serve-3"])
def srv(request):
    """The main server: 4 slots, an API key, a small body cap; run three ways: baton-server
    alone, `baton serve --ranks 1` and `baton serve --ranks 3` (a pipeline)."""
    _check_binary()
    if request.param and not (LAUNCHER and os.access(LAUNCHER, os.X_OK)):
        pytest.fail("BATON_LAUNCHER_BIN must name the baton launcher")
    s = Server(["--parallel", "4", "--ctx-size", "256", "--api-key", API_KEY, "--max-body", "8K",
                "--model-alias", "stories"], ranks=request.param)
    s.ranks = request.param or 1
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
