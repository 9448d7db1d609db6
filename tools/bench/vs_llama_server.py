#!/usr/bin/env python3
"""baton's server and llama.cpp's llama-server side by side under the same load (python3 stdlib;
loopback only; bounded). For every model and every round, baton is started, loaded at each client
count (plain, then streamed), stopped; then llama-server the same way. The figure of a cell is the
median over the rounds and the ratio baton / llama-server of those medians; the per-round ratios
are printed too, as a range. Both servers get the same threads, slots, per-slot context and
requests (64-token completions with `ignore_eos`, so every answer is exactly --max-tokens long).

    tools/bench/vs_llama_server.py --llama-server PATH/llama-server MODEL.gguf [MODEL.gguf ...]
        [--clients 1,4,16] [--rounds 2] [--threads 2] [--slots 4] [--ctx 256]
        [--requests-per-client 8] [--baton "serve --ranks 1"] [--build build] [--json FILE]

baton runs as `BUILD/baton serve --port 0 -m MODEL -t T --parallel S -c CTX --queue 256`
(plus --baton's words); llama-server as `llama-server -m MODEL -t T -tb T -np S -c S*CTX
--port P --host 127.0.0.1` (its -c is shared by the slots)."""
import argparse
import json
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "../../tests/integration"))
import loadgen  # noqa: E402
from harness import BUILD, Job, free_port, healthy, start_healthy  # noqa: E402


def llama_server(binary, model, threads, slots, ctx):
    """llama-server on 127.0.0.1 (a harness Job, its output in its log) once /health answers 200
    (within 300 s); else it is stopped and RuntimeError names the log (kept then)."""
    port = free_port()
    srv = Job([binary, "-m", model, "-t", str(threads), "-tb", str(threads), "-np", str(slots),
               "-c", str(slots * ctx), "--host", "127.0.0.1", "--port", str(port)],
              name="vs-llama-server", stdout_to_log=True)
    srv.port = port
    return healthy(srv, 300, "llama-server")


def measure(port, a, clients, stream):
    return loadgen.run_load("127.0.0.1", port, clients, a.requests_per_client * clients, 600,
                            a.max_tokens, stream, a.prompt, 300, ignore_eos=True)


def one_engine(name, a, model):
    if name == "baton":
        args = [*a.baton.split()[1:], "-m", model, "-t", str(a.threads), "--parallel",
                str(a.slots), "-c", str(a.ctx), "--queue", "256"]
        srv = start_healthy(a.build, args, name="vs-baton")
    else:
        srv = llama_server(a.llama_server, model, a.threads, a.slots, a.ctx)
    rows = {}
    try:
        for n in a.clients:
            for stream in (False, True):
                r = measure(srv.port, a, n, stream)
                if r["failed"]:
                    sys.exit(f"vs_llama_server: {name} failed {r['failed']} requests")
                rows[(n, stream)] = r
    finally:
        srv.stop()
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--llama-server", required=True)
    p.add_argument("--build", default=BUILD)
    p.add_argument("--baton", default="serve --ranks 1", help="baton subcommand and options")
    p.add_argument("--clients", default="1,4,16")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--slots", type=int, default=4)
    p.add_argument("--ctx", type=int, default=256, help="per slot")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--requests-per-client", type=int, default=8)
    p.add_argument("--prompt", default="Once upon a time")
    p.add_argument("--json", help="write every measurement here")
    a = p.parse_args()
    a.clients = [int(x) for x in a.clients.split(",")]
    if a.baton.split()[0] != "serve":
        sys.exit("vs_llama_server: --baton must start with 'serve'")
    allrows = []
    for model in a.models:
        runs = {"baton": [], "llama": []}
        for rnd in range(a.rounds):
            for eng in ("baton", "llama"):
                load = os.getloadavg()[0]
                rows = one_engine(eng, a, model)
                runs[eng].append(rows)
                for (n, stream), r in rows.items():
                    allrows.append({"model": os.path.basename(model), "engine": eng,
                                    "round": rnd, "load_before": load, **r})
        print(f"\n{os.path.basename(model)}: {a.rounds} rounds, {a.threads} threads, {a.slots} "
              f"slots, {a.max_tokens} tokens per request, medians (baton: `{a.baton}`)\n")
        print("| clients | stream | baton req/s | llama-server req/s | ratio (rounds) | baton tok/s "
              "| llama-server tok/s | baton TTFT p50/p95 ms | llama-server TTFT p50/p95 ms | "
              "baton latency p50/p95 ms | llama-server latency p50/p95 ms |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for n in a.clients:
            for stream in (False, True):
                def med(eng, key):
                    return statistics.median(r[(n, stream)][key] for r in runs[eng])
                b, l_ = med("baton", "requests_per_s"), med("llama", "requests_per_s")
                per = [rb[(n, stream)]["requests_per_s"] / rl[(n, stream)]["requests_per_s"]
                       for rb, rl in zip(runs["baton"], runs["llama"])]
                ttft = ("{:.0f} / {:.0f}".format(med("baton", "ttft_p50_ms"),
                                                 med("baton", "ttft_p95_ms")),
                        "{:.0f} / {:.0f}".format(med("llama", "ttft_p50_ms"),
                                                 med("llama", "ttft_p95_ms")))
                if not stream:
                    ttft = ("-", "-")
                print(f"| {n} | {'yes' if stream else 'no'} | {b:.2f} | {l_:.2f} | "
                      f"**{b / l_:.2f}×** ({min(per):.2f}–{max(per):.2f}) | "
                      f"{med('baton', 'tokens_per_s'):.1f} | {med('llama', 'tokens_per_s'):.1f} | "
                      f"{ttft[0]} | {ttft[1]} | "
                      f"{med('baton', 'latency_p50_ms'):.0f} / {med('baton', 'latency_p95_ms'):.0f} | "
                      f"{med('llama', 'latency_p50_ms'):.0f} / {med('llama', 'latency_p95_ms'):.0f} |",
                      flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(allrows, f, indent=1)


if __name__ == "__main__":
    main()
