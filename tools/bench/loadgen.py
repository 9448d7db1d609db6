#!/usr/bin/env python3
"""Load benchmark for baton's OpenAI API (python3 stdlib only; loopback only; bounded).

N concurrent clients send completions of up to --max-tokens tokens, streaming or not, until
--requests requests in all are done (or --duration seconds passed). Prints requests/s, generated
tokens/s (from the responses' usage), and p50/p95 of time-to-first-token and of latency.

    tools/bench/loadgen.py --port 8080 --clients 4 --requests 200 [--stream] [--json]

Start the server yourself (e.g. `build/baton serve -m M.gguf --ranks 2 --parallel 4`) or let the
tool start one with --serve "ARGS" (it runs `BUILD/baton serve --port 0 ARGS`, waits for
/health, measures, and stops it)."""
import argparse
import http.client
import ipaddress
import json
import os
import socket
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "../../tests/integration"))
from harness import BUILD, start_healthy  # noqa: E402


def loopback(host):
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def one_request(host, port, body, stream, timeout):
    """Returns (ok, ttft_s or None, latency_s, completion_tokens)."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("POST", "/v1/completions", body=json.dumps(body),
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        if r.status != 200:
            r.read()
            return False, None, time.perf_counter() - t0, 0
        if not stream:
            data = json.loads(r.read())
            dt = time.perf_counter() - t0
            return True, None, dt, data["usage"]["completion_tokens"]
        ttft, tokens, buf = None, 0, b""
        while True:
            chunk = r.read1(65536) if hasattr(r, "read1") else r.read(4096)
            if not chunk:
                break
            buf += chunk
            while b"\n\n" in buf:
                ev, buf = buf.split(b"\n\n", 1)
                if not ev.startswith(b"data: "):
                    continue
                payload = ev[6:]
                if payload == b"[DONE]":
                    return True, ttft, time.perf_counter() - t0, tokens
                obj = json.loads(payload)
                if obj.get("usage"):
                    tokens = obj["usage"]["completion_tokens"]
                for ch in obj.get("choices", []):
                    if ch.get("text") and ttft is None:
                        ttft = time.perf_counter() - t0
        return False, ttft, time.perf_counter() - t0, tokens
    except (OSError, http.client.HTTPException, ValueError, KeyError):
        return False, None, time.perf_counter() - t0, 0
    finally:
        conn.close()


def run_load(host, port, clients, requests, duration, max_tokens, stream, prompt, timeout,
             ignore_eos=False):
    body = {"model": "any", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.8,
            "seed": 1}
    if ignore_eos:
        body["ignore_eos"] = True
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    lock = threading.Lock()
    left = [requests]
    res = []
    deadline = time.perf_counter() + duration

    def client():
        while True:
            with lock:
                if left[0] <= 0 or time.perf_counter() > deadline:
                    return
                left[0] -= 1
            r = one_request(host, port, body, stream, timeout)
            with lock:
                res.append(r)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ok = [r for r in res if r[0]]
    toks = sum(r[3] for r in ok)
    lat = [r[2] for r in ok]
    ttft = [r[1] for r in ok if r[1] is not None]
    return {
        "clients": clients, "stream": stream, "max_tokens": max_tokens, "requests": len(res),
        "failed": len(res) - len(ok), "wall_s": wall,
        "requests_per_s": len(ok) / wall if wall > 0 else 0.0,
        "tokens_per_s": toks / wall if wall > 0 else 0.0,
        "mean_tokens": toks / len(ok) if ok else 0.0,
        "ttft_p50_ms": pct(ttft, 50) * 1e3, "ttft_p95_ms": pct(ttft, 95) * 1e3,
        "latency_p50_ms": pct(lat, 50) * 1e3, "latency_p95_ms": pct(lat, 95) * 1e3,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--serve", help="start `baton serve --port 0 SERVE` from --build and use it")
    ap.add_argument("--build", default=BUILD)
    ap.add_argument("--clients", default="4", help="comma-separated list, e.g. 1,4,16")
    ap.add_argument("--requests", type=int, default=100, help="per measurement (bound)")
    ap.add_argument("--duration", type=float, default=120, help="seconds per measurement (bound)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--prompt", default="Once upon a time")
    ap.add_argument("--mode", default="both", choices=["stream", "plain", "both"])
    ap.add_argument("--timeout", type=float, default=60, help="per request")
    ap.add_argument("--ignore-eos", action="store_true",
                    help="send ignore_eos: every answer is --max-tokens long")
    ap.add_argument("--json", action="store_true", help="one JSON object per line")
    a = ap.parse_args()
    if not loopback(a.host):
        sys.exit(f"loadgen: {a.host} is not a loopback address; this tool only loads local servers")
    srv = start_healthy(a.build, a.serve.split(), name="loadgen") if a.serve else None
    port = srv.port if srv else a.port
    modes = {"stream": [True], "plain": [False], "both": [False, True]}[a.mode]
    rows = []
    try:
        for n in [int(x) for x in a.clients.split(",")]:
            for stream in modes:
                r = run_load(a.host, port, n, a.requests, a.duration, a.max_tokens, stream,
                             a.prompt, a.timeout, a.ignore_eos)
                rows.append(r)
                if a.json:
                    print(json.dumps(r), flush=True)
    finally:
        if srv:
            srv.stop()
    if not a.json:
        print("| clients | stream | req | failed | req/s | gen tok/s | tok/req | TTFT p50/p95 ms "
              "| latency p50/p95 ms |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            ttft = ("-" if not r["stream"] else
                    f"{r['ttft_p50_ms']:.1f} / {r['ttft_p95_ms']:.1f}")
            print(f"| {r['clients']} | {'yes' if r['stream'] else 'no'} | {r['requests']} | "
                  f"{r['failed']} | {r['requests_per_s']:.2f} | {r['tokens_per_s']:.1f} | "
                  f"{r['mean_tokens']:.1f} | {ttft} | "
                  f"{r['latency_p50_ms']:.1f} / {r['latency_p95_ms']:.1f} |")
    sys.exit(1 if any(r["failed"] for r in rows) else 0)


if __name__ == "__main__":
    main()
