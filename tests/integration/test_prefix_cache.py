"""The prefix cache, n > 1 and cancel on disconnect, end to end over HTTP (baton serve --ranks R
on stories260K, 127.0.0.1 only). meson runs each case as its own test (prefix_CASE):

  equal       R = 1..4: greedy output with the cache equals the output without it
              (cache_prompt: false), byte for byte, including hits that end inside a block and
              the next turn (the whole earlier prompt taken from the cache, the answer's tokens
              computed as prompt tokens); usage.prompt_tokens_details.cached_tokens and the
              /metrics counters show the hits
  quantized   R = 1, 2, a Q4_0 model (baton-mkmodel, 4 layers of 512): the same equality where the
              matrix kernels differ in the last bits between a few rows and many, with hits that
              leave 1..3 tokens to compute and a second turn
  evict       a deliberately tiny cache (--kv-blocks): evictions happen and every answer still
              equals its uncached reference; a request larger than the cache gets 503
  concurrent  R = 1, 3: 16 concurrent requests sharing one system prompt, each equal to its
              uncached reference
  shared      8 clients arrive at once with one long system prompt (4 slots, prompts read 16
              tokens a step): the prompt is computed once, not by every slot beside the others
              (a request waits while another reads a prefix it shares), outputs unchanged
  n           n = 3 choices with their index (whole and streamed), reproducible with a seed, the
              prompt computed once (the other choices hit it); R = 1, 2
  disconnect  R = 1, 3: a client that leaves a non-streamed request is cancelled within 1 s and
              its slot serves the next request
"""
import json
import os
import re
import shutil
import socket
import threading
import time

import pytest

from harness import MKMODEL, MODEL, Serve, healthy, open_stream, run, sse_lines, wait_for

if not shutil.which("mpiexec"):
    pytest.skip("mpiexec not found", allow_module_level=True)

SYSTEM = ("Once upon a time, there was a little girl named Lily. She loved to play outside in "
          "the park with her friends. One day")
ENDINGS = ["she", "they", "a big", "her mom", "the sun", "Lily", "Tim", "a bird", "the dog",
           "it", "a little boy", "the wind"]


def serve(ranks, *extra, name="cache"):
    job = Serve("--ranks", str(ranks), "-m", MODEL, "-t", "1", "-c", "256", "--parallel", "4",
                *extra, name=name)
    healthy(job, 90, f"baton serve --ranks {ranks}")
    return job


def complete(job, prompt, cache=True, max_tokens=40, usage=False, **extra):
    """(text, cached prompt tokens), with usage=True (text, cached, prompt tokens)."""
    st, r = job.get_json("/v1/completions", {"prompt": prompt, "max_tokens": max_tokens,
                                            "temperature": 0, "cache_prompt": cache, **extra})
    assert st == 200, (st, r)
    u = r["usage"]
    out = (r["choices"][0]["text"], u["prompt_tokens_details"]["cached_tokens"])
    return out + (u["prompt_tokens"],) if usage else out


def metric(job, name):
    return job.metrics().get(name, 0)


@pytest.mark.parametrize("ranks", [1, 2, 3, 4])
def test_equal(ranks, check):
    job = serve(ranks)
    try:
        inside = 0
        for i, w in enumerate(ENDINGS[:8]):
            p = f"{SYSTEM} {w}"
            want, c0 = complete(job, p, cache=False)
            check(c0 == 0, f"{ranks} ranks: cache_prompt false takes nothing from the cache")
            complete(job, p[:len(p) - 2 - i % 3])  # a nearby prompt ends inside a block
            got, hit, n_p = complete(job, p, usage=True)
            inside += hit % 16 != 0
            check(hit > 0, f"{ranks} ranks: '{w}': {hit} prompt tokens from the cache")
            check(got == want, f"{ranks} ranks: '{w}': cached output equals uncached "
                               f"({got[:40]!r} vs {want[:40]!r})")
            # the next turn resends the prompt and this answer: the whole prompt is cached, the
            # answer's tokens are computed again (as prompt tokens), and the output is unchanged
            want2, _ = complete(job, p + got, cache=False, max_tokens=8)
            got2, hit2 = complete(job, p + got, max_tokens=8)
            check(n_p - 1 <= hit2 <= n_p, f"{ranks} ranks: the next turn takes the earlier "
                                          f"prompt from the cache ({hit2} of its {n_p} tokens)")
            check(got2 == want2, f"{ranks} ranks: '{w}': the next turn equals its uncached "
                                 f"output ({got2!r} vs {want2!r})")
        check(inside > 0, f"{ranks} ranks: {inside} hits ended inside a block")
        check(metric(job, "baton_prefix_cache_hit_tokens_total") > 0 and
              metric(job, "baton_prefix_cache_lookups_total") > 0,
              f"{ranks} ranks: /metrics counts lookups and hit tokens")
    finally:
        job.close()


@pytest.mark.parametrize("ranks", [1, 2])
def test_quantized(ranks, check, tmp_path):
    model = str(tmp_path / "tiny-q4_0.gguf")
    rc, _, err, _ = run([MKMODEL, "-q", "-o", model, "--preset", "tiny", "--type", "q4_0",
                         "--n-embd", "512", "--n-layer", "4", "--n-head", "8", "--n-ff", "1536",
                         "--seed", "11"], timeout=60)
    assert rc == 0, err
    job = Serve("--ranks", str(ranks), "-m", model, "-t", "2", "-c", "256", "--parallel", "2",
                name="quant")
    healthy(job, 90, f"baton serve --ranks {ranks}")
    try:
        hits = 0
        for i, w in enumerate(ENDINGS[:6]):
            p = f"{SYSTEM} {w}"
            want, _ = complete(job, p, cache=False, max_tokens=24)
            # a prompt 1..3 tokens shorter first: the cached run computes only the rest
            toks = job.get_json("/tokenize", {"content": p, "add_special": True})[1]["tokens"]
            complete(job, toks[:len(toks) - 1 - i % 3], max_tokens=4)
            got, hit = complete(job, p, max_tokens=24)
            hits += hit > 0
            check(got == want, f"{ranks} ranks: '{w}' ({hit} tokens cached): cached output "
                               f"equals uncached ({got!r} vs {want!r})")
            want2, _ = complete(job, p + got + " and", cache=False, max_tokens=16)
            got2, _ = complete(job, p + got + " and", max_tokens=16)
            check(got2 == want2, f"{ranks} ranks: '{w}': the second turn equals its uncached "
                                 f"output ({got2!r} vs {want2!r})")
        check(hits == 6, f"{ranks} ranks: {hits} of 6 prompts hit the cache")
    finally:
        job.close()


def test_evict(check):
    # 2 slots, 12 blocks of 16: every request fits (5 blocks), few cached prompts survive
    job = serve(1, "--parallel", "2", "--kv-blocks", "12", name="evict")
    try:
        refs = {}
        for w in ENDINGS:
            refs[w], _ = complete(job, f"{SYSTEM} {w}", cache=False)
        for rnd in range(2):
            for w in ENDINGS:
                got, _ = complete(job, f"{SYSTEM} {w}")
                check(got == refs[w], f"round {rnd}: '{w}' equals its uncached reference")
        ev = metric(job, "baton_kv_evictions_total")
        check(ev > 0, f"cached blocks were evicted ({ev})")
        check(metric(job, 'baton_kv_blocks{state="used"}') == 0, "no block used when idle")
        # more positions than the whole cache (within the context): a clear 503, it serves on
        st, r = job.get_json("/v1/completions", {"prompt": SYSTEM, "max_tokens": 200})
        check(st == 503 and r.get("error", {}).get("code") == "kv_cache_full",
              f"a request larger than the cache: 503 kv_cache_full ({st})")
        got, _ = complete(job, f"{SYSTEM} {ENDINGS[0]}")
        check(got == refs[ENDINGS[0]], "still serving after the refusal")
    finally:
        job.close()


@pytest.mark.parametrize("ranks", [1, 3])
def test_concurrent(ranks, check):
    job = serve(ranks, name="conc")
    try:
        prompts = [f"{SYSTEM} {w} {k}" for k in range(2) for w in ENDINGS[:8]]
        refs = {p: complete(job, p, cache=False, max_tokens=24)[0] for p in prompts}
        got, lock = {}, threading.Lock()

        def client(p):
            t, h = complete(job, p, max_tokens=24)
            with lock:
                got[p] = (t, h)

        threads = [threading.Thread(target=client, args=(p,)) for p in prompts]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        same = sum(got.get(p, (None,))[0] == refs[p] for p in prompts)
        hits = sum(got.get(p, (None, 0))[1] > 0 for p in prompts)
        check(same == len(prompts), f"{ranks} ranks: {same} of {len(prompts)} concurrent answers "
                                    f"equal their uncached references")
        check(hits > 0, f"{ranks} ranks: {hits} of them took the shared prompt from the cache")
    finally:
        job.close()


def test_shared(check):
    job = serve(1, "--prefill-chunk", "16", "--test-step-delay-ms", "20", name="shared")
    try:
        system = " ".join([SYSTEM] * 3)
        prompts = [f"{system} {w}" for w in ENDINGS[:8]]

        def n_tok(text):
            return len(job.get_json("/tokenize", {"content": text, "add_special": True})[1]
                       ["tokens"])

        n_sys = n_tok(system)
        unique = sum(n_tok(p) - n_sys for p in prompts)
        refs = {p: complete(job, p, cache=False, max_tokens=8)[0] for p in prompts}
        before = metric(job, "baton_prompt_tokens_total")
        got, lock = {}, threading.Lock()

        def client(p):
            t, _ = complete(job, p, max_tokens=8)
            with lock:
                got[p] = t

        threads = [threading.Thread(target=client, args=(p,)) for p in prompts]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        computed = metric(job, "baton_prompt_tokens_total") - before
        bound = n_sys + unique + 16 * len(prompts)  # each may redo the block it diverges in
        check(computed <= bound, f"{computed} prompt tokens computed for 8 prompts sharing "
                                 f"{n_sys} (at most {bound}; every slot reading the shared "
                                 f"prompt would be {4 * n_sys}+)")
        same = sum(got.get(p) == refs[p] for p in prompts)
        check(same == len(prompts), f"{same} of {len(prompts)} answers equal their uncached "
                                    f"references")
    finally:
        job.close()


def stream_choices(job, body):
    """The text of each choice index of a streamed completion, and the usage chunk."""
    c, r = open_stream(job.port, "/v1/completions", {**body, "stream": True,
                                                    "stream_options": {"include_usage": True}},
                       timeout=60)
    texts, usage = {}, None
    try:
        for line in sse_lines(r):
            if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                continue
            d = json.loads(line[6:])
            for ch in d.get("choices", []):
                texts[ch["index"]] = texts.get(ch["index"], "") + ch.get("text", "")
            usage = d.get("usage") or usage
    finally:
        c.close()
    return texts, usage


@pytest.mark.parametrize("ranks", [1, 2])
def test_n(ranks, check):
    job = serve(ranks, name="n")
    try:
        body = {"prompt": SYSTEM, "max_tokens": 24, "n": 3, "seed": 42, "temperature": 1.0,
                "ignore_eos": True}
        st, a = job.get_json("/v1/completions", body)
        st2, b = job.get_json("/v1/completions", body)
        check(st == 200 and st2 == 200, f"n = 3: 200 ({st}, {st2})")
        ia = sorted(c["index"] for c in a["choices"])
        check(ia == [0, 1, 2], f"n = 3: choices with index 0, 1, 2 ({ia})")
        ta = [c["text"] for c in sorted(a["choices"], key=lambda c: c["index"])]
        tb = [c["text"] for c in sorted(b["choices"], key=lambda c: c["index"])]
        check(ta == tb, "n = 3 with a seed: the same three choices twice")
        check(len(set(ta)) > 1, f"the choices differ from each other ({[t[:20] for t in ta]})")
        check(a["usage"]["completion_tokens"] == 3 * 24,
              f"usage counts every choice's tokens ({a['usage']['completion_tokens']})")
        # streamed: every index, the same texts as the whole response
        texts, usage = stream_choices(job, body)
        check(sorted(texts) == [0, 1, 2], f"streamed: chunks of index 0, 1, 2 ({sorted(texts)})")
        check([texts.get(k) for k in range(3)] == ta, "streamed: the same three choices")
        check(usage and usage["completion_tokens"] == a["usage"]["completion_tokens"],
              f"streamed: usage of every choice ({usage})")
        # the prompt was computed once: the other choices took it from the cache
        before = metric(job, "baton_prefix_cache_hit_tokens_total")
        body2 = {**body, "prompt": SYSTEM + " the end", "seed": 7}
        st, r = job.get_json("/v1/completions", body2)
        after = metric(job, "baton_prefix_cache_hit_tokens_total")
        n_prompt = r["usage"]["prompt_tokens"]
        check(st == 200 and after - before >= 2 * (n_prompt - 1),
              f"choices 1 and 2 took the prompt from the cache ({after - before} tokens, prompt "
              f"{n_prompt})")
    finally:
        job.close()


def leave_early(port):
    """A non-streamed request whose client closes its connection after 0.5 s."""
    body = json.dumps({"prompt": SYSTEM, "max_tokens": 200, "temperature": 0,
                       "ignore_eos": True}).encode()
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
              b"application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    time.sleep(0.5)
    s.close()
    return time.monotonic()


@pytest.mark.parametrize("ranks", [1, 3])
def test_disconnect(ranks, check):
    # one slot, slowed down: the request would run for seconds
    job = serve(ranks, "--parallel", "1", "--test-step-delay-ms", "20", name="disc")
    try:
        for i in range(3):
            before = metric(job, "baton_requests_cancelled_total")
            t0 = leave_early(job.port)
            ok = wait_for(lambda: metric(job, "baton_requests_cancelled_total") > before, 5,
                          interval=0.02)
            dt = time.monotonic() - t0
            check(ok and dt < 1.0, f"{ranks} ranks: the request cancelled {dt:.2f} s after its "
                                   f"client left")
            t1 = time.monotonic()
            text, _ = complete(job, "Once upon a time", max_tokens=4)
            check(time.monotonic() - t1 < 5, f"{ranks} ranks: the freed slot serves the next "
                                             f"request ({time.monotonic() - t1:.2f} s)")
        check(metric(job, 'baton_kv_blocks{state="used"}') == 0, "no block held afterwards")
    finally:
        job.close()
