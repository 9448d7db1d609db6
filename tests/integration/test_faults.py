"""Fault injection on `baton serve --ranks 3` (docs/faults.md): kill -9 of rank 1, rank 2 and
rank 0, and SIGSTOP of rank 1, each in the middle of a streaming and a non-streaming request.
Asserts what clients see (503 + Retry-After + an OpenAI error naming the rank, an SSE error event
and [DONE], all within 5 s of the fault or of the step deadline; a closed connection, not a hang,
when rank 0 itself dies), that /health turns 503 naming the rank and /metrics counts the fault,
that the service comes back by itself on the same port, and that no process of an old job is
left. Then SIGSTOP of rank 0 (ranks 1 and 2 leave by themselves) and, last, SIGTERM: a running
stream drains and finishes normally, a new request gets 503, the supervisor exits 0. One
`baton serve` (the module's fixture) for every case, in this order: each case starts from the
service the one before left; everything bounded in time.

    tests/integration/run_pytest.sh 140 test_faults.py   (env BATON_BUILD, BATON_SHARED)
"""
import http.client
import json
import os
import re
import signal
import threading
import time

import pytest

from harness import (MODEL, Serve, alive, completion, open_stream, rank_pids, sse_lines,
                     wait_exit, wait_for)

HB, STEP_TIMEOUT = 0.2, 2.0
recoveries = []

if not os.path.exists(MODEL):
    pytest.skip(f"{MODEL} not found", allow_module_level=True)


@pytest.fixture(scope="module")
def serve(request):
    """The one `baton serve --ranks 3` of every case; its log is shown when a case failed, the
    recovery times at the end."""
    failed = request.session.testsfailed
    s = Serve("-m", MODEL, "--ranks", "3", "--heartbeat-interval", str(HB), "--step-timeout",
              str(STEP_TIMEOUT), "--test-step-delay-ms", "40", "-t", "1", "-c", "512",
              name="faults")
    yield s
    s.close(show_log=request.session.testsfailed > failed)
    print()
    for label, dt in recoveries:
        print(f"recovery: {label}: {'%.2f s' % dt if dt is not None else 'none'} to the first "
              "success")


def recovery(s, label, t0):
    """Wait (at most 20 s) for a successful completion: (ok, seconds since t0), kept for the
    summary."""
    ok = s.wait_ok(timeout=20)
    dt = time.monotonic() - t0
    recoveries.append((label, dt if ok else None))
    return ok, dt


def job(s):
    """The current job's processes {pid: comm} and {rank: pid} of its rank processes."""
    procs = s.descendants()
    return procs, rank_pids(procs)


class Req(threading.Thread):
    """A long completion in the background; records when it ended and what it got."""

    def __init__(self, s, stream, max_tokens=400):
        super().__init__(daemon=True)
        self.s, self.stream, self.max_tokens = s, stream, max_tokens
        self.status, self.headers, self.body = None, {}, ""
        self.first = threading.Event()  # first byte of the body (stream) or headers sent
        self.t_end = None
        self.error = None

    def run(self):
        c = None
        try:
            c, r = open_stream(self.s.port, "/v1/completions",
                               completion(self.max_tokens, stream=self.stream), 60)
            self.status, self.headers = r.status, {k.lower(): v for k, v in r.getheaders()}
            chunks = []
            for line in sse_lines(r):
                chunks.append(line.decode())
                if self.stream and line.startswith(b"data: {"):
                    self.first.set()
            self.body = "".join(chunks)
        except (OSError, http.client.HTTPException) as e:
            self.error = repr(e)
        finally:
            self.t_end = time.monotonic()
            self.first.set()
            if c:
                c.close()


def health_watch(s, stop, seen):
    """Poll /health until stop; keep the first 503 that reports a fault, and /metrics then."""
    while not stop.is_set():
        st, _, body = s.try_request("GET", "/health", timeout=1)
        if st == 503 and '"fault"' in body and "health" not in seen:
            seen["health"] = body
            seen["metrics"] = s.try_request("GET", "/metrics", timeout=1)[2]
        time.sleep(0.02)


def running_tokens(s, timeout=20):
    """A streaming and a non-streaming request, both generating (the stream has sent a chunk)."""
    st, ne = Req(s, True), Req(s, False)
    st.start()
    ne.start()
    ok = st.first.wait(timeout) and st.error is None and ne.t_end is None
    return st, ne, ok


def pipeline_fault(s, victim, how, kind, check):
    """kill -9 (how='kill') or SIGSTOP (how='stop') rank `victim` mid-request; check the answers,
    /health, /metrics, recovery and that the old job is gone."""
    label = f"{'kill -9' if how == 'kill' else 'SIGSTOP'} of rank {victim}"
    old, ranks = job(s)
    check(set(ranks) == {0, 1, 2}, f"{label}: ranks 0, 1, 2 found ({ranks})")
    if victim not in ranks:
        return
    st, ne, ok = running_tokens(s)
    check(ok, f"{label}: a stream and a plain request are generating")
    seen, stop = {}, threading.Event()
    w = threading.Thread(target=health_watch, args=(s, stop, seen), daemon=True)
    w.start()
    t0 = time.monotonic()
    os.kill(ranks[victim], signal.SIGKILL if how == "kill" else signal.SIGSTOP)
    # a hang is caught by the step deadline: answers within 5 s of it; an exit within 5 s
    bound = 5.0 + (STEP_TIMEOUT if how == "stop" else 0.0)
    st.join(bound + 5)
    ne.join(bound + 5)
    for r, what in ((ne, "plain"), (st, "stream")):
        dt = (r.t_end - t0) if r.t_end else None
        check(dt is not None and dt < bound,
              f"{label}: the {what} request is answered within {bound:.0f} s "
              f"({'%.2f s' % dt if dt is not None else 'still waiting'})")
    check(ne.status == 503, f"{label}: plain request status 503 (got {ne.status}, {ne.error})")
    check("retry-after" in ne.headers, f"{label}: plain request has Retry-After")
    try:
        err = json.loads(ne.body)["error"]
    except (ValueError, KeyError, TypeError):
        err = {}
    check(err.get("code") == "pipeline_fault" and f"rank {victim}" in err.get("message", ""),
          f"{label}: the OpenAI error names rank {victim} ({err.get('message', ne.body[:200])!r})")
    check(st.status == 200 and re.search(r'data: \{"error":', st.body) is not None and
          f"rank {victim}" in st.body and st.body.rstrip().endswith("data: [DONE]"),
          f"{label}: the stream ends with an SSE error event naming the rank, then [DONE]")
    ok, dt = recovery(s, label, t0)
    check(ok and dt < 20, f"{label}: the service is back on the same port ({dt:.2f} s after the fault)")
    stop.set()
    w.join(5)
    h = seen.get("health", "")
    check(f"rank {victim}" in h, f"{label}: /health was 503 naming rank {victim} ({h[:300]!r})")
    m = re.search(r'baton_faults_total\{kind="%s"\} (\d+)' % kind, seen.get("metrics", ""))
    check(m is not None and int(m.group(1)) >= 1,
          f"{label}: /metrics counted a fault of kind {kind}")
    if how == "stop":
        os.kill(ranks[victim], signal.SIGCONT) if alive(ranks[victim]) else None
    left = [p for p in old if alive(p)]
    check(not left, f"{label}: no process of the old job is left ({len(old)} were running; left: "
                    f"{[(p, old[p]) for p in left]})")
    st2, _, _ = s.try_request("GET", "/health", timeout=2)
    check(st2 == 200, f"{label}: /health is 200 again")


def rank0_kill(s, check):
    label = "kill -9 of rank 0"
    old, ranks = job(s)
    st, ne, ok = running_tokens(s)
    check(ok and 0 in ranks, f"{label}: a stream and a plain request are generating")
    t0 = time.monotonic()
    os.kill(ranks[0], signal.SIGKILL)
    st.join(10)
    ne.join(10)
    for r, what in ((ne, "plain"), (st, "stream")):
        dt = (r.t_end - t0) if r.t_end else None
        ended = r.error is not None or r.status != 200 or not r.body.rstrip().endswith("[DONE]")
        check(dt is not None and dt < 5 and ended,
              f"{label}: the {what} request ends with an error or a closed connection, no hang "
              f"({'%.2f s' % dt if dt is not None else 'still waiting'}: {r.error or r.status})")
    ok, dt = recovery(s, label, t0)
    check(ok, f"{label}: the service is back on the same port ({dt:.2f} s after the kill)")
    left = [p for p in old if alive(p)]
    check(not left, f"{label}: no process of the old job is left ({[(p, old[p]) for p in left]})")


def orphans(s, check):
    """SIGSTOP of rank 0 (as if it hung or its host were cut off): ranks 1 and 2 hear nothing
    from it and leave by themselves (exit 75) after heartbeat-interval x misses x 2 = 1.2 s; the
    supervisor hears no "alive" from it for 3 s, ends the job (rank 0 included) and restarts."""
    label = "SIGSTOP of rank 0"
    old, ranks = job(s)
    check(set(ranks) == {0, 1, 2}, f"{label}: ranks 0, 1, 2 found")
    if set(ranks) != {0, 1, 2}:
        return
    t0 = time.monotonic()
    os.kill(ranks[0], signal.SIGSTOP)
    gone = wait_for(lambda: None if alive(ranks[1]) or alive(ranks[2]) else time.monotonic() - t0,
                    t0 + 8 - time.monotonic())
    check(gone is not None and gone < 5,
          f"{label}: ranks 1 and 2 leave by themselves ({'%.2f s' % gone if gone else 'still there'})")
    check("nothing heard from rank 0" in s.text(), f"{label}: the ranks log why they left")
    ended = wait_for(lambda: None if alive(ranks[0]) else time.monotonic() - t0,
                     t0 + 15 - time.monotonic())
    check(ended is not None and ended < 8,
          f"{label}: the supervisor ends the stopped rank 0 "
          f"({'%.2f s' % ended if ended else 'still there'} after the SIGSTOP)")
    check("gave no sign of life" in s.text(), f"{label}: the supervisor logs why")
    ok, dt = recovery(s, label, t0)
    check(ok, f"{label}: the service is back by itself ({dt:.2f} s after the SIGSTOP)")
    left = [p for p in old if alive(p)]
    check(not left, f"{label}: no process of the old job is left ({[(p, old[p]) for p in left]})")


def drain(s, check):
    """SIGTERM to `baton serve` while a stream runs: the stream finishes normally (drain), a new
    request meanwhile gets 503, the supervisor exits 0 and leaves no process."""
    label = "SIGTERM (drain)"
    old, _ = job(s)
    r = Req(s, True, max_tokens=40)
    r.start()
    check(r.first.wait(20) and r.error is None, f"{label}: a stream is generating")
    t0 = time.monotonic()
    s.p.send_signal(signal.SIGTERM)
    # until rank 0 says the drain began
    wait_for(lambda: r.t_end is not None or "draining" in s.text(), t0 + 5 - time.monotonic(),
             interval=0.02)
    refused = None
    while time.monotonic() - t0 < 5 and r.t_end is None:
        st, _, body = s.try_request("POST", "/v1/completions", completion(), timeout=2)
        if st is not None:
            refused = (st, body)
            break
        time.sleep(0.02)
    r.join(15)
    check(refused is None or refused[0] == 503,
          f"{label}: a new request during the drain gets 503 ({refused and refused[0]})")
    check(r.status == 200 and '"error"' not in r.body and '"finish_reason":"length"' in r.body and
          r.body.rstrip().endswith("data: [DONE]"),
          f"{label}: the running stream finishes normally (finish_reason length, [DONE])")
    rc = wait_exit(s.p, 15)
    check(rc == 0, f"{label}: the supervisor exits 0 (rc={rc}, {time.monotonic() - t0:.2f} s)")
    check("draining" in s.text() and "drained" in s.text(), f"{label}: rank 0 logged the drain")
    left = [p for p in old if alive(p)]
    check(not left, f"{label}: no process of the job is left ({[(p, old[p]) for p in left]})")


# ---- the cases, in order ----------------------------------------------------------------------

def test_first_completion(serve, check):
    check(serve.wait_port() is not None, "the supervisor reports its port")
    check(serve.wait_ok(timeout=60), "first completion succeeds")


def test_kill_rank1(serve, check):
    pipeline_fault(serve, 1, "kill", "rank_exit", check)


def test_kill_rank2(serve, check):
    pipeline_fault(serve, 2, "kill", "rank_exit", check)


def test_kill_rank0(serve, check):
    rank0_kill(serve, check)


def test_stop_rank1(serve, check):
    pipeline_fault(serve, 1, "stop", "step_timeout", check)


def test_stop_rank0(serve, check):
    orphans(serve, check)


def test_restarts_logged(serve, check):
    """After the cases above (three of them end in exit code 75)."""
    check(serve.text().count("with code 75") >= 3, "the supervisor logged restarts after code 75")


def test_drain(serve, check):
    drain(serve, check)
