"""Pipeline-parallel ranks end to end: baton-server (rank 0) + baton-rankd (ranks 1..R-1) under a
real mpiexec. Every process runs under a deadline and is killed by pid. meson runs each case as
its own test (pipeline_CASE: run_pytest.sh ... test_pipeline.py::test_CASE):

  greedy    `baton run --ranks R`, R = 1..4, greedy output identical to baton-cli's, on
            stories260K and on a synthetic 6-layer q8_0 model (and an uneven --split)
  by_hand   `mpiexec -n 1 baton-server --oneshot ... : -n 2 baton-rankd ...` gives the same
  mismatch  a different model file, a faked build id, a different --split on one rank: the job
            fails within seconds with one clear error naming the rank and host, exit status 3;
            a bad option on every rank: exit status 2, no hang
  idle      3 ranks by hand over HTTP: each rank idles under 2 % CPU (/proc/PID/stat over 3 s),
            then the first request succeeds; SIGTERM: every rank leaves, mpiexec exits 0
  many      `baton serve --ranks 3`: 200 short completions from 4 client threads all succeed,
            every rank is alive and ready afterwards
  error     a FORWARD naming a sequence id out of range (test hook BATON_TEST_FORWARD_BAD_SEQ on
            rank 0): that request gets an error reply naming the rank, the ranks keep serving
Skipped without mpiexec.
"""
import json
import os
import re
import shutil
import signal
import threading
import time

import pytest

from harness import (CLI, LAUNCHER as BATON, LISTENING, MODEL as STORIES, PROMPT, RANK_PROGRAMS,
                     RANKD, SERVER, Job, comm, completion, cpu_s, make_tiny_model, run,
                     wait_exit)

MPIEXEC = shutil.which("mpiexec")
if not MPIEXEC:
    pytest.skip("mpiexec not found", allow_module_level=True)


def cli(model, n, ctx, check):
    rc, out, err, _ = run([CLI, "-m", model, "-p", PROMPT, "-n", str(n), "-c", str(ctx), "--temp",
                           "0", "-t", "1"])
    check(rc == 0, f"baton-cli on {os.path.basename(model)} (rc {rc})")
    return out


def tiny_model(tmp, check):
    path, rc, err = make_tiny_model(tmp, timeout=120)
    if rc != 0:
        print(err)
    check(rc == 0, "baton-mkmodel tiny --n-layer 6 q8_0")
    return path


# ---------------------------------------------------------------------------------------------

def test_greedy(scratch, check):
    tiny = tiny_model(scratch, check)
    for model, n, ctx in ((STORIES, 100, 512), (tiny, 100, 256)):
        name = os.path.basename(model)
        want = cli(model, n, ctx, check)
        check(len(want) > 50, f"{name}: baton-cli wrote a continuation ({len(want)} bytes)")
        for ranks in (1, 2, 3, 4):
            rc, out, err, dt = run([BATON, "run", "-m", model, "-p", PROMPT, "-n", str(n), "-c",
                                    str(ctx), "--temp", "0", "-t", "1", "--ranks", str(ranks)])
            if rc != 0 or out != want:
                print(err[-3000:])
            check(rc == 0, f"{name}: baton run --ranks {ranks} exit 0 (rc {rc}, {dt:.1f} s)")
            check(out == want, f"{name}: --ranks {ranks} output identical to baton-cli's")
            if ranks > 1:
                check(f"{ranks} ranks" in err and "ready" in err,
                      f"{name}: --ranks {ranks} ran as a {ranks}-stage pipeline")
    # an uneven split by hand
    rc, out, err, _ = run([BATON, "run", "-m", tiny, "-p", PROMPT, "-n", "100", "-c", "256", "--temp",
                           "0", "-t", "1", "--ranks", "3", "--split", "1,1,4"])
    check(rc == 0 and "(1,1,4)" in err, "--split 1,1,4 is used")
    check(out == cli(tiny, 100, 256, check), "--split 1,1,4 output identical to baton-cli's")


def test_by_hand(check):
    want = cli(STORIES, 100, 512, check)
    args = ["-m", STORIES, "-p", PROMPT, "-n", "100", "-c", "512", "--temp", "0", "-t", "1"]
    rc, out, err, _ = run([MPIEXEC, "-n", "1", SERVER, "--oneshot", *args, ":", "-n", "2", RANKD,
                           *args])
    if rc != 0:
        print(err[-3000:])
    check(rc == 0, f"mpiexec -n 1 baton-server : -n 2 baton-rankd exit 0 (rc {rc})")
    check(out == want, "by hand: output identical to baton-cli's")
    check(err.count("SHUTDOWN from rank 0") == 2, "both ranks got SHUTDOWN")


def mismatch(check, what, rank2_args, rank2_env, expect):
    base = ["-m", STORIES, "-p", PROMPT, "-n", "5", "--temp", "0", "-t", "1"]
    env_args = [a for k, v in rank2_env.items() for a in ("-env", k, v)]
    cmd = [MPIEXEC, "-disable-auto-cleanup", "-n", "1", SERVER, "--oneshot", *base, ":", "-n", "1",
           RANKD, *base, ":", "-n", "1", *env_args, RANKD, *base[2:], *rank2_args]
    rc, out, err, dt = run(cmd, timeout=60)
    errors = [l for l in err.splitlines() if "[rank 0] error" in l]
    print("\n".join(errors))
    check(rc == 3, f"{what}: exit status 3 (configuration mismatch), got {rc}")
    check(dt < 20, f"{what}: failed within seconds ({dt:.1f} s)")
    check(len(errors) == 1 and re.search(r"rank 2 on host \S+: " + expect, errors[0]) is not None,
          f"{what}: one error naming rank 2 and its host: '{expect}'")
    check(out == b"", f"{what}: nothing on stdout")


def test_mismatch(scratch, check):
    tiny = tiny_model(scratch, check)
    mismatch(check, "different model file", ["-m", tiny], {},
             r"model identity 0x[0-9a-f]+ \(\d+ bytes\) differs from rank 0's 0x[0-9a-f]+ .*"
             r"\(different model file\?\)")
    mismatch(check, "faked build id", ["-m", STORIES], {"BATON_TEST_BUILD_ID": "other-build"},
             r"build id 'other-build' differs from rank 0's")
    mismatch(check, "different --split", ["-m", STORIES, "--split", "1,1,3"], {},
             r"holds layers \[2, 5\), rank 0 expects \[\d, \d\) \(different --split\?\)")
    # the sizes every rank must agree on (the handshake carries them)
    mismatch(check, "different --parallel", ["-m", STORIES, "--parallel", "2"], {},
             r"sequences \(--parallel\) 2, rank 0 has 4")
    mismatch(check, "different --ctx-size", ["-m", STORIES, "--ctx-size", "64"], {},
             r"context \(--ctx-size\) 64, rank 0 has 128")
    mismatch(check, "different --kv-blocks", ["-m", STORIES, "--kv-blocks", "9"], {},
             r"KV blocks \(--kv-blocks\) 9, rank 0 has 32")
    # a bad option everywhere: every rank leaves (no MPI_Init hang), the job's status is 2
    rc, _, err, dt = run([BATON, "run", "-m", STORIES, "-p", PROMPT, "--ranks", "3", "--ctx-size",
                          "nope"], timeout=60)
    check(rc == 2 and dt < 20, f"bad option on every rank: exit 2 in {dt:.1f} s (rc {rc})")
    # a missing model file on one rank: its error reaches rank 0, status 2
    base = ["-p", PROMPT, "-n", "5", "-t", "1"]
    rc, _, err, dt = run([MPIEXEC, "-disable-auto-cleanup", "-n", "1", SERVER, "--oneshot", "-m",
                          STORIES, *base, ":", "-n", "1", RANKD, "-m", "/nonexistent.gguf", *base],
                         timeout=60)
    check(rc == 2 and re.search(r"\[rank 0\] error: .*rank 1 on host \S+: .*nonexistent", err),
          f"missing model file on rank 1: exit 2 naming rank 1 and its host (rc {rc}, {dt:.1f} s)")


# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------

def complete(job, max_tokens=8, prompt=PROMPT):
    return job.get_json("/v1/completions", completion(max_tokens, prompt))


def rank_procs(job):
    """pids of baton-server / baton-rankd below this job."""
    return [p for p, name in job.descendants().items() if name in RANK_PROGRAMS]


def listening(job, check, what, pattern=LISTENING):
    """True once the job's log gives its port (job.port); else a failed check and the log."""
    if check(job.wait_port(pattern, timeout=60) is not None, what):
        return True
    print(job.text()[-3000:])
    return False


def by_hand_job(env=None):
    common = ["-m", STORIES, "-c", "256", "-t", "1", "--port", "0"]
    return Job([MPIEXEC, "-disable-auto-cleanup", "-n", "1", BATON, "--wrap", "--", SERVER, *common,
                ":", "-n", "2", BATON, "--wrap", "--", RANKD, *common], env=env, name="pipe")


def test_idle(check):
    job = by_hand_job()
    try:
        if not listening(job, check, "baton-server listens"):
            return
        check(job.wait_ready(3) is not None, "/health: 3 ranks ready")
        pids = rank_procs(job)
        names = sorted(comm(p) for p in pids)
        check(names == ["baton-rankd", "baton-rankd", "baton-server"], f"rank processes {names}")
        time.sleep(2)  # the ranks sit idle after init
        t0 = {p: cpu_s(p) for p in pids}
        w0 = time.monotonic()
        time.sleep(3)
        wall = time.monotonic() - w0
        for p in pids:
            pct = 100 * (cpu_s(p) - t0[p]) / wall
            check(pct < 2.0, f"idle CPU of {comm(p)} pid {p}: {pct:.2f} % < 2 %")
        st, r = complete(job, max_tokens=30)
        text = r.get("choices", [{}])[0].get("text", "") if st == 200 else ""
        check(st == 200 and len(text) > 20, f"first request after idling: {st} {text[:40]!r}")
        check(text == cli(STORIES, 30, 256, check).decode(), "its text is baton-cli's")
        # SIGTERM to rank 0: it shuts the ranks down; mpiexec exits 0
        server = [p for p in pids if comm(p) == "baton-server"][0]
        os.kill(server, signal.SIGTERM)
        rc = wait_exit(job.p, 20)
        check(rc == 0, f"after SIGTERM to baton-server, mpiexec exits 0 (rc {rc})")
        check(job.text().count("SHUTDOWN from rank 0") == 2, "both ranks got SHUTDOWN")
        check(not any(os.path.exists(f"/proc/{p}") and comm(p) for p in pids),
              "no rank process left")
    finally:
        job.close()


def test_many(check):
    job = Job([BATON, "serve", "--ranks", "3", "-m", STORIES, "-c", "256", "-t", "1", "--port",
               "0", "--parallel", "4"], name="pipe")
    try:
        if not listening(job, check, "baton serve --ranks 3 listens",
                         r"(?:serving|listening) on (?:http://)?127\.0\.0\.1:(\d+)"):
            return
        check(job.wait_ready(3) is not None, "/health: 3 ranks ready")
        pids = rank_procs(job)
        results, lock = [], threading.Lock()

        def client(k):
            for i in range(50):
                st, r = complete(job, max_tokens=4 + (k + i) % 5,
                                 prompt=f"{PROMPT} {k} {i}")
                ok = st == 200 and r.get("choices", [{}])[0].get("finish_reason") in ("length",
                                                                                     "stop")
                with lock:
                    results.append((ok, st, r))

        t0 = time.monotonic()
        threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=240)
        dt = time.monotonic() - t0
        bad = [r for r in results if not r[0]]
        if bad:
            print(bad[:3])
        check(len(results) == 200 and not bad,
              f"200 completions over 3 ranks: {len(results) - len(bad)} ok in {dt:.1f} s")
        check(all(os.path.exists(f"/proc/{p}") for p in pids) and len(pids) == 3,
              "every rank process still alive")
        check(job.wait_ready(3, timeout=10) is not None, "/health: every rank still ready")
        # logit_bias reaches the last stage's sampler: +100 on one token makes greedy repeat it,
        # and a ban (-100) of the token greedy picks first changes the answer
        st, d = job.get_json("/detokenize", {"tokens": [300] * 4})
        st2, r = job.get_json("/v1/completions", {"prompt": PROMPT, "max_tokens": 4,
                                                 "temperature": 0, "logit_bias": {"300": 100}})
        check(st == 200 and st2 == 200 and r["choices"][0]["text"].strip() == d["content"].strip(),
              f"logit_bias +100 over 3 ranks: token 300 four times ({st2} {str(r)[:160]})")
        st, plain = complete(job, max_tokens=1)
        st2, tk = job.get_json("/tokenize", {"content": plain["choices"][0]["text"]})
        first = tk.get("tokens", [None])[-1]
        st3, banned = job.get_json("/v1/completions", {"prompt": PROMPT, "max_tokens": 1,
                                                      "temperature": 0,
                                                      "logit_bias": {str(first): -100}})
        check(st3 == 200 and banned["choices"][0]["text"] != plain["choices"][0]["text"],
              f"logit_bias -100 bans greedy's first token {first} over 3 ranks")
    finally:
        job.close()


def test_bias(scratch, check):
    """Four new sequences in one step, each with 1,024 logit_bias entries, on a 2-rank pipeline:
    the FORWARD is the largest the sizes allow (every bias entry, a full prefill chunk of rows);
    every request gets 200 and the job does not restart (before protocol v3 the ranks' message
    cap left the bias out: the FORWARD was dropped, the step timed out, the job restarted)."""
    tiny = tiny_model(scratch, check)  # a 32,000-token vocabulary
    job = Job([BATON, "serve", "--ranks", "2", "-m", tiny, "-t", "1", "--port", "0",
               "--parallel", "4", "--prefill-chunk", "256", "--step-timeout", "10"], name="bias")
    try:
        if not listening(job, check, "baton serve --ranks 2 listens",
                         r"(?:serving|listening) on (?:http://)?127\.0\.0\.1:(\d+)"):
            return
        check(job.wait_ready(2) is not None, "/health: 2 ranks ready")
        pids = rank_procs(job)
        prompt = " ".join(f"word{i}" for i in range(30))  # ~ 60 tokens: 4 x 60 fill the chunk
        results, lock = [], threading.Lock()

        def client(k):
            body = {"prompt": prompt, "max_tokens": 4, "temperature": 0,
                    "logit_bias": {str(1000 + 1024 * k + i): -1.0 for i in range(1024)}}
            st, r = job.get_json("/v1/completions", body)
            with lock:
                results.append((st, r))

        threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        codes = sorted(st for st, _ in results)
        print([str(r)[:200] for st, r in results if st != 200])
        check(codes == [200] * 4, f"4 requests with 1,024 logit_bias entries each: {codes}")
        check(rank_procs(job) == pids and len(pids) == 2, "the same rank processes: no restart")
        check("restart" not in job.text(), "the supervisor restarted nothing")
        m = job.metrics()
        check(sum(v for k, v in m.items() if k.startswith("baton_faults_total")) == 0,
              "no fault counted")
    finally:
        job.close()


def test_error(check):
    job = by_hand_job(env={"BATON_TEST_FORWARD_BAD_SEQ": "2"})
    try:
        if not listening(job, check, "baton-server listens"):
            return
        check(job.wait_ready(3) is not None, "/health: 3 ranks ready")
        st, r = complete(job, max_tokens=1)  # FORWARD 1: fine
        check(st == 200, f"request 1 succeeds ({st})")
        st, r = complete(job, max_tokens=5)  # FORWARD 2 names a bad sequence
        msg = json.dumps(r)
        check(st >= 400, f"request 2 (bad sequence id injected) gets an error reply ({st})")
        check(re.search(r"rank 1 on host \S+: sequence id \d+ out of range", msg) is not None,
              f"the error names rank 1 and the bad sequence: {msg[:200]}")
        for i in range(3):
            st, r = complete(job, max_tokens=10)
            check(st == 200 and r["choices"][0]["text"], f"request {3 + i} after the error: {st}")
        check(job.wait_ready(3, timeout=10) is not None, "/health: every rank still ready")
        check(len(rank_procs(job)) == 3, "every rank process still alive")
    finally:
        job.close()
