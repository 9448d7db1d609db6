"""What baton's integration tests (tests/integration) and benchmark scripts (tools/bench) share,
written once. Python stdlib only: the bench scripts import it too
(sys.path.insert(0, "tests/integration")).

  paths      SRC, SHARED, BUILD, MODEL, PROMPT and the binaries (env BATON_SRC, BATON_SHARED,
             BATON_BUILD as meson sets them; BATON_SERVER_BIN / BATON_LAUNCHER_BIN override)
  waiting    wait_for: poll a condition against a deadline (a test never sleeps instead of
             waiting for a condition)
  processes  /proc: proc_table, descendants, comm, alive, cpu_s, environ_of, rank_pids;
             kill_pids, kill_tree (by pid), term, stop_tree; run (to completion, bounded)
  HTTP       to 127.0.0.1: request, try_request, json_request, completion (a greedy body),
             parse_metrics; streams: open_stream, sse_lines
  jobs       listen_socket (for --listen-fd), free_port; Job (a started process tree and its
             log), Serve (`baton serve --port 0`), Server (baton-server or `baton serve --ranks R`
             on a socket the test opened); wait_exit, wait_healthy, healthy, start_healthy
  bench      bench_parser: the options the benchmark scripts share
  checks     Checks: "ok: ..." / "FAIL: ..." lines, failures kept (conftest.py's `check` fixture
             fails the test at its end when one failed)
"""
import argparse
import http.client
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("BATON_SRC") or os.path.abspath(os.path.join(HERE, "../.."))
SHARED = os.environ.get("BATON_SHARED") or os.path.join(HERE, "../../../shared")
BUILD = os.path.abspath(os.environ.get("BATON_BUILD") or os.path.join(SRC, "build"))
MODEL = os.path.abspath(os.path.join(SHARED, "models", "stories260K.gguf"))
PROMPT = "Once upon a time"
API_KEY = "test-key"

LAUNCHER = os.path.abspath(os.environ.get("BATON_LAUNCHER_BIN") or os.path.join(BUILD, "baton"))
SERVER = os.path.abspath(os.environ.get("BATON_SERVER_BIN") or
                         os.path.join(BUILD, "baton-server"))
RANKD = os.path.join(BUILD, "baton-rankd")
CLI = os.path.join(BUILD, "baton-cli")
MKMODEL = os.path.join(BUILD, "baton-mkmodel")

RANK_PROGRAMS = ("baton-server", "baton-rankd")
SERVING = r"serving on [^ ]+:(\d+)"  # the supervisor's line (baton serve)
LISTENING = r"listening on http://127\.0\.0\.1:(\d+)"  # baton-server's own line


# ---- waiting ---------------------------------------------------------------------------------

def wait_for(cond, timeout, interval=0.05, proc=None):
    """Call cond() every `interval` s until it returns a true value, for at most `timeout` s and,
    given proc (a Popen), only while proc runs. Returns that value, else the last one cond()
    gave (None if it was never called)."""
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end and (proc is None or proc.poll() is None):
        last = cond()
        if last:
            return last
        time.sleep(interval)
    return last


# ---- processes (/proc) -----------------------------------------------------------------------

def proc_table():
    """pid -> (ppid, comm, state) of every process."""
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    st = f.read()
                rest = st[st.rindex(")") + 2:].split()
                out[int(d)] = (int(rest[1]), st[st.index("(") + 1:st.rindex(")")], rest[0])
            except (OSError, ValueError):
                pass
    return out


def descendants(root):
    """{pid: comm} of every process below root (not root itself), parents before children;
    from /proc's parent links (hydra's proxies start new sessions, so process groups miss
    them)."""
    tab = proc_table()
    out, todo = {}, [root]
    while todo:
        p = todo.pop()
        for c, (pp, name, _) in tab.items():
            if pp == p and c not in out:
                out[c] = name
                todo.append(c)
    return out


def comm(pid):
    """The process's name ("" once it is gone)."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def alive(pid):
    """True while pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def cpu_s(pid):
    """User + system CPU seconds the process has used."""
    with open(f"/proc/{pid}/stat") as f:
        st = f.read()
    fields = st[st.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def environ_of(pid):
    """The process's environment as {bytes: bytes} ({} when it cannot be read)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
    except OSError:
        return {}


def rank_pids(procs):
    """{rank: pid} of the rank processes (baton-server, baton-rankd) among procs ({pid: comm}),
    the rank from the PMI_RANK hydra gives them."""
    out = {}
    for pid, name in procs.items():
        if name in RANK_PROGRAMS:
            try:
                out[int(environ_of(pid)[b"PMI_RANK"])] = pid
            except (KeyError, ValueError):
                pass
    return out


def kill_pids(pids):
    """SIGKILL each pid; one already gone is fine."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def kill_tree(p, pids=None):
    """SIGKILL a job started with start_new_session: pids (default: every process below p,
    deepest first), then p's process group while p runs; reaps p (waiting at most 10 s)."""
    if pids is None:  # once p has exited, its pid may name another process
        pids = reversed(list(descendants(p.pid))) if p.poll() is None else []
    kill_pids(pids)
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def wait_exit(p, timeout):
    """p's exit status, or None if it did not exit within timeout s."""
    try:
        return p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def term(p, timeout=15):
    """SIGTERM to p (if it runs); its exit status, or None if it did not exit within timeout s."""
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    return wait_exit(p, timeout)


def stop_tree(p, timeout=30):
    """SIGTERM to p, then after timeout s SIGKILL of its process group (started with
    start_new_session)."""
    if p.poll() is None and term(p, timeout) is None:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def run(cmd, timeout=120, env=None):
    """Run cmd to completion under a deadline (its tree killed by pid after timeout s):
    (status, stdout bytes, stderr text, seconds); status 124 when it timed out."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         start_new_session=True, env=env)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(p)
        out, err = p.communicate()
        return 124, out, err.decode(errors="replace"), time.monotonic() - t0
    return p.returncode, out, err.decode(errors="replace"), time.monotonic() - t0


def make_tiny_model(directory, timeout):
    """baton-mkmodel's tiny preset with 6 layers, q8_0, seed 7, in directory, bounded by timeout
    s: (path, status, stderr text)."""
    path = os.path.join(directory, "tiny6-q8_0.gguf")
    rc, _, err, _ = run([MKMODEL, "-q", "-o", path, "--preset", "tiny", "--n-layer", "6",
                         "--type", "q8_0", "--seed", "7"], timeout=timeout)
    return path, rc, err


# ---- HTTP on 127.0.0.1 -----------------------------------------------------------------------

def completion(max_tokens=8, prompt=PROMPT, **extra):
    """The body of a greedy completion request."""
    return {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, **extra}


def _send(port, method, path, body, headers, key, timeout):
    """Send one request; (connection, response) with the body still to read."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    h = dict(headers or {})
    if key:
        h["Authorization"] = f"Bearer {key}"
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
        h.setdefault("Content-Type", "application/json")
    try:
        c.request(method, path, body=body, headers=h)
        return c, c.getresponse()
    except BaseException:
        c.close()
        raise


def request(port, method, path, body=None, headers=None, key=None, timeout=10):
    """One request to 127.0.0.1:port: (status, headers (lower-case names), body bytes). A dict
    or list body goes as JSON with its Content-Type, str or bytes as they are; key adds
    "Authorization: Bearer KEY". Raises OSError or http.client.HTTPException."""
    c, r = _send(port, method, path, body, headers, key, timeout)
    try:
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        c.close()


def try_request(port, method, path, body=None, **kw):
    """request() that never raises: (status, headers, body text); (None, {}, repr(error)) when
    the connection failed."""
    try:
        st, h, data = request(port, method, path, body, **kw)
        return st, h, data.decode(errors="replace")
    except (OSError, http.client.HTTPException) as e:
        return None, {}, repr(e)


def json_request(port, path, body=None, timeout=30, key=None):
    """GET path, or POST body as JSON: (status, parsed body); (0, {"error": text}) when the
    connection failed; a body that is not JSON comes as {"raw": text}, an empty one as {}."""
    st, _, text = try_request(port, "GET" if body is None else "POST", path, body, key=key,
                              timeout=timeout)
    if st is None:
        return 0, {"error": text}
    try:
        return st, json.loads(text or "{}")
    except ValueError:
        return st, {"raw": text}


def open_stream(port, path, body, timeout, key=None):
    """POST body as JSON and leave the answer (a stream) to read: (connection, response); close
    the connection when done. Raises OSError or http.client.HTTPException."""
    return _send(port, "POST", path, body, None, key, timeout)


def sse_lines(resp):
    """The lines (bytes, newline included) of a streamed answer as they arrive, until the server
    ends it."""
    while True:
        line = resp.readline()
        if not line:
            return
        yield line


def parse_metrics(text, strict=True):
    """Prometheus text -> {'name{labels}': value}; a line that is no sample raises ValueError,
    or is passed over unless strict."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            try:
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
            except ValueError:
                if strict:
                    raise
    return out


# ---- jobs ------------------------------------------------------------------------------------

def listen_socket():
    """A TCP socket listening on 127.0.0.1, on a port free by construction, for --listen-fd."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    return s


def free_port():
    """A port free on 127.0.0.1 a moment ago (for a server that cannot take --listen-fd)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(proc, port, timeout):
    """True once GET /health on 127.0.0.1:port answers 200, within timeout s and while proc (a
    Popen) runs."""
    return bool(wait_for(lambda: try_request(port, "GET", "/health", timeout=2)[0] == 200,
                         timeout, 0.1, proc))


_OWN_KEY = object()
_serial = itertools.count()
_open_jobs = set()  # Jobs not closed yet (close_all)


class Job:
    """A process started in a session of its own, its stderr (stdout too with stdout_to_log) in
    a log file; HTTP to it once self.port is known. Every process of the job carries
    BATON_TEST_TAG=<unique> in its environment (hydra hands it to the ranks), so tagged() finds
    them all whatever their parent. BATON_API_KEY is not passed on unless env sets it. close()
    kills, by pid, whatever is left and removes the log (unless keep_log)."""

    key = None  # the API key request() sends unless told otherwise

    def __init__(self, cmd, env=None, name="job", stdout_to_log=False, pass_fds=(),
                 keep_log=False):
        self.name = name
        self.tag = f"baton-test-{os.getpid()}-{name}-{next(_serial)}"
        e = dict(os.environ)
        e.pop("BATON_API_KEY", None)
        e.update(env or {})
        e["BATON_TEST_TAG"] = self.tag
        fd, self.log_path = tempfile.mkstemp(prefix=f"baton-{name}-", suffix=".log")
        self.log = os.fdopen(fd, "w+")
        self.keep_log = keep_log
        self.port = None
        self.t0 = time.monotonic()
        self.p = subprocess.Popen(cmd, stdout=self.log if stdout_to_log else subprocess.DEVNULL,
                                  stderr=self.log, pass_fds=pass_fds, start_new_session=True,
                                  env=e)
        _open_jobs.add(self)

    # -- the log
    def text(self):
        self.log.flush()
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def wait_log(self, pattern, timeout=60, interval=0.05):
        """The first match of pattern in the log, waiting while the job runs; None after
        timeout s or when it exited."""
        return wait_for(lambda: re.search(pattern, self.text()), timeout, interval, self.p)

    def wait_port(self, pattern=SERVING, timeout=30, interval=0.05):
        """The port the job's log reports (group 1 of pattern); None if it did not in time."""
        m = self.wait_log(pattern, timeout, interval)
        if m:
            self.port = int(m.group(1))
            return self.port
        return None

    # -- processes
    def descendants(self):
        """{pid: comm} of every process below the job's first process."""
        return descendants(self.p.pid)

    def tagged(self):
        """{pid: comm} of every live process of the job (its tag in the environment)."""
        out = {}
        for d in os.listdir("/proc"):
            if d.isdigit() and environ_of(d).get(b"BATON_TEST_TAG") == self.tag.encode():
                if alive(int(d)):
                    out[int(d)] = comm(d)
        return out

    def ranks(self):
        """{rank: pid} of the job's live rank processes."""
        return rank_pids(self.tagged())

    def wait_ranks(self, n=3, timeout=30):
        """ranks() once n ranks run (or what there is after timeout s)."""
        return wait_for(lambda: (lambda r: r if len(r) == n else None)(self.ranks()),
                        timeout) or self.ranks()

    def term(self, timeout=15):
        """SIGTERM to the job's first process; its exit status (None if not within timeout)."""
        return term(self.p, timeout)

    def stop(self, timeout=30):
        """stop_tree (SIGTERM, SIGKILL of the process group after timeout s), then close()."""
        stop_tree(self.p, timeout)
        self.close()

    def kill(self):
        """SIGKILL every process of the job, by pid (the tagged ones, those below it)."""
        below = reversed(list(self.descendants())) if self.p.poll() is None else []
        kill_tree(self.p, list(self.tagged()) + list(below))

    def close(self, show_log=False):
        """kill(); the log's tail printed if show_log; the log removed unless keep_log."""
        if self.log.closed:
            return
        _open_jobs.discard(self)
        self.kill()
        if show_log:
            print(f"---- {self.name}: log (tail) ----\n{self.text()[-5000:]}", flush=True)
        self.log.close()
        if not self.keep_log:
            try:
                os.unlink(self.log_path)
            except OSError:
                pass

    # -- HTTP
    def request(self, method, path, body=None, headers=None, key=_OWN_KEY, timeout=10):
        return request(self.port, method, path, body, headers,
                       self.key if key is _OWN_KEY else key, timeout)

    def try_request(self, method, path, body=None, key=_OWN_KEY, timeout=10):
        return try_request(self.port, method, path, body,
                           key=self.key if key is _OWN_KEY else key, timeout=timeout)

    def get_json(self, path, body=None, timeout=30):
        """json_request() to this job."""
        return json_request(self.port, path, body, timeout, self.key)

    def json(self, method, path, body=None, **kw):
        """(status, headers, parsed body or None); raises as request() does."""
        st, h, data = self.request(method, path, body, **kw)
        return st, h, json.loads(data) if data else None

    def health(self, timeout=5):
        """(status, headers, parsed /health or {})."""
        st, h, body = self.try_request("GET", "/health", timeout=timeout)
        try:
            return st, h, json.loads(body)
        except ValueError:
            return st, h, {}

    def metrics(self):
        """/metrics as {'name{labels}': value}; {} when it did not answer 200."""
        st, _, body = self.try_request("GET", "/metrics", timeout=5)
        return parse_metrics(body, strict=False) if st == 200 else {}

    def wait_ok(self, timeout=30, max_tokens=8, request_timeout=5):
        """True once a greedy completion is answered 200 with some text; False after timeout s."""
        def ok():
            st, _, body = self.try_request("POST", "/v1/completions", completion(max_tokens),
                                           timeout=request_timeout)
            return st == 200 and bool(json.loads(body)["choices"][0]["text"])
        return bool(wait_for(ok, timeout))

    def wait_ready(self, n_ranks, timeout=60, interval=0.1):
        """/health once it is 200 with n_ranks ranks, every one ready; None if not in time or
        the job exited."""
        def ready():
            st, h = self.get_json("/health", timeout=2)
            if st == 200 and len(h.get("ranks", [])) == n_ranks and \
                    all(r.get("state") == "ready" for r in h["ranks"]):
                return h
            return None
        return wait_for(ready, timeout, interval, self.p)


class Serve(Job):
    """`baton serve --port 0 ARGS`: the supervisor binds 127.0.0.1 (its default --host) and
    logs the port (wait_port)."""

    def __init__(self, *args, env=None, name="serve", launcher=LAUNCHER, keep_log=False):
        super().__init__([launcher, "serve", "--port", "0", *args], env=env, name=name,
                         keep_log=keep_log)


def close_all():
    """close() every Job not closed yet (after an interrupted run: nothing is left behind)."""
    for job in list(_open_jobs):
        job.close()


def healthy(job, timeout, what):
    """job, once GET /health answers 200 (its port from its log first, unless job.port is set)
    within timeout s; else the job is stopped and RuntimeError names what and its log (kept
    then)."""
    end = time.monotonic() + timeout
    if (job.port or job.wait_port(timeout=timeout)) and \
            wait_healthy(job.p, job.port, end - time.monotonic()):
        return job
    job.keep_log = True
    job.stop()
    raise RuntimeError(f"{what} did not become healthy; log: " + job.log_path)


def start_healthy(build, args, timeout=120, name="serve"):
    """`BUILD/baton serve --port 0 ARGS` (a Serve), once healthy()."""
    return healthy(Serve(*args, launcher=os.path.join(build, "baton"), name=name), timeout,
                   "the server")


class Server(Job):
    """baton-server alone, or with ranks=R `baton serve --ranks R` (supervisor, mpiexec, R-1
    baton-rankd), on stories260K with -t 1 --http-threads 2 and ARGS; it gets its listening
    socket from the test (--listen-fd, as the supervisor passes it), so the port is free by
    construction; listen_fd=False: --host 127.0.0.1 --port 0, the port from its log. request()
    sends API_KEY unless told otherwise."""

    key = API_KEY

    def __init__(self, args, env=None, listen_fd=True, wait_ready=True, ranks=None):
        head = [LAUNCHER, "serve", "--ranks", str(ranks)] if ranks else [SERVER]
        cmd = head + ["-m", MODEL, "-t", "1", "--http-threads", "2"] + list(args)
        self.sock = listen_socket() if listen_fd else None
        if self.sock:
            cmd += ["--listen-fd", str(self.sock.fileno())]
        else:
            cmd += ["--host", "127.0.0.1", "--port", "0"]
        super().__init__(cmd, env=env, name="server", stdout_to_log=True,
                         pass_fds=(self.sock.fileno(),) if self.sock else ())
        if self.sock:
            self.port = self.sock.getsockname()[1]
        elif self.wait_port(LISTENING, timeout=10, interval=0.01) is None:
            raise AssertionError("no port in the log:\n" + self.text())
        if wait_ready:
            self.wait_health(200, timeout=60 if ranks else 20)

    @property
    def base(self):
        return f"http://127.0.0.1:{self.port}"

    def metrics(self):
        st, _, data = self.request("GET", "/metrics")
        assert st == 200
        return parse_metrics(data.decode())

    def wait_metric(self, name, pred, timeout=10):
        """The metric's value once pred(value) holds; AssertionError after timeout s."""
        got = {}

        def met():
            got["v"] = self.metrics().get(name)
            return got["v"] is not None and pred(got["v"])
        if not wait_for(met, timeout, interval=0.01):
            raise AssertionError(f"{name} = {got.get('v')}: condition not met in {timeout} s")
        return got["v"]

    def wait_health(self, status, timeout=20):
        """Until GET /health answers status; AssertionError (with the log) if the server exits
        or after timeout s."""
        def up():
            assert self.p.poll() is None, "server exited:\n" + self.text()
            return self.try_request("GET", "/health", key=None, timeout=2)[0] == status
        if not wait_for(up, timeout, interval=0.01):
            raise AssertionError(f"/health never gave {status}:\n" + self.text())

    def stop(self, timeout=40):
        """SIGTERM, then the exit status; AssertionError (with the log) if it did not stop
        within timeout s (it is killed then)."""
        rc = self.term(timeout)
        text = self.text() if rc is None else ""
        self.close()
        if rc is None:
            raise AssertionError("server did not stop on SIGTERM:\n" + text)
        return rc

    def close(self, show_log=False):
        super().close(show_log)
        if self.sock:
            self.sock.close()


# ---- checks ----------------------------------------------------------------------------------

class Checks:
    """check(cond, what): prints "ok: what" or "FAIL: what" and keeps the failures, for the tests
    that go on after a broken promise to report every one (faults, pipelines); thread-safe.
    Returns cond. quiet: only failures are kept, nothing printed."""

    def __init__(self, quiet=False):
        self.failures = []
        self.quiet = quiet
        self._lock = threading.Lock()

    def __call__(self, cond, what):
        with self._lock:
            if not cond:
                self.failures.append(what)
            if not self.quiet:
                print(("ok: " if cond else "FAIL: ") + what, flush=True)
        return cond

    def note(self, what):
        """A line among the checks' (under the same lock)."""
        with self._lock:
            print(what, flush=True)


# ---- bench scripts ---------------------------------------------------------------------------

def bench_parser(doc, ranks, clients, requests, max_tokens):
    """An ArgumentParser (described by doc's first line) with the options the benchmark scripts
    share: -m/--model (required), --ranks, --clients, --requests, --max-tokens (these defaults)
    and --build (default BUILD)."""
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    p.add_argument("-m", "--model", required=True)
    p.add_argument("--ranks", type=int, default=ranks)
    p.add_argument("--clients", type=int, default=clients)
    p.add_argument("--requests", type=int, default=requests)
    p.add_argument("--max-tokens", type=int, default=max_tokens)
    p.add_argument("--build", default=BUILD)
    return p
