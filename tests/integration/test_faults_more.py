"""More fault injection on `baton serve --ranks 3` (docs/faults.md, "What is tested"): real
processes (the supervisor, mpiexec, the ranks), real HTTP on 127.0.0.1, every wait bounded and
waiting for a condition.

  late        rank 1 starts loading 120 s late (test hook --test-load-delay-ms 120000
              --test-load-delay-rank 1) with the default --init-timeout (600 s) and heartbeats:
              meanwhile /health is 503 "loading" and shows rank 1 loading (progress 0, its host)
              while ranks 0 and 2 are ready, completions get 503 model_loading at once, rank 0
              logs whom it waits for; nothing times out (the same rank processes throughout, no
              restart); then /health is 200 with every rank ready (none shown offline) and a
              completion is served.
  mismatch    rank 2 given another model file, through the launcher's BATON_MPIEXEC hook
              (other_model.sh changes -m on rank 2 only, as a different file at the same path on
              another host would): one clear error naming rank 2 and its host, the supervisor
              exits 3 (handshake mismatch) within seconds without restarting, the port is closed,
              no process is left. The same with a missing file on rank 2: exit 2.
  disconnect  100 streaming requests (completions and chat, 10 clients at a time) whose clients
              close the connection (FIN, or RST for every other one) after 1..5 tokens: every one
              is cancelled (baton_requests_cancelled_total +100), the busy slots and the queue are
              back to 0 long before the requests could have ended by themselves (440 tokens at
              >= 20 ms a step), then --parallel (4) streams generate at once, the ranks are the
              same processes, greedy output is what it was before.
  sdk         the official openai SDK with its defaults (max_retries=2, its backoff, honouring
              Retry-After), 4 threads (completions and chat, streaming and not) sending requests
              for 60 s while rank 2 is killed with kill -9 after 20 s; see below.

What "zero failed requests" means in the sdk case. On a fault the server answers every request
it holds with 503 + Retry-After (an estimate of the restart: this job's startup time + 1.5 s), and
the SDK retries 503s and connection errors by itself. A streaming request gets that 503 too as
long as it has not sent its first token (the HTTP status goes out with the first token), so the
SDK retries it like a plain one. A stream that had already delivered tokens when the rank died
cannot be retried by anyone: its text is out under a 200; it ends with an SSE error event naming
the rank, which the SDK raises as APIError. So the case asserts zero failures for the
non-streaming requests and for the streams that had not delivered a token, and that each stream
cut mid-way (at most one per streaming client: those running at the kill) ends with that error,
not with a hang or a bare disconnect. Every successful answer must equal the greedy answer from
before the fault.

'late' runs in the background while the other cases run one after the other: it only waits, and
no case touches another's processes (each job is found by a tag in its environment): the
module's autouse fixture starts it with the first test, test_late (the last) collects it. The
openai client for 'sdk' (skipped without it).

    tests/integration/run_pytest.sh 320 test_faults_more.py   (env BATON_BUILD, BATON_SHARED)
"""
import collections
import concurrent.futures
import http.client
import json
import logging
import os
import re
import shutil
import signal
import socket
import struct
import threading
import time
import traceback

import pytest

from harness import (HERE, MODEL, PROMPT, Checks, Serve, alive, completion, make_tiny_model,
                     open_stream, sse_lines, wait_exit, wait_for)

LATE_S = 120
SDK_S, SDK_KILL_AT = 60, 20
COMMON = ["-m", MODEL, "--ranks", "3", "-t", "1", "-c", "512"]
results = {}  # figures for the summary and cross-case checks

if not os.path.exists(MODEL):
    pytest.skip(f"{MODEL} not found", allow_module_level=True)
if not shutil.which("mpiexec"):
    pytest.skip("no mpiexec", allow_module_level=True)


class Jobs:
    """start(name, args, env=None): a started `baton serve --port 0 ARGS` (harness.Serve), kept
    for close(): every process killed by pid, the log shown if asked, the case's time noted."""

    def __init__(self):
        self.started = []
        self.t0 = time.monotonic()

    def __call__(self, name, args, env=None):
        s = Serve(*args, env=env, name=f"fm-{name}")
        self.started.append(s)
        return s

    def close(self, case, show_log):
        for s in self.started:
            s.close(show_log)
        results[f"time {case}"] = time.monotonic() - self.t0
        print(f"\ncase {case}: {results[f'time {case}']:.1f} s", flush=True)


@pytest.fixture
def start(request):
    """Jobs of one test, closed after it (their logs shown when it failed)."""
    jobs = Jobs()
    yield jobs
    jobs.close(request.node.name, show_log=getattr(request.node, "baton_failed", False))


class LateCase(threading.Thread):
    """case_late in the background, with checks of its own."""

    def __init__(self):
        super().__init__(daemon=True)
        self.check = Checks()

    def run(self):
        jobs = Jobs()
        try:
            case_late(self.check, jobs)
        except Exception:  # a bug in the case or an unexpected answer: a failure, with its trace
            self.check(False, f"late: raised\n{traceback.format_exc()}")
        finally:
            jobs.close("late", show_log=bool(self.check.failures))


@pytest.fixture(scope="module", autouse=True)
def late(request):
    """'late' only waits: it runs in the background from the module's first test on, beside the
    others; test_late (the last) collects it. The figures are printed at the end."""
    bg = None
    if any(item.name == "test_late" for item in request.session.items):
        bg = LateCase()
        bg.start()
    yield bg
    if bg:
        bg.join(LATE_S + 180)
    print()
    for k, v in results.items():
        if k not in ("late greedy", "disconnect greedy"):
            print(f"figure: {k}: {'%.2f' % v if isinstance(v, float) else v}")


def complete(s, max_tokens=32, timeout=10):
    """(status, text or error body, headers) of a greedy completion."""
    st, h, body = s.try_request("POST", "/v1/completions", completion(max_tokens),
                                timeout=timeout)
    if st == 200:
        return st, json.loads(body)["choices"][0]["text"], h
    return st, body, h


def up(s):
    """The supervisor reported its port and a greedy completion succeeded within 60 s."""
    return s.wait_port() is not None and s.wait_ok(60, max_tokens=32, request_timeout=10)


def no_leftovers(check, s, label, timeout=10):
    gone = wait_for(lambda: not s.tagged(), timeout, interval=0.1)
    left = {} if gone else s.tagged()
    check(not left, f"{label}: no process of the job is left ({left})")


# ---- late: a rank that starts 2 minutes late -------------------------------------------------

def case_late(check, start):
    L = f"late rank (rank 1 starts {LATE_S} s late)"
    s = start("late", [*COMMON, "--test-load-delay-ms", str(LATE_S * 1000),
                       "--test-load-delay-rank", "1"])
    if not check(s.wait_port() is not None, f"{L}: the supervisor reports its port"):
        return
    pids = s.wait_ranks()
    check(set(pids) == {0, 1, 2}, f"{L}: ranks 0, 1, 2 started ({pids})")
    polls = bad = mid = mid_bad = 0
    first_bad = mid_first_bad = shown = None
    posts = []  # (status, code, retry-after, seconds to answer)
    loading_metric = None
    t_ready = None
    next_post = time.monotonic()
    end = s.t0 + LATE_S + 60
    while time.monotonic() < end and s.p.poll() is None:
        st, h, j = s.health()
        now = time.monotonic()
        el = now - s.t0
        if st == 200:
            t_ready = now
            break
        polls += 1
        ok = st == 503 and j.get("status") == "loading" and h.get("retry-after") == "1"
        if not ok:
            bad += 1
            first_bad = first_bad or (round(el, 1), st, j)
        ranks = {r.get("rank"): r for r in j.get("ranks", [])}
        if 5 < el < LATE_S - 2:  # every rank has said hello; rank 1 is still waiting to load
            mid += 1
            r0, r1, r2 = ranks.get(0, {}), ranks.get(1, {}), ranks.get(2, {})
            good = (ok and r0.get("state") == "ready" and r2.get("state") == "ready" and
                    r1.get("state") == "loading" and r1.get("progress") == 0 and
                    bool(r1.get("host")) and r1.get("layers") == [2, 4])
            if good and shown is None:
                shown = j
            if not good:
                mid_bad += 1
                mid_first_bad = mid_first_bad or (round(el, 1), st, j)
            if loading_metric is None and el > 60:
                loading_metric = s.metrics().get("baton_loading")
        if now >= next_post:
            t1 = time.monotonic()
            st2, body, h2 = complete(s, timeout=5)
            code = None
            try:
                code = json.loads(body)["error"]["code"]
            except (ValueError, KeyError, TypeError):
                pass
            posts.append((st2, code, h2.get("retry-after"), time.monotonic() - t1))
            next_post = now + 10
        time.sleep(0.5)
    dt_ready = (t_ready - s.t0) if t_ready else None
    check(bad == 0, f"{L}: every /health before ready ({polls}) was 503 loading with Retry-After "
                    f"(first other: {first_bad})")
    check(mid >= 100 and mid_bad == 0,
          f"{L}: while it waits, /health shows rank 1 loading at 0 % on its host, ranks 0 and 2 "
          f"ready ({mid} polls, {mid_bad} not so; first: {mid_first_bad}); e.g. {shown}")
    check(len(posts) >= 10 and all(p[0] == 503 and p[1] == "model_loading" and p[2] and p[3] < 5
                                   for p in posts),
          f"{L}: completions meanwhile get 503 model_loading with Retry-After at once "
          f"({len(posts)}: {collections.Counter((p[0], p[1]) for p in posts)})")
    check(loading_metric == 1, f"{L}: /metrics baton_loading 1 meanwhile")
    check(dt_ready is not None and LATE_S <= dt_ready < LATE_S + 30,
          f"{L}: /health is 200 when rank 1 has loaded "
          f"({'%.1f s' % dt_ready if dt_ready else 'never'} after the start)")
    results["late ready after"] = dt_ready
    st, text, _ = complete(s, timeout=30)
    check(st == 200 and text, f"{L}: then a completion is served ({st}, {text[:60]!r})")
    results["late greedy"] = text if st == 200 else None
    # every rank ready and answering heartbeats, none shown offline (ranks 0 and 2 were not
    # heard from while they waited): over 3 s of /health
    states, end = set(), time.monotonic() + 3
    while time.monotonic() < end:
        st, _, j = s.health()
        states.add((st, tuple(r.get("state") for r in j.get("ranks", []))))
        time.sleep(0.1)
    check(states == {(200, ("ready", "ready", "ready"))},
          f"{L}: afterwards /health is 200 with every rank ready ({states})")
    log = s.text()
    check(s.ranks() == pids, f"{L}: the same rank processes throughout, nothing timed out or was "
                             f"restarted ({pids} -> {s.ranks()})")
    check(log.count("job started") == 1 and "restart #" not in log and "init-timeout 600 s:" in log
          and "not ready within" not in log and "nothing heard from rank 0" not in log,
          f"{L}: one job, no restart, no timeout in the log")
    waits = re.findall(r"\[rank 0\] info: waiting for rank 1 on host \S+ \(loading, 0%\)", log)
    check(len(waits) >= 3, f"{L}: rank 0 logs that it waits for rank 1 ({len(waits)} times)")
    check("[rank 1] warn: test hook: starting to load 120000 ms late" in log,
          f"{L}: rank 1 logged the test hook")
    rc = s.term()
    check(rc == 0, f"{L}: SIGTERM: the supervisor exits 0 (rc={rc})")
    no_leftovers(check, s, L)


# ---- mismatch: one rank given a different model file -------------------------------------------

def mismatch_one(check, start, label, other, expect_rc, expect_err):
    s = start(f"mismatch{expect_rc}", COMMON,
              env={"BATON_MPIEXEC": os.path.join(HERE, "other_model.sh"), "OTHER_RANK": "2",
                   "OTHER_MODEL": other})
    port = s.wait_port()
    check(port is not None, f"{label}: the supervisor reports its port")
    rc = wait_exit(s.p, 60)
    dt = time.monotonic() - s.t0
    results[f"mismatch exit {expect_rc} after"] = dt
    log = s.text()
    errors = [l for l in log.splitlines() if "[rank 0] error" in l and "rank 2 on host" in l]
    check.note("\n".join(errors))
    check(rc == expect_rc and dt < 20,
          f"{label}: the supervisor exits {expect_rc} within seconds (rc={rc}, {dt:.1f} s)")
    check(errors and all(re.search(r"rank 2 on host \S+: " + expect_err, l) for l in errors),
          f"{label}: rank 0's error names rank 2 and its host: '{expect_err}'")
    check(any(l.startswith("baton[rank 2]") and other in l for l in log.splitlines()),
          f"{label}: rank 2 really got {os.path.basename(other)} (its log names it)")
    check(log.count("job started") == 1 and "restart #" not in log and
          f"configuration error (exit code {expect_rc}): not restarting" in log,
          f"{label}: the supervisor says it does not restart, and did not "
          f"({log.count('job started')} job(s) started)")
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        closed = False
    except OSError:
        closed = True
    check(closed, f"{label}: the port is closed (nothing waits for a restart that will not come)")
    no_leftovers(check, s, label)


def test_mismatch(check, start, scratch):
    tiny, rc, err = make_tiny_model(scratch, timeout=60)
    if not check(rc == 0, "baton-mkmodel: a tiny model (6 layers, q8_0)" +
                 (f": {err[-300:]!r}" if rc else "")):
        return
    mismatch_one(check, start, "different model on rank 2", tiny, 3,
                 r"model identity 0x[0-9a-f]+ \(\d+ bytes\) differs from rank 0's "
                 r"0x[0-9a-f]+ \(\d+ bytes\) \(different model file\?\)")
    mismatch_one(check, start, "missing model file on rank 2",
                 os.path.join(scratch, "nonexistent.gguf"), 2, r".*nonexistent\.gguf")


# ---- disconnect: 100 clients that leave mid-stream ----------------------------------------------

def stream_request(s, i, k, chat, rst):
    """A streaming request whose client leaves after k tokens (RST if rst, else FIN).
    (status, tokens received, error)."""
    path = "/v1/chat/completions" if chat else "/v1/completions"
    body = {"max_tokens": 440, "stream": True, "temperature": 0.8, "seed": i}
    if chat:
        body["messages"] = [{"role": "user", "content": PROMPT}]
    else:
        body["prompt"] = PROMPT
    c = None
    got, st = 0, None
    try:
        c, r = open_stream(s.port, path, body, 30)
        st = r.status
        for line in sse_lines(r):
            if line.startswith(b"data: {") and b'"role"' not in line and b'"error"' not in line:
                got += 1
            if got >= k:
                break
        if rst:  # an abortive close: the server's next write fails with ECONNRESET
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        r.close()
        return st, got, None
    except (OSError, http.client.HTTPException) as e:
        return st, got, repr(e)
    finally:
        if c:
            c.close()


def test_disconnect(check, start):
    L = "100 disconnects"
    s = start("disconnect", [*COMMON, "--parallel", "4", "--test-step-delay-ms", "20"])
    if not check(up(s), f"{L}: the service is up"):
        return
    st, ref, _ = complete(s)
    check(st == 200 and ref, f"{L}: a greedy answer first ({ref!r})")
    results["disconnect greedy"] = ref
    pids = s.wait_ranks()
    m0 = s.metrics()
    check(m0.get("baton_slots") == 4, f"{L}: 4 slots ({m0.get('baton_slots')})")
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:
        futs = [pool.submit(stream_request, s, i, 1 + i % 5, i % 3 == 0, i % 2 == 1)
                for i in range(100)]
        outs = [f.result(timeout=120) for f in futs]
    t_last = time.monotonic()
    bad = [(i, o) for i, o in enumerate(outs) if o[0] != 200 or o[1] != 1 + i % 5 or o[2]]
    check(not bad, f"{L}: each got 200 and its 1..5 tokens before leaving "
                   f"({len(outs)} in {t_last - t0:.1f} s; bad: {bad[:5]})")
    # the server notices each departure at its next write and frees the slot at the next step;
    # a request that went on would hold its slot for 440 steps (>= 8.8 s)
    m, settled = {}, None
    while time.monotonic() - t_last < 5:
        m = s.metrics()
        if (m.get("baton_slots_busy") == 0 and m.get("baton_queue_depth") == 0 and
                m.get("baton_requests_cancelled_total", 0) - m0.get("baton_requests_cancelled_total", 0) >= 100):
            settled = time.monotonic() - t_last
            break
        time.sleep(0.05)
    cancelled = m.get("baton_requests_cancelled_total", 0) - m0.get("baton_requests_cancelled_total", 0)
    results["disconnect settled after"] = settled
    check(settled is not None and cancelled == 100,
          f"{L}: all 100 cancelled, busy slots and queue depth back to 0, "
          f"{'%.2f s' % settled if settled is not None else 'not within 5 s'} after the last "
          f"client left (cancelled {cancelled:.0f}, busy {m.get('baton_slots_busy')}, queued "
          f"{m.get('baton_queue_depth')})")
    # every slot usable: 4 streams generate at the same time (each has a token before any ends)
    firsts, ends, texts = [None] * 4, [None] * 4, [None] * 4
    barrier = threading.Barrier(4)

    def one(k):
        c = None
        try:
            barrier.wait(10)
            c, r = open_stream(s.port, "/v1/completions", completion(32, stream=True), 30)
            text, fin, done = "", None, False
            for line in sse_lines(r):
                if line.startswith(b"data: [DONE]"):
                    done = True
                elif line.startswith(b"data: {"):
                    ch = json.loads(line[6:])["choices"][0]
                    if ch.get("text") and firsts[k] is None:
                        firsts[k] = time.monotonic()
                    text += ch.get("text") or ""
                    fin = ch.get("finish_reason") or fin
            ends[k] = time.monotonic()
            texts[k] = (r.status, text, fin, done)
        except (OSError, http.client.HTTPException, ValueError, threading.BrokenBarrierError) as e:
            texts[k] = (None, repr(e), None, False)
        finally:
            if c:
                c.close()

    ths = [threading.Thread(target=one, args=(k,)) for k in range(4)]
    for t in ths:
        t.start()
    for t in ths:
        t.join(60)
    together = all(firsts) and all(ends) and max(firsts) < min(ends)
    check(together, f"{L}: then 4 streams (--parallel 4) generate at once (first tokens "
                    f"{[round(f - t0, 2) if f else None for f in firsts]}, ends "
                    f"{[round(e - t0, 2) if e else None for e in ends]})")
    check(all(t == (200, ref, "length", True) for t in texts),
          f"{L}: each ends normally with the greedy text ({[t[:2] for t in texts if t != (200, ref, 'length', True)]})")
    st, text, _ = complete(s)
    check(st == 200 and text == ref, f"{L}: a later greedy answer equals the first one ({text!r})")
    check(s.ranks() == pids and all(alive(p) for p in pids.values()),
          f"{L}: every rank alive, the same processes ({pids} -> {s.ranks()})")
    m = s.metrics()
    check(m.get("baton_slots_busy") == 0 and m.get("baton_queue_depth") == 0,
          f"{L}: at the end no slot busy, nothing queued")
    log = s.text()
    check("restart #" not in log and "pipeline broken" not in log,
          f"{L}: no fault, no restart in the log")
    rc = s.term()
    check(rc == 0, f"{L}: SIGTERM: the supervisor exits 0 (rc={rc})")
    no_leftovers(check, s, L)


# ---- sdk: the official client through a kill -9 ------------------------------------------------

def test_sdk(check, start):
    L = "openai SDK + kill -9"
    openai = pytest.importorskip("openai")
    s = start("sdk", [*COMMON, "--test-step-delay-ms", "20"])
    if not check(up(s), f"{L}: the service is up"):
        return
    base = f"http://127.0.0.1:{s.port}/v1"
    old = s.wait_ranks()
    # retries the SDK makes (its own log line) and the statuses it sees, per thread
    per_thread = collections.defaultdict(lambda: {"retries": 0, "codes": collections.Counter()})

    class Retries(logging.Handler):
        def emit(self, rec):
            if rec.getMessage().startswith("Retrying request"):
                per_thread[threading.get_ident()]["retries"] += 1

    lg = logging.getLogger("openai")
    lg.setLevel(logging.INFO)
    lg.propagate = False
    lg.addHandler(Retries())

    def hook(resp):
        per_thread[threading.get_ident()]["codes"][resp.status_code] += 1

    def client():
        return openai.OpenAI(base_url=base, api_key="none",
                             http_client=openai.DefaultHttpxClient(event_hooks={"response": [hook]}))

    def ask(cl, chat, stream, got):
        kw = dict(model="stories260K", max_tokens=16, temperature=0, stream=stream)
        if chat:
            r = cl.chat.completions.create(messages=[{"role": "user", "content": PROMPT}], **kw)
        else:
            r = cl.completions.create(prompt=PROMPT, **kw)
        if not stream:
            return r.choices[0].message.content if chat else r.choices[0].text
        text = ""
        for ch in r:
            piece = (ch.choices[0].delta.content if chat else ch.choices[0].text) if ch.choices else None
            if piece:
                got[0] += 1
                text += piece
        return text

    ref = {c: ask(client(), c, False, [0]) for c in (False, True)}
    check(all(ref.values()), f"{L}: greedy references ({ref})")
    log_calls = []  # (kind, t_start, t_end, retries, outcome, detail)
    lock = threading.Lock()
    t_start = time.monotonic()
    t_end = t_start + SDK_S
    kinds = [(False, False), (True, False), (False, True), (True, True)]  # (chat, stream)

    def loop(chat, stream):
        cl = client()
        me = per_thread[threading.get_ident()]
        while time.monotonic() < t_end:
            t1, r0, got = time.monotonic(), me["retries"], [0]
            try:
                text = ask(cl, chat, stream, got)
                out = ("ok" if text == ref[chat] else "wrong", text)
            except openai.APIError as e:
                out = ("cut" if stream and got[0] else "failed", f"{type(e).__name__}: {e}")
            except Exception as e:  # anything else the client raises is a failure too
                out = ("failed", f"{type(e).__name__}: {e}")
            with lock:
                log_calls.append(((chat, stream), t1, time.monotonic(), me["retries"] - r0, *out))

    ths = [threading.Thread(target=loop, args=k, daemon=True) for k in kinds]
    for t in ths:
        t.start()
    # /health watched from here: when the fault shows and when the service is back
    while time.monotonic() < t_start + SDK_KILL_AT:
        time.sleep(0.1)
    t_kill = time.monotonic()
    os.kill(old[2], signal.SIGKILL)
    t_fault = t_back = None
    while time.monotonic() < t_kill + 30:
        st, _, _ = s.health(timeout=2)
        if t_fault is None and st != 200:
            t_fault = time.monotonic()
        if t_fault is not None and st == 200:
            t_back = time.monotonic()
            break
        time.sleep(0.05)
    for t in ths:
        t.join(SDK_S + 60)
    check(not any(t.is_alive() for t in ths), f"{L}: every client thread finished")
    calls = list(log_calls)
    by = collections.Counter(c[4] for c in calls)
    n_plain = sum(1 for c in calls if not c[0][1])
    n_stream = len(calls) - n_plain
    retries = sum(c[3] for c in calls)
    codes = collections.Counter()
    for v in list(per_thread.values()):
        codes.update(v["codes"])
    after = sum(1 for c in calls if c[4] == "ok" and c[1] > (t_back or t_kill))
    results.update({"sdk requests": len(calls), "sdk plain": n_plain, "sdk streams": n_stream,
                    "sdk retries": retries, "sdk statuses": dict(codes),
                    "sdk cut streams": by["cut"],
                    "sdk fault seen after kill": t_fault and t_fault - t_kill,
                    "sdk service back after kill": t_back and t_back - t_kill,
                    "sdk slowest request": max((c[2] - c[1]) for c in calls) if calls else None,
                    "sdk requests retried": sum(1 for c in calls if c[3])})
    failed = [c for c in calls if c[4] in ("failed", "wrong")]
    check(not failed, f"{L}: zero failed requests: {len(calls)} ({n_plain} plain, {n_stream} "
                      f"streams), {retries} retries by the SDK, statuses seen {dict(codes)}; "
                      f"failed: {[(c[0], round(c[1] - t_kill, 2), c[5][:200]) for c in failed[:4]]}")
    check(retries >= 1 and codes[503] >= 1,
          f"{L}: the fault reached the clients (503s seen and retried: {codes[503]}, {retries})")
    cut = [c for c in calls if c[4] == "cut"]
    check(len(cut) <= 2 and all("pipeline_fault" in c[5] or "rank 2" in c[5] for c in cut) and
          all(c[1] < (t_fault or t_kill) + 1 for c in cut),
          f"{L}: streams cut after their first tokens: {len(cut)} (at most the 2 running at the "
          f"kill), each with the SSE error naming rank 2: {[c[5][:160] for c in cut]}")
    check(t_back is not None and after >= 10,
          f"{L}: served again {'%.2f s' % (t_back - t_kill) if t_back else 'never'} after the "
          f"kill; {after} successful requests after that")
    check(results["sdk slowest request"] is not None and results["sdk slowest request"] < 15,
          f"{L}: the slowest request (retries included) took {results['sdk slowest request']:.2f} s")
    log = s.text()
    new = s.ranks()
    check(log.count("restart #1") == 1 and "restart #2" not in log and
          all(new.get(k) != old.get(k) for k in (0, 1, 2)) and not any(alive(p) for p in old.values()),
          f"{L}: the supervisor restarted the job once ({old} -> {new})")
    rc = s.term()
    check(rc == 0, f"{L}: SIGTERM: the supervisor exits 0 (rc={rc})")
    no_leftovers(check, s, L)


# ---- late: collected last ----------------------------------------------------------------------

def test_late(late, check):
    """The 'late' case, started in the background by the `late` fixture."""
    late.join(LATE_S + 180)
    check(not late.is_alive(), "late: the case finished")
    check.failures.extend(late.check.failures)
    if results.get("late greedy") and results.get("disconnect greedy"):
        check(results["late greedy"] == results["disconnect greedy"],
              "late: the completion after the late start equals the greedy answer of another job")
