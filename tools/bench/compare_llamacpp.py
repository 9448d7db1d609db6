#!/usr/bin/env python3
"""Compare baton's CPU engine with llama.cpp (through llama-cpp-python) on the same GGUF files.

    /opt/oracle/bin/python tools/bench/compare_llamacpp.py MODEL.gguf [MODEL.gguf ...]
        [-k 3] [-t 2] [-p 128] [-n 64] [--n-ctx 512] [--max-load 1.5] [--load-wait 60]
        [--max-others 0.25] [--retries 3]
        [--baton-bench build-bench/baton-bench] [--baton-cli build-bench/baton-cli]
        [--flash-attn] [--json FILE]

For every model, k rounds; each round runs baton then llama.cpp (A B A B ...), each in a fresh
process. Before each run the driver waits (at most --load-wait seconds) until the 1-minute load
average is below --max-load and other processes used less than --max-others cores over the last
2 s; a run during which other processes took more than --max-others cores (from /proc/stat, less
the run's own CPU time) is repeated, at most --retries times, and the least disturbed attempt is
kept. The retry criterion is the machine's noise, never the result. The load average, the
others' CPU and the CPU time stolen by the hypervisor (/proc/stat) of every run are recorded
(--json), so a noisy measurement shows as such; the host's memory bandwidth, shared with other
guests, is not visible from inside and shows only as spread between rounds.

What is measured, the same way on both sides:
  pp  one forward pass over a batch of p prompt tokens from an empty KV cache (the token ids are
      baton-bench's: a 64-bit LCG, seed 12345, (x >> 33) % n_vocab), timed to the end of the
      pass (llama_synchronize on the llama.cpp side);
  tg  n single-token decode steps from an empty cache, the first token id 1 (BOS), each next
      token the argmax of the logits (greedy), as baton-bench does.
  Each process first does a warm-up (one pp pass and two tg steps) that is not timed; llama-bench
  also warms up once and clears the cache before every timed test. Both sides: t threads, F16 KV
  cache, the weights memory-mapped. llama.cpp: n_ctx --n-ctx, n_batch = n_ubatch = 512 (the whole
  prompt is one ubatch, as in baton); flash attention off unless --flash-attn.
  baton-bench -r 1 does one timed pp and one timed tg per process; the llama.cpp worker likewise.
  Reported: the median over the k rounds of each engine's tokens/s and the ratio of the medians;
  the ratios of the k pairs (baton / llama.cpp of the same round) are printed too, as a range.

Memory (resident set of a process at the end of a generation, against the file size):
  llama.cpp: VmRSS / VmHWM / RssAnon / RssFile of the worker at its end, and its VmRSS before
      the model was loaded (the Python interpreter, numpy, llama_cpp);
  baton: baton-bench ends with a bandwidth measurement over a >= 256 MiB scratch buffer, which
      would inflate its peak, so memory is taken from a separate, untimed baton-cli run (greedy,
      n tokens, context --n-ctx): /proc/PID/status sampled every 10 ms while it runs; reported
      is the sample with the largest VmRSS (its VmHWM, to within one sampling interval; the
      weights stay mapped until exit, so it is also the resident set at the end of generation).
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


# ----------------------------------------------------------------------------------------------
# helpers shared by the driver and the worker


def prompt_tokens(n_prompt, n_vocab):
    """The prompt token ids baton-bench uses (tools/bench.c)."""
    x, out = 12345, []
    for _ in range(n_prompt):
        x = (x * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        out.append((x >> 33) % n_vocab)
    return out


def proc_status(pid="self"):
    """Memory fields of /proc/PID/status in bytes (absent fields are left out)."""
    want = ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem")
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in want:
                    out[k] = int(v.split()[0]) * 1024
    except OSError:
        pass
    return out


def cpu_times():
    """(busy, steal): seconds of non-idle CPU time of the whole machine so far and seconds
    stolen by the hypervisor (all CPUs, /proc/stat)."""
    with open("/proc/stat") as f:
        f_ = f.readline().split()
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in f_[1:9])
    hz = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / hz, steal / hz


def cpu_busy_s():
    return cpu_times()[0]


def loadavg1():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


# ----------------------------------------------------------------------------------------------
# the llama.cpp worker (a subprocess of the driver: own memory, own threads)


def llama_worker(a):
    import ctypes

    import numpy as np

    import llama_cpp

    rss_before = proc_status()
    t_load = time.perf_counter()
    llm = llama_cpp.Llama(
        model_path=a.model,
        n_ctx=a.n_ctx,
        n_threads=a.threads,
        n_threads_batch=a.threads,
        n_batch=512,
        n_ubatch=512,
        use_mmap=True,
        flash_attn=a.flash_attn,
        verbose=False,
    )
    t_load = time.perf_counter() - t_load
    ctx = llm._ctx.ctx
    n_vocab = llm.n_vocab()
    toks = prompt_tokens(a.n_prompt, n_vocab)

    def clear():
        llm._ctx.kv_cache_clear()
        llm.reset()

    def run_pp():
        clear()
        t0 = time.perf_counter()
        llm.eval(toks)
        llama_cpp.llama_synchronize(ctx)
        return time.perf_counter() - t0

    def run_tg(n):
        clear()
        tok, gen = 1 % n_vocab, []
        t0 = time.perf_counter()
        for _ in range(n):
            llm.eval([tok])
            llama_cpp.llama_synchronize(ctx)
            p = llama_cpp.llama_get_logits_ith(ctx, -1)
            logits = np.ctypeslib.as_array(ctypes.cast(p, ctypes.POINTER(ctypes.c_float)),
                                           shape=(n_vocab,))
            tok = int(np.argmax(logits))
            gen.append(tok)
        return time.perf_counter() - t0, gen

    run_pp()
    run_tg(2)  # warm-up, as baton-bench
    pp_t, tg_t, gen = [], [], []
    for _ in range(a.reps):
        pp_t.append(run_pp())
        t, gen = run_tg(a.n_gen)
        tg_t.append(t)
    res = {
        "engine": "llama.cpp",
        "llama_cpp_python": llama_cpp.__version__,
        "system_info": llama_cpp.llama_print_system_info().decode().strip(),
        "load_s": t_load,
        "pp_tokens_per_s": a.n_prompt / statistics.median(pp_t),
        "tg_tokens_per_s": a.n_gen / statistics.median(tg_t),
        "tg_tokens": gen[:16],
        "mem": proc_status(),
        "rss_before_load": rss_before.get("VmRSS", 0),
    }
    print(json.dumps(res), flush=True)


# ----------------------------------------------------------------------------------------------
# the driver


def run_measured(cmd, poll_s=None):
    """Runs cmd; returns (stdout, stderr, rc, wall_s, machine_busy_s, last, peak): the busy CPU
    seconds of the whole machine during the run (/proc/stat) and, with poll_s, the last sample
    and the sample of the largest VmRSS of /proc/PID/status, sampled every poll_s seconds."""
    (busy0, steal0), t0 = cpu_times(), time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last, peak = {}, {}
    if poll_s:
        while p.poll() is None:
            s = proc_status(p.pid)
            if s:
                last = s
                if s.get("VmRSS", 0) >= peak.get("VmRSS", 0):
                    peak = s
            time.sleep(poll_s)
    out, err = p.communicate()
    wall = time.perf_counter() - t0
    busy, steal = cpu_times()
    run_measured.steal = (steal - steal0) / wall
    return out, err, p.returncode, wall, busy - busy0, last, peak


class ChildCPU:
    """CPU seconds of finished children (RUSAGE_CHILDREN is cumulative, so delta() gives the
    last child's), to subtract a run's own CPU from the machine's busy time."""

    def __init__(self):
        self.prev = self.now()

    @staticmethod
    def now():
        import resource

        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime, r.ru_maxrss

    def delta(self):
        cur = self.now()
        d = cur[0] - self.prev[0]
        self.prev = cur
        return d


def others_cpu_now(window_s=2.0):
    """Cores' worth of CPU the rest of the machine uses over window_s (this process is idle)."""
    b0 = cpu_busy_s()
    time.sleep(window_s)
    return (cpu_busy_s() - b0) / window_s


def wait_for_quiet(a):
    """Waits (at most a.load_wait s) until the 1-minute load average is below a.max_load and
    the other processes used less than a.max_others cores over the last 2 s. Returns (load
    average, cores used by others just before, seconds waited)."""
    t0 = time.time()
    while True:
        others = others_cpu_now()
        load = loadavg1()
        if (load < a.max_load and others < a.max_others) or time.time() - t0 >= a.load_wait:
            return load, others, time.time() - t0


def measured_run(a, what, cmd, cc):
    """One run of cmd after waiting for a quiet machine; repeated (at most a.retries more times)
    while other processes took more than a.max_others cores during it. The retry criterion is
    the machine's noise, never the result. Returns the run with the least interference."""
    best = None
    for attempt in range(1 + a.retries):
        load, others_before, waited = wait_for_quiet(a)
        out, err, rc, wall, busy, _, _ = run_measured(cmd)
        if rc != 0:
            sys.exit(f"{what} failed ({rc}): {err.strip()}")
        child = cc.delta()
        r = json.loads(out.strip().splitlines()[-1])
        r.update(others_cpu=max(0.0, (busy - child) / wall), steal=run_measured.steal,
                 load_before=load,
                 others_before=others_before, waited_s=waited, attempt=attempt + 1, wall_s=wall)
        if best is None or r["others_cpu"] < best["others_cpu"]:
            best = r
        if r["others_cpu"] < a.max_others:
            break
        print(f"#   {what}: other processes took {r['others_cpu']:.2f} cores during the run, "
              f"repeating it", file=sys.stderr, flush=True)
    best["attempts"] = attempt + 1
    return best


def baton_round(a, model, cc):
    cmd = [a.baton_bench, "-m", model, "-t", str(a.threads), "-p", str(a.n_prompt),
           "-n", str(a.n_gen), "-r", "1", "--json"]
    return measured_run(a, "baton-bench", cmd, cc)


def llama_round(a, model, cc):
    cmd = [sys.executable, os.path.abspath(__file__), "--llama-worker", "-m", model,
           "-t", str(a.threads), "-p", str(a.n_prompt), "-n", str(a.n_gen),
           "--n-ctx", str(a.n_ctx), "--reps", "1"] + (["--flash-attn"] if a.flash_attn else [])
    return measured_run(a, "llama.cpp worker", cmd, cc)


def baton_memory(a, model, cc):
    """Resident memory of a baton-cli generation (untimed)."""
    if not os.path.exists(a.baton_cli):
        return None
    cmd = [a.baton_cli, "-m", model, "-p", "The quick brown fox jumps over the lazy dog.",
           "-n", str(a.n_gen), "-c", str(a.n_ctx), "-t", str(a.threads), "--temp", "0"]
    _, err, rc, _, _, last, peak = run_measured(cmd, poll_s=0.01)
    if rc != 0:
        sys.exit(f"baton-cli failed ({rc}): {err.strip()}")
    cc.delta()
    # ru_maxrss of the children is the maximum over all children so far, so use the polled
    # peak, which is within one poll interval of it.
    return {"last": last, "peak": peak}


def kv_cache_bytes(model, n_ctx):
    """Bytes of an F16 K and V cache of n_ctx cells for the model (from its GGUF header)."""
    from gguf import GGUFReader

    r = GGUFReader(model)
    arch = bytes(r.fields["general.architecture"].parts[-1]).decode()

    def val(key):
        f = r.fields[f"{arch}.{key}"]
        return int(f.parts[f.data[0]][0])

    n_layer, n_embd, n_head = val("block_count"), val("embedding_length"), val("attention.head_count")
    n_head_kv = val("attention.head_count_kv") if f"{arch}.attention.head_count_kv" in r.fields \
        else n_head
    return 2 * n_layer * n_ctx * n_head_kv * (n_embd // n_head) * 2


def git_describe():
    """The source the binaries were presumably built from: git describe of this checkout, with
    -dirty when the work tree differs from HEAD (read-only git commands only)."""
    try:
        rev = subprocess.run(["git", "-C", ROOT, "describe", "--always"], capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "diff", "--quiet", "HEAD", "--"],
                               capture_output=True).returncode != 0
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def mib(b):
    return b / 1048576.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="*")
    ap.add_argument("-m", dest="model", help=argparse.SUPPRESS)
    ap.add_argument("-k", "--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-p", "--n-prompt", type=int, default=128)
    ap.add_argument("-n", "--n-gen", type=int, default=64)
    ap.add_argument("--n-ctx", type=int, default=512)
    ap.add_argument("--reps", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--flash-attn", action="store_true", help="llama.cpp flash attention on")
    ap.add_argument("--max-load", type=float, default=1.5)
    ap.add_argument("--load-wait", type=float, default=60.0,
                    help="longest wait for a quiet machine before each run (s)")
    ap.add_argument("--max-others", type=float, default=0.25,
                    help="CPU (in cores) other processes may use before / during a run")
    ap.add_argument("--retries", type=int, default=3,
                    help="repeats of a run that other processes disturbed")
    ap.add_argument("--baton-bench", default=os.path.join(ROOT, "build-bench", "baton-bench"))
    ap.add_argument("--baton-cli", default=os.path.join(ROOT, "build-bench", "baton-cli"))
    ap.add_argument("--json", metavar="FILE", help="write all results as JSON")
    ap.add_argument("--llama-worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.llama_worker:
        return llama_worker(a)
    if not a.models:
        ap.error("no model given")

    cc = ChildCPU()
    started = datetime.datetime.now(datetime.timezone.utc)
    results = []
    for model in a.models:
        size = os.path.getsize(model)
        rounds = []
        for k in range(a.rounds):
            b = baton_round(a, model, cc)
            l = llama_round(a, model, cc)
            rounds.append({"baton": b, "llama": l})
            print(f"# {os.path.basename(model)} round {k + 1}/{a.rounds}: "
                  f"baton pp {b['pp_tokens_per_s']:.1f} tg {b['tg_tokens_per_s']:.2f} "
                  f"(load {b['load_before']:.2f}, others {b['others_cpu']:.2f} cores) | "
                  f"llama.cpp pp {l['pp_tokens_per_s']:.1f} tg {l['tg_tokens_per_s']:.2f} "
                  f"(load {l['load_before']:.2f}, others {l['others_cpu']:.2f} cores)",
                  file=sys.stderr, flush=True)
        mem_b = baton_memory(a, model, cc)
        med = lambda eng, key: statistics.median(r[eng][key] for r in rounds)
        last = rounds[-1]
        s = {
            "model": model,
            "file_bytes": size,
            "kv_bytes": kv_cache_bytes(model, a.n_ctx),
            "type": last["baton"]["type"],
            "rounds": rounds,
            "baton_pp": med("baton", "pp_tokens_per_s"),
            "baton_tg": med("baton", "tg_tokens_per_s"),
            "llama_pp": med("llama", "pp_tokens_per_s"),
            "llama_tg": med("llama", "tg_tokens_per_s"),
            "baton_bound": med("baton", "bound_tokens_per_s"),
            "baton_read_bw": med("baton", "read_bw_bytes_per_s"),
            "bytes_per_token": last["baton"]["bytes_per_token"],
            "load_range": [min(r[e]["load_before"] for r in rounds for e in ("baton", "llama")),
                           max(r[e]["load_before"] for r in rounds for e in ("baton", "llama"))],
            "others_cpu_max": max(max(r["baton"]["others_cpu"], r["llama"]["others_cpu"])
                                  for r in rounds),
            "baton_mem": mem_b,
            "llama_mem": last["llama"]["mem"],
            "llama_rss_before_load": last["llama"]["rss_before_load"],
        }
        for eng in ("baton", "llama"):
            for key in ("pp", "tg"):
                v = [r[eng][key + "_tokens_per_s"] for r in rounds]
                s[f"{eng}_{key}_range"] = [min(v), max(v)]
        for key in ("pp", "tg"):
            s[f"{key}_ratio_rounds"] = [r["baton"][key + "_tokens_per_s"] /
                                        r["llama"][key + "_tokens_per_s"] for r in rounds]
        s["pp_ratio"] = s["baton_pp"] / s["llama_pp"]
        s["tg_ratio"] = s["baton_tg"] / s["llama_tg"]
        s["tg_to_bound"] = s["baton_tg"] / s["baton_bound"]
        s["llama_tg_to_bound"] = s["llama_tg"] / s["baton_bound"]
        results.append(s)

    hdr = ("| model | baton pp | llama.cpp pp | pp ratio | baton tg | llama.cpp tg | tg ratio "
           "| bound tg | baton tg / bound | llama.cpp tg / bound | load avg |")
    print(f"\n{a.rounds} interleaved rounds, median tokens/s; {a.threads} threads, "
          f"pp {a.n_prompt}, tg {a.n_gen}\n")
    print(hdr)
    print("|" + "---|" * (hdr.count("|") - 1))
    for s in results:
        print(f"| {s['type']} | {s['baton_pp']:.1f} | {s['llama_pp']:.1f} | "
              f"**{s['pp_ratio']:.2f}×** | {s['baton_tg']:.2f} | {s['llama_tg']:.2f} | "
              f"**{s['tg_ratio']:.2f}×** | {s['baton_bound']:.1f} | {100 * s['tg_to_bound']:.0f} % | "
              f"{100 * s['llama_tg_to_bound']:.0f} % | "
              f"{s['load_range'][0]:.2f}–{s['load_range'][1]:.2f} |")
    print("\nRatios of the pairs (baton / llama.cpp, same round): min, median, max\n")
    for s in results:
        line = [f"{s['type']}:"]
        for key in ("pp", "tg"):
            v = s[f"{key}_ratio_rounds"]
            line.append(f"{key} {min(v):.2f} / {statistics.median(v):.2f} / {max(v):.2f}")
        print("- " + "  ".join(line))
    print("\nResident memory at the end of a generation (MiB)\n")
    hdr = ("| model | file | KV cache | baton VmHWM | baton RssFile / RssAnon "
           "| llama.cpp VmRSS | llama.cpp VmHWM | llama.cpp RssFile / RssAnon "
           "| llama.cpp before load |")
    print(hdr)
    print("|" + "---|" * (hdr.count("|") - 1))
    for s in results:
        bp = (s["baton_mem"] or {}).get("peak", {})
        lm = s["llama_mem"]
        print(f"| {s['type']} | {mib(s['file_bytes']):.0f} | {mib(s['kv_bytes']):.1f} | "
              f"{mib(bp.get('VmRSS', 0)):.0f} | {mib(bp.get('RssFile', 0)):.0f} / "
              f"{mib(bp.get('RssAnon', 0)):.0f} | {mib(lm.get('VmRSS', 0)):.0f} | "
              f"{mib(lm.get('VmHWM', 0)):.0f} | {mib(lm.get('RssFile', 0)):.0f} / "
              f"{mib(lm.get('RssAnon', 0)):.0f} | {mib(s['llama_rss_before_load']):.0f} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"started_utc": started.isoformat(timespec="seconds"),
                       "baton_source": git_describe(),
                       "baton_bench_mtime_utc": datetime.datetime.fromtimestamp(
                           os.path.getmtime(a.baton_bench), datetime.timezone.utc).isoformat(
                           timespec="seconds"),
                       "host": platform.node(), "argv": sys.argv, "threads": a.threads,
                       "n_prompt": a.n_prompt, "n_gen": a.n_gen, "n_ctx": a.n_ctx,
                       "flash_attn": a.flash_attn, "rounds": a.rounds, "results": results},
                      f, indent=1)


if __name__ == "__main__":
    main()
