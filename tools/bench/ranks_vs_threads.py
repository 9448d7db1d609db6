#!/usr/bin/env python3
"""Aggregate generation tokens/s of the same cores used two ways: a pipeline of R ranks with one
thread each against one process with R threads, under C concurrent sequences (python3 stdlib;
loopback only; bounded). The two configurations alternate, REPS times each, so both see the same
machine noise; the figure is the median ratio pipeline / threads over the pairs.

    tools/bench/ranks_vs_threads.py -m MODEL.gguf [--ranks 2] [--clients 8] [--requests 32]
        [--max-tokens 32] [--reps 3] [--build build] [--ctx 512]

Each measurement is `tools/bench/loadgen.py --serve ...` (server started, /health waited for,
C clients sending non-streamed greedy completions of --max-tokens tokens, server stopped)."""
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "../../tests/integration"))
from harness import bench_parser  # noqa: E402


def measure(a, ranks, threads):
    serve = (f"-m {a.model} --ranks {ranks} -t {threads} --parallel {a.clients} -c {a.ctx} "
             f"--prefill-chunk 256")
    cmd = [sys.executable, os.path.join(HERE, "loadgen.py"), "--build", a.build, "--serve", serve,
           "--clients", str(a.clients), "--requests", str(a.requests), "--max-tokens",
           str(a.max_tokens), "--mode", "plain", "--json", "--timeout", "600"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not rows or rows[-1].get("failed"):
        sys.exit(f"ranks_vs_threads: {' '.join(cmd)} failed:\n{out.stdout[-2000:]}"
                 f"{out.stderr[-2000:]}")
    return rows[-1]["tokens_per_s"]


def main():
    p = bench_parser(__doc__, ranks=2, clients=8, requests=32, max_tokens=32)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--ctx", type=int, default=512)
    a = p.parse_args()
    ratios = []
    print(f"model {os.path.basename(a.model)}, {a.clients} concurrent sequences, "
          f"{a.requests} requests of {a.max_tokens} tokens per measurement")
    print("| pair | pipeline tokens/s | one process tokens/s | ratio |\n|---|---|---|---|")
    for i in range(a.reps):
        pipe = measure(a, a.ranks, 1)
        one = measure(a, 1, a.ranks)
        ratios.append(pipe / one)
        print(f"| {i + 1} | {pipe:.2f} ({a.ranks} ranks x 1 thread) | {one:.2f} (1 rank x "
              f"{a.ranks} threads) | {pipe / one:.3f} |", flush=True)
    print(f"median ratio {statistics.median(ratios):.3f} (min {min(ratios):.3f}, "
          f"max {max(ratios):.3f})")


if __name__ == "__main__":
    main()
