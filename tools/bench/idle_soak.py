#!/usr/bin/env python3
"""Megatron's failure, measured: a pipeline that sits idle after init must still answer, and keep
answering. Starts `baton serve --ranks R`, waits until every rank is ready, lets it idle --idle
seconds (default 300) while measuring each rank process's CPU from /proc, then sends the first
request, then --requests more (default 1000) from --clients threads, and checks that every rank
process is still the same one and alive. python3 stdlib; loopback only; bounded.

    tools/bench/idle_soak.py -m MODEL.gguf [--ranks 3] [--idle 300] [--requests 1000]
        [--clients 4] [--max-tokens 8] [--build build] [-- extra baton serve options]

Prints one line per finding and exits non-zero when a promise does not hold."""
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "../../tests/integration"))
from harness import RANK_PROGRAMS, Serve, bench_parser, comm, cpu_s  # noqa: E402


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main():
    p = bench_parser(__doc__, ranks=3, clients=4, requests=1000, max_tokens=8)
    p.add_argument("--idle", type=float, default=300)
    p.add_argument("extra", nargs="*")
    a = p.parse_args()
    bad = 0

    def finding(ok, what):
        nonlocal bad
        bad += not ok
        print(f"{'ok' if ok else 'FAIL'}: {what}", flush=True)

    job = Serve("-m", a.model, "--ranks", str(a.ranks), "-t", "1", "--parallel", str(a.clients),
                *a.extra, launcher=os.path.join(a.build, "baton"), name="soak")
    try:
        if job.wait_port(timeout=120, interval=0.1) is None:
            sys.exit(f"idle_soak: baton serve did not start:\n{job.text()[-3000:]}")
        ready = job.wait_ready(a.ranks, timeout=600, interval=0.2) is not None
        finding(ready, f"/health: {a.ranks} ranks ready")
        pids = sorted(q for q, name in job.descendants().items() if name in RANK_PROGRAMS)
        finding(len(pids) == a.ranks, f"rank processes {pids}")
        t0, w0 = {q: cpu_s(q) for q in pids}, time.monotonic()
        print(f"idling {a.idle:.0f} s ...", flush=True)
        time.sleep(a.idle)  # the measurement: the pipeline sits idle after init
        wall = time.monotonic() - w0
        for q in pids:
            pct = 100 * (cpu_s(q) - t0[q]) / wall
            finding(pct < 2.0, f"idle CPU of {comm(q)} pid {q} over {wall:.0f} s: {pct:.3f} % "
                    f"(< 2 %), RSS {rss_mib(q):.0f} MiB")
        st, r = job.get_json("/v1/completions", {"prompt": "Once upon a time",
                                                 "max_tokens": a.max_tokens, "temperature": 0},
                             timeout=120)
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
                st, r = job.get_json("/v1/completions",
                                     {"prompt": f"Once upon a time {k}",
                                      "max_tokens": a.max_tokens, "temperature": 0.7, "seed": k},
                                     timeout=120)
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
        alive = [q for q in pids if comm(q) in RANK_PROGRAMS]
        finding(alive == pids, f"every rank process alive and the same after the requests "
                f"({len(alive)} of {len(pids)})")
    finally:
        job.stop(timeout=60)
    print(f"{bad} failed finding(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
