#!/usr/bin/env python3
"""Multi-turn chat traffic against baton and llama.cpp's llama-server, alternately in one run
(python3 stdlib; loopback only; bounded). The load is baton-chatbench (C): every client resends
its whole conversation each turn (a shared system prompt, its questions, the answers so far),
streamed, answers of exactly --max-tokens tokens (ignore_eos), greedy.

For every round, each engine is started, given the chat load and (unless --no-single) the
single-turn load of vs_llama_server.py (16 clients, 64-token completions, streamed), and
stopped; the next engine follows. The figure of a cell is the median over the rounds; ratios
are taken against the last engine (llama-server; without --llama-server, the last --baton).

    tools/bench/chat_vs_llama_server.py MODEL.gguf [--llama-server PATH/llama-server]
        [--baton "serve --ranks 1"] [--baton "serve --ranks 2"] [--build build]
        [--baton-old DIR] [--clients 8] [--turns 6] [--max-tokens 32] [--system-words 220]
        [--rounds 2] [--threads 2] [--slots 4] [--ctx 2048] [--json FILE]

Every --baton runs as `BUILD/baton serve -m MODEL -t T --parallel S -c CTX --queue 256 ARGS`
(ARGS: the rest of its --baton, which wins over the common options, e.g. "serve --ranks 2 -t 1")
(--baton-old DIR: the same from another build, e.g. before a change, to compare with);
llama-server as `llama-server -m MODEL -t T -tb T -np S -c S*CTX --host 127.0.0.1 --port P`
(its -c is shared by the slots; prompt caching is on by default in it)."""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "../../tests/integration"))
import loadgen  # noqa: E402
from harness import BUILD, start_healthy  # noqa: E402
from vs_llama_server import llama_server  # noqa: E402


def chat_load(a, port):
    cmd = [os.path.join(a.build, "baton-chatbench"), "--port", str(port), "--clients",
           str(a.clients), "--turns", str(a.turns), "--max-tokens", str(a.max_tokens),
           "--system-words", str(a.system_words), "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout)
    if out.returncode != 0:
        sys.exit(f"chat_vs_llama_server: chatbench failed ({out.returncode}): {out.stdout}"
                 f"{out.stderr}")
    return json.loads(out.stdout)


def single_load(a, port):
    r = loadgen.run_load("127.0.0.1", port, 16, 16 * a.single_requests, a.timeout, 64, True,
                         "Once upon a time", a.timeout, ignore_eos=True)
    if r["failed"]:
        sys.exit(f"chat_vs_llama_server: {r['failed']} single-turn requests failed")
    return r


def one_engine(a, engine):
    label, kind, build, serve = engine
    if kind == "baton":
        args = ["-m", a.model, "-t", str(a.threads), "--parallel", str(a.slots), "-c",
                str(a.ctx), "--queue", "256", *serve.split()[1:]]  # its own options win
        srv = start_healthy(build, args, timeout=300, name="chat-vs-baton")
    else:
        srv = llama_server(a.llama_server, a.model, a.threads, a.slots, a.ctx)
    try:
        row = {"engine": label, "load_before": os.getloadavg()[0], "chat": chat_load(a, srv.port)}
        if not a.no_single:
            row["single"] = single_load(a, srv.port)
    finally:
        srv.stop()
    print(f"  {label}: chat {row['chat']['req_per_s']:.3f} req/s, later-turn TTFT p50 "
          f"{row['chat']['ttft_later_p50']:.2f} s" +
          (f"; single-turn {row['single']['requests_per_s']:.3f} req/s" if "single" in row
           else ""), flush=True)
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model")
    p.add_argument("--llama-server")
    p.add_argument("--build", default=BUILD)
    p.add_argument("--baton", action="append", help="baton subcommand and options (repeatable)")
    p.add_argument("--baton-old", help="another build's directory, run with the first --baton")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--turns", type=int, default=6)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--system-words", type=int, default=220)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--slots", type=int, default=4)
    p.add_argument("--ctx", type=int, default=2048, help="per slot")
    p.add_argument("--single-requests", type=int, default=2, help="per client, single-turn load")
    p.add_argument("--no-single", action="store_true", help="the chat load only")
    p.add_argument("--timeout", type=int, default=1800)
    p.add_argument("--json", help="write every measurement here")
    a = p.parse_args()
    a.build = os.path.abspath(a.build)
    serves = a.baton or ["serve --ranks 1"]
    if any(s.split()[0] != "serve" for s in serves):
        sys.exit("chat_vs_llama_server: --baton must start with 'serve'")
    engines = [(f"baton `{s}`", "baton", a.build, s) for s in serves]
    if a.baton_old:
        engines.insert(0, (f"baton before (`{serves[0]}`)", "baton", os.path.abspath(a.baton_old),
                           serves[0]))
    if a.llama_server:
        engines.append(("llama-server", "llama", None, None))
    runs = {e[0]: [] for e in engines}
    for rnd in range(a.rounds):
        print(f"round {rnd + 1} of {a.rounds}", flush=True)
        for e in engines:
            runs[e[0]].append(one_engine(a, e))
    ref = engines[-1][0]

    def med(label, load, key):
        return statistics.median(r[load][key] for r in runs[label])

    print(f"\n{os.path.basename(a.model)}: {a.rounds} rounds, {a.threads} threads, {a.slots} slots; "
          f"chat: {a.clients} clients x {a.turns} turns, {a.system_words}-word system prompt, "
          f"{a.max_tokens}-token answers, streamed; medians\n")
    print(f"| engine | chat req/s | vs {ref} | TTFT first turn p50 s | TTFT later turns "
          f"p50 s | vs {ref} | prompt tokens from cache | single-turn req/s |")
    print("|---|---|---|---|---|---|---|---|")
    for label, *_ in engines:
        rq, tl = med(label, "chat", "req_per_s"), med(label, "chat", "ttft_later_p50")
        share = med(label, "chat", "cached_share")
        single = f"{med(label, 'single', 'requests_per_s'):.3f}" if not a.no_single else "-"
        print(f"| {label} | {rq:.3f} | **{rq / med(ref, 'chat', 'req_per_s'):.2f}×** | "
              f"{med(label, 'chat', 'ttft_first_p50'):.2f} | {tl:.2f} | "
              f"**{tl / med(ref, 'chat', 'ttft_later_p50'):.2f}×** | "
              f"{'%.0f %%' % (100 * share) if share >= 0 else 'not reported'} | {single} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(runs, f, indent=1)


if __name__ == "__main__":
    main()
