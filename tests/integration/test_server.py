"""baton-server end to end on stories260K (alone, and under `baton serve` with 1 and 3 ranks: the
`srv` fixture): the official OpenAI client, raw HTTP for every error,
/health, /metrics, /tokenize, /detokenize, a client leaving mid-stream, a full queue, the request
timeout and the loading state."""
import json
import shutil
import socket
import subprocess
import threading
import time

import pytest

from harness import API_KEY, MODEL, PROMPT, SERVER, Server

openai = pytest.importorskip("openai")


def client(srv):
    return openai.OpenAI(base_url=srv.base + "/v1", api_key=API_KEY, max_retries=0, timeout=30)


# ---- the OpenAI client ----


def test_models(srv):
    models = client(srv).models.list()
    assert [m.id for m in models.data] == ["stories"]
    assert models.data[0].object == "model"


def test_completion(srv):
    r = client(srv).completions.create(model="stories", prompt=PROMPT, max_tokens=20,
                                       temperature=0)
    assert r.id.startswith("cmpl-")
    assert r.object == "text_completion"
    assert r.model == "stories"
    c = r.choices[0]
    assert c.index == 0 and c.finish_reason in ("length", "stop")
    assert len(c.text) > 0
    st, _, tok = srv.json("POST", "/tokenize", {"content": PROMPT, "add_special": True})
    assert r.usage.prompt_tokens == len(tok["tokens"])
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    if c.finish_reason == "length":
        assert r.usage.completion_tokens == 20
    # greedy is deterministic
    r2 = client(srv).completions.create(model="stories", prompt=PROMPT, max_tokens=20,
                                        temperature=0)
    assert r2.choices[0].text == c.text


def test_seed_reproducible(srv):
    def gen(seed):
        return client(srv).completions.create(model="x", prompt=PROMPT, max_tokens=24,
                                              temperature=1.0, seed=seed).choices[0].text

    a = gen(1234)
    assert gen(1234) == a
    assert len({gen(s) for s in (1, 2, 3, 4)}) > 1


def test_chat(srv):
    r = client(srv).chat.completions.create(
        model="stories", max_tokens=16, seed=7,
        messages=[{"role": "system", "content": "You tell stories."},
                  {"role": "user", "content": "Tell me a story."}])
    assert r.id.startswith("chatcmpl-")
    assert r.object == "chat.completion"
    m = r.choices[0].message
    assert m.role == "assistant" and isinstance(m.content, str)
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 10  # the chatml template was applied


def test_chat_stream_matches(srv):
    msgs = [{"role": "user", "content": "Hello"}]
    full = client(srv).chat.completions.create(model="s", messages=msgs, max_tokens=24, seed=5)
    chunks = list(client(srv).chat.completions.create(
        model="s", messages=msgs, max_tokens=24, seed=5, stream=True,
        stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert all(c.id == chunks[0].id for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == full.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == \
        full.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_completion_stream(srv):
    full = client(srv).completions.create(model="s", prompt=PROMPT, max_tokens=30, temperature=0)
    chunks = list(client(srv).completions.create(model="s", prompt=PROMPT, max_tokens=30,
                                                 temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == full.choices[0].text
    assert chunks[-1].choices[0].finish_reason == full.choices[0].finish_reason
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


def test_stop_strings(srv):
    full = client(srv).completions.create(model="s", prompt=PROMPT, max_tokens=40,
                                          temperature=0).choices[0].text
    words = [w for w in full.split(" ") if len(w) >= 3]
    assert len(words) >= 3, full
    stop = words[2][:3]  # may span tokens
    expect = full[:full.index(stop)]
    r = client(srv).completions.create(model="s", prompt=PROMPT, max_tokens=40, temperature=0,
                                       stop=[stop, "#never#"])
    assert r.choices[0].text == expect
    assert r.choices[0].finish_reason == "stop"
    chunks = list(client(srv).completions.create(model="s", prompt=PROMPT, max_tokens=40,
                                                 temperature=0, stop=stop, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == expect
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_logprobs(srv):
    r = client(srv).completions.create(model="s", prompt=PROMPT, max_tokens=10, temperature=0,
                                       logprobs=3)
    lp = r.choices[0].logprobs
    n = r.usage.completion_tokens
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == n
    assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[0] == 0
    for chosen, top in zip(lp.token_logprobs, lp.top_logprobs):
        assert chosen <= 0 and 1 <= len(top) <= 3
        assert abs(chosen - max(top.values())) < 1e-5  # greedy takes the most likely
    assert "".join(lp.tokens) == r.choices[0].text

    r = client(srv).chat.completions.create(model="s", messages=[{"role": "user", "content": "Hi"}],
                                            max_tokens=5, logprobs=True, top_logprobs=2)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for e in content:
        assert e.logprob <= 0 and len(e.top_logprobs) == 2
        assert bytes(e.bytes).decode("utf-8", "replace") == e.token or len(e.bytes) < 4
    r = client(srv).completions.create(model="s", prompt=PROMPT, max_tokens=3)
    assert r.choices[0].logprobs is None


def test_logit_bias_bans(srv):
    full = client(srv).completions.create(model="s", prompt=PROMPT, max_tokens=5, temperature=0,
                                          logprobs=1)
    first = full.choices[0].logprobs.tokens[0]
    st, _, tok = srv.json("POST", "/tokenize", {"content": first})
    banned = client(srv).completions.create(model="s", prompt=PROMPT, max_tokens=5, temperature=0,
                                            logit_bias={str(t): -100 for t in tok["tokens"]})
    assert not banned.choices[0].text.startswith(first)


def test_ignore_eos(srv):
    # stories260K's EOS is token 2; +100 makes it certain, so the answer ends at once with "stop"
    eos_first = {"2": 100}
    r = client(srv).completions.create(model="s", prompt=PROMPT, max_tokens=8, temperature=0,
                                       logit_bias=eos_first)
    assert r.choices[0].finish_reason == "stop" and r.usage.completion_tokens == 0
    # ignore_eos (llama-server's and vLLM's extension) bans it, whatever logit_bias says
    r = client(srv).completions.create(model="s", prompt=PROMPT, max_tokens=8, temperature=0,
                                       logit_bias=eos_first, extra_body={"ignore_eos": True})
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 8
    st, _, e = srv.json("POST", "/v1/completions", {"prompt": PROMPT, "ignore_eos": "yes"})
    assert st == 400 and e["error"]["param"] == "ignore_eos"


# ---- other routes ----


def test_tokenize_detokenize(srv):
    st, _, r = srv.json("POST", "/tokenize", {"content": "Hello world"})
    assert st == 200 and all(isinstance(t, int) for t in r["tokens"])
    st, _, d = srv.json("POST", "/detokenize", {"tokens": r["tokens"]})
    assert st == 200 and d["content"] == "Hello world"
    st, _, p = srv.json("POST", "/tokenize", {"content": "Hello", "with_pieces": True,
                                              "add_special": True})
    assert p["tokens"][0]["piece"] == "<s>"
    assert "".join(t["piece"] for t in p["tokens"][1:]).strip() == "Hello"
    st, _, e = srv.json("POST", "/detokenize", {"tokens": [1, 100000]})
    assert st == 400 and e["error"]["param"] == "tokens"


def test_health(srv):
    st, h, r = srv.json("GET", "/health", key=None)  # exempt from the API key
    assert st == 200 and r["status"] == "ok"
    ranks = r["ranks"]
    assert [rk["rank"] for rk in ranks] == list(range(srv.n_ranks))
    # the stages cover the model's 5 layers in order, each at least one
    assert ranks[0]["layers"][0] == 0 and ranks[-1]["layers"][1] == 5
    for a, b in zip(ranks, ranks[1:]):
        assert a["layers"][1] == b["layers"][0]
    for rk in ranks:
        assert rk["layers"][1] > rk["layers"][0] and rk["state"] == "ready"
        assert isinstance(rk["host"], str) and rk["last_heartbeat_ms"] >= 0


def test_chat_page(srv):
    st, h, body = srv.request("GET", "/", key=None)  # static, no key needed
    assert st == 200 and h["content-type"].startswith("text/html")
    assert b"/v1/chat/completions" in body


def test_metrics(srv):
    before = srv.metrics()
    client(srv).completions.create(model="s", prompt=PROMPT, max_tokens=7, temperature=0)
    st, h, data = srv.request("GET", "/metrics")
    assert st == 200 and h["content-type"].startswith("text/plain; version=0.0.4")
    after = srv.metrics()
    key = 'baton_http_requests_total{route="/v1/completions",code="200"}'
    assert after[key] == before.get(key, 0) + 1
    assert after["baton_generated_tokens_total"] >= before["baton_generated_tokens_total"] + 1
    assert after["baton_prompt_tokens_total"] > before["baton_prompt_tokens_total"]
    assert after['baton_request_duration_seconds_bucket{le="+Inf"}'] == \
        after["baton_request_duration_seconds_count"]
    for name in ("baton_queue_depth", "baton_slots_busy", "baton_slots",
                 "baton_time_to_first_token_seconds_count"):
        assert name in after
    for k in range(srv.n_ranks):
        # a later rank's step time comes with its next STATS answer: wait for it (bounded)
        srv.wait_metric(f'baton_rank_step_seconds{{rank="{k}"}}', lambda v: v >= 0, timeout=15)
        srv.wait_metric(f'baton_rank_heartbeat_age_seconds{{rank="{k}"}}', lambda v: v >= 0,
                        timeout=15)
    assert after["baton_slots"] == 4
    promtool = shutil.which("promtool")
    if promtool:
        p = subprocess.run([promtool, "check", "metrics"], input=data, capture_output=True,
                           timeout=30)
        assert p.returncode == 0, p.stdout.decode() + p.stderr.decode()


# ---- errors, raw HTTP ----


def error_of(srv, method, path, body=None, status=400, **kw):
    st, h, data = srv.request(method, path, body, **kw)
    assert st == status, data
    e = json.loads(data)["error"]
    assert e["message"] and e["type"]
    assert h["content-type"] == "application/json"
    return e, h


def test_errors_400(srv):
    e, _ = error_of(srv, "POST", "/v1/completions", '{"prompt": "x",')
    assert e["type"] == "invalid_request_error"
    e, _ = error_of(srv, "POST", "/v1/completions", {"prompt": "x", "temperature": "hot"})
    assert e["param"] == "temperature" and "temperature" in e["message"]
    e, _ = error_of(srv, "POST", "/v1/completions", {"prompt": ["a", "b"]})
    assert e["param"] == "prompt"
    e, _ = error_of(srv, "POST", "/v1/completions", {"prompt": "x", "n": 99})
    assert e["param"] == "n"
    e, _ = error_of(srv, "POST", "/v1/completions", {"prompt": "x", "n": 16})  # > --parallel
    assert e["param"] == "n" and "--parallel" in e["message"]
    e, _ = error_of(srv, "POST", "/v1/completions", {"prompt": "x", "stop": ["a"] * 5})
    assert e["param"] == "stop"
    e, _ = error_of(srv, "POST", "/v1/chat/completions", {"messages": "hi"})
    assert e["param"] == "messages"
    e, _ = error_of(srv, "POST", "/v1/chat/completions",
                    {"messages": [{"role": "user", "content": 5}]})
    assert e["param"] == "messages[0].content"
    e, _ = error_of(srv, "POST", "/v1/completions", b'{"prompt": "\xff"}')
    e, _ = error_of(srv, "POST", "/v1/completions", {"prompt": "x", "max_tokens": 100000})
    assert e["code"] == "context_length_exceeded" and e["param"] == "max_tokens"
    e, _ = error_of(srv, "POST", "/v1/completions", {"prompt": "word " * 300})
    assert e["code"] == "context_length_exceeded"
    e, _ = error_of(srv, "POST", "/v1/chat/completions",
                    {"messages": [{"role": "user", "content": "word " * 300}]})
    assert e["code"] == "context_length_exceeded"
    # unknown fields are ignored
    st, _, r = srv.json("POST", "/v1/completions", {"prompt": "x", "max_tokens": 2, "zzz": [1]})
    assert st == 200 and r["choices"][0]["text"] is not None
    # the OpenAI client raises BadRequestError
    with pytest.raises(openai.BadRequestError):
        client(srv).completions.create(model="s", prompt="x", top_p=7)


def test_errors_auth_route_method(srv):
    e, h = error_of(srv, "POST", "/v1/completions", {"prompt": "x"}, status=401, key=None)
    assert e["type"] == "authentication_error" and "bearer" in h["www-authenticate"].lower()
    error_of(srv, "GET", "/v1/models", status=401, key="wrong")
    error_of(srv, "GET", "/metrics", status=401, key=None)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=srv.base + "/v1", api_key="nope", max_retries=0).models.list()
    e, _ = error_of(srv, "GET", "/v1/nothing", status=404)
    e, h = error_of(srv, "GET", "/v1/completions", status=405)
    assert h["allow"] == "POST"
    e, h = error_of(srv, "POST", "/health", {}, status=405)
    assert "GET" in h["allow"]
    error_of(srv, "DELETE", "/v1/chat/completions", status=405)


def test_errors_413(srv):
    body = json.dumps({"prompt": "x" * 9000})
    e, _ = error_of(srv, "POST", "/v1/completions", body, status=413)
    # chunked upload: no Content-Length, so the cap is checked while reading
    c = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
            "Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n")
    c.sendall(head.encode())
    for i in range(0, len(body), 1000):
        part = body[i:i + 1000].encode()
        c.sendall(b"%x\r\n%s\r\n" % (len(part), part))
    c.sendall(b"0\r\n\r\n")
    resp = b""
    while b"\r\n\r\n" not in resp:
        data = c.recv(4096)
        if not data:
            break
        resp += data
    c.close()
    assert resp.startswith(b"HTTP/1.1 413"), resp[:200]
    # the server is fine afterwards
    st, _, _ = srv.request("GET", "/health")
    assert st == 200


# ---- slots, queue, disconnects ----


def raw_stream(srv, body):
    """Open a streaming request on a raw socket; returns the socket after the first events."""
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    data = json.dumps(body)
    s.sendall((f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n{data}")
              .encode())
    buf = b""
    deadline = time.monotonic() + 10
    while buf.count(b"data: ") < 3 and time.monotonic() < deadline:
        buf += s.recv(4096)
    assert buf.startswith(b"HTTP/1.1 200") and b"text/event-stream" in buf, buf[:300]
    return s


def test_disconnect_frees_slot(slow):
    before = slow.metrics()
    s = raw_stream(slow, {"prompt": PROMPT, "max_tokens": 400, "stream": True})
    assert slow.metrics()["baton_slots_busy"] == 1
    s.close()
    slow.wait_metric("baton_slots_busy", lambda v: v == 0, timeout=3)
    after = slow.metrics()
    assert after["baton_requests_cancelled_total"] == before["baton_requests_cancelled_total"] + 1
    # far fewer than the 400 tokens asked for (400 would take 4 s at 10 ms per step)
    assert after["baton_generated_tokens_total"] - before["baton_generated_tokens_total"] < 300


def test_queue_full_429(slow):
    a = raw_stream(slow, {"prompt": PROMPT, "max_tokens": 400, "stream": True})
    result = {}

    def queued():
        result["b"] = slow.json("POST", "/v1/completions",
                                {"prompt": PROMPT, "max_tokens": 3}, timeout=30)

    t = threading.Thread(target=queued)
    t.start()
    try:
        slow.wait_metric("baton_queue_depth", lambda v: v == 1, timeout=5)
        e, h = error_of(slow, "POST", "/v1/completions", {"prompt": PROMPT}, status=429)
        assert h["retry-after"] == "1"
        key = 'baton_http_requests_total{route="/v1/completions",code="429"}'
        assert slow.metrics()[key] >= 1
    finally:
        a.close()  # frees the slot: the queued request runs
        t.join(timeout=20)
    st, _, r = result["b"]
    assert st == 200 and r["usage"]["completion_tokens"] <= 3
    slow.wait_metric("baton_slots_busy", lambda v: v == 0, timeout=3)


def test_request_timeout():
    s = Server(["--parallel", "1", "--ctx-size", "512", "--request-timeout", "1",
                "--test-step-delay-ms", "20"])
    try:
        t0 = time.monotonic()
        st, _, r = s.json("POST", "/v1/completions", {"prompt": PROMPT, "max_tokens": 400},
                          key=None, timeout=30)
        took = time.monotonic() - t0
        assert st == 200 and r["choices"][0]["finish_reason"] == "length"
        assert 0 < r["usage"]["completion_tokens"] < 400
        assert 0.9 < took < 5
        assert s.metrics()["baton_requests_timed_out_total"] == 1
    finally:
        assert s.stop() == 0


def test_loading_state():
    s = Server(["--test-load-delay-ms", "5000"], listen_fd=False, wait_ready=False)
    try:
        st, h, r = s.json("GET", "/health", key=None)
        assert st == 503 and r["status"] == "loading" and h["retry-after"]
        assert r["ranks"][0]["state"] == "loading" and "progress" in r["ranks"][0]
        e, h = error_of(s, "POST", "/v1/completions", {"prompt": "x"}, status=503, key=None)
        assert e["code"] == "model_loading" and h["retry-after"] == "1"
        assert s.metrics()["baton_loading"] == 1
        st, _, r = s.json("GET", "/v1/models", key=None)  # the name is known already
        assert st == 200 and r["data"][0]["id"] == "stories260K.gguf"
    finally:
        t0 = time.monotonic()
        assert s.stop() == 0
        assert time.monotonic() - t0 < 5


def test_bad_config_exits_2():
    p = subprocess.run([SERVER, "-m", MODEL, "--port", "99999"], capture_output=True, timeout=10)
    assert p.returncode == 2 and b"option port" in p.stderr
    p = subprocess.run([SERVER, "-m", MODEL, "--chat-template", "klingon"], capture_output=True,
                       timeout=10)
    assert p.returncode == 2 and b"chat-template" in p.stderr
    p = subprocess.run([SERVER, "--port", "0"], capture_output=True, timeout=10)
    assert p.returncode == 2 and b"model" in p.stderr
    p = subprocess.run([SERVER, "-m", "/nonexistent.gguf", "--port", "0"], capture_output=True,
                       timeout=20)
    assert p.returncode == 2 and b"nonexistent" in p.stderr  # not restarted by the supervisor
