#!/usr/bin/env python3
"""Megatron's failure, measured: a pipeline that sits idle after init must still answer, and keep
answering. Starts `baton serve --ranks R`, waits until every rank is ready, lets it idle --idle
seconds (default 300) while measuring each rank process's CPU from /proc, then sends the first
request, then --requests more (default 1000) from --clients threads, and checks that every rank
process is still the same one and alive. python3 stdlib; loopback only; bounded.

    tools/bench/idle_soak.py -m MODEL.gguf [--ranks 3] [--idle 300] [--requests 1000]
        [--clients 4] [--max-tokens 8] [--build build] [-- extra baton serve options]

Prints one line per finding and exits non-zero when a promise does not hold."""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        st = f.read()
    fields = st[st.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def descendants(root):
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    st = f.read()
                kids.setdefault(int(st[st.rindex(")") + 2:].split()[1]), []).append(int(d))
            except OSError:
                pass
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        for k in kids.get(p, []):
            out.append(k)
            todo.append(k)
    return out


def request(port, path, body=None, timeout=120):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, {}
    except (urllib.error.URLError, OSError) as e:
        return 0, {"error": str(e)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-m", "--model", required=True)
    p.add_argument("--ranks", type=int, default=3)
    p.add_argument("--idle", type=float, default=300)
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=8)
    p.add_argument("--build", default=os.path.join(HERE, "../../build"))
    p.add_argument("extra", nargs="*")
    a = p.parse_args()
    bad = 0

    def finding(ok, what):
        nonlocal bad
        bad += not ok
        print(f"{'ok' if ok else 'FAIL'}: {what}", flush=True)

    log = tempfile.NamedTemporaryFile("w+", prefix="baton-soak-", suffix=".log")
    cmd = [os.path.join(a.build, "baton"), "serve", "-m", a.model, "--ranks", str(a.ranks),
           "--port", "0", "-t", "1", "--parallel", str(a.clients), *a.extra]
    job = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    try:
        port, end = None, time.monotonic() + 120
        while port is None and time.monotonic() < end and job.poll() is None:
            log.flush()
            m = re.search(r"serving on 127\.0\.0\.1:(\d+)", open(log.name).read())
            port = int(m.group(1)) if m else None
            time.sleep(0.1)
        if port is None:
            sys.exit(f"idle_soak: baton serve did not start:\n{open(log.name).read()[-3000:]}")
        ready, end = False, time.monotonic() + 600
        while not ready and time.monotonic() < end:
            st, h = request(port, "/health", timeout=5)
            ready = st == 200 and len(h.get("ranks", [])) == a.ranks
            time.sleep(0.2)
        finding(ready, f"/health: {a.ranks} ranks ready")
        pids = sorted(q for q in descendants(job.pid) if comm(q) in ("baton-server",
                                                                      "baton-rankd"))
        finding(len(pids) == a.ranks, f"rank processes {pids}")
        t0, w0 = {q: cpu_s(q) for q in pids}, time.monotonic()
        print(f"idling {a.idle:.0f} s ...", flush=True)
        time.sleep(a.idle)  # the measurement: the pipeline sits idle after init
        wall = time.monotonic() - w0
        for q in pids:
            pct = 100 * (cpu_s(q) - t0[q]) / wall
            finding(pct < 2.0, f"idle CPU of {comm(q)} pid {q} over {wall:.0f} s: {pct:.3f} % "
                    f"(< 2 %), RSS {rss_mib(q):.0f} MiB")
        st, r = request(port, "/v1/completions", {"prompt": "Once upon a time",
                                                  "max_tokens": a.max_tokens, "temperature": 0})
        finding(st == 200 and r["choices"][0]["text"],
                f"first request after {wall:.0f} s idle: {st}")
        ok, lock, nxt = [0, 0], threading.Lock(), [0]

        def client():
            while True:
                with lock:
                    if nxt[0] >= a.requests:
                        return
                    k = nxt[0]
                    nxt[0] += 1
                st, r = request(port, "/v1/completions",
                                {"prompt": f"Once upon a time {k}", "max_tokens": a.max_tokens,
                                 "temperature": 0.7, "seed": k})
                good = st == 200 and r.get("choices", [{}])[0].get("finish_reason") in (
                    "length", "stop")
                with lock:
                    ok[0 if good else 1] += 1

        w1 = time.monotonic()
        threads = [threading.Thread(target=client) for _ in range(a.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        dt = time.monotonic() - w1
        finding(ok[1] == 0 and ok[0] == a.requests,
                f"{ok[0]} of {a.requests} requests succeeded in {dt:.1f} s "
                f"({a.requests / dt:.1f} req/s), {ok[1]} failed")
        alive = [q for q in pids if comm(q) in ("baton-server", "baton-rankd")]
        finding(alive == pids, f"every rank process alive and the same after the requests "
                f"({len(alive)} of {len(pids)})")
    finally:
        try:
            os.killpg(job.pid, signal.SIGTERM)
            job.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            os.killpg(job.pid, signal.SIGKILL)
    print(f"{bad} failed finding(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
