"""The chat page (server/static/index.html, served at GET /) in headless Chromium against a real
baton-server on stories260K (suite 'chat').

The server runs with --api-key, on a socket this test opened on 127.0.0.1 (--listen-fd).
Chromium is driven over the DevTools protocol on a pipe (--remote-debugging-pipe) and every
other address is sent to a dead local proxy, so no traffic leaves 127.0.0.1. Checked:

1. the page loads from GET / and its cluster panel fills from /health (status ok, a rank row);
2. a message sent without the key fails visibly (error banner "Unauthorized", turn marked);
3. with the key typed in, Retry sends it again: a streamed answer appears (non-empty) and
   the failed turn and the error are gone;
4. a second message carries the conversation (system-less: user, assistant, user);
5. the key was stored in localStorage.

The screenshot goes to $BATON_BUILD/meson-logs/chat_page.png. Skips without chromium, without
the model, or while baton-server lacks GET /.
Run alone: meson test -C BUILD chat_page --print-errorlogs
   (or: BATON_BUILD=BUILD tests/integration/run_pytest.sh 110 test_chat_page.py)
"""
import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time

import pytest

from harness import BUILD, MODEL, SERVER, Server, wait_for

KEY = "chat-page-key"
DEADLINE = time.monotonic() + 100  # the whole test


class Fail(AssertionError):
    pass


def wait_until(what, fn, timeout):
    """Poll fn() until it returns a true value; return it, or raise Fail after timeout s."""
    last = wait_for(fn, min(timeout, DEADLINE - time.monotonic()), interval=0.1)
    if not last:
        raise Fail(f"timed out waiting for {what} (last: {last!r})")
    return last


class CDP:
    """The DevTools protocol over Chromium's pipe: JSON messages ending in NUL."""

    def __init__(self, wfd, rfd):
        self.w, self.r = wfd, rfd
        self.buf = b""
        self.next_id = 0

    def call(self, method, params=None, session=None, timeout=15):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        end = min(time.monotonic() + timeout, DEADLINE)
        while True:
            while b"\0" in self.buf:
                raw, self.buf = self.buf.split(b"\0", 1)
                m = json.loads(raw)
                if m.get("id") == self.next_id:
                    if "error" in m:
                        raise Fail(f"{method}: {m['error']}")
                    return m.get("result", {})
            left = end - time.monotonic()
            if left <= 0:
                raise Fail(f"no answer from Chromium to {method}")
            ready, _, _ = select.select([self.r], [], [], left)
            if ready:
                chunk = os.read(self.r, 1 << 16)
                if not chunk:
                    raise Fail("Chromium closed the DevTools pipe")
                self.buf += chunk


class Page:
    def __init__(self, cdp, session):
        self.cdp, self.s = cdp, session

    def js(self, expr):
        r = self.cdp.call("Runtime.evaluate", {"expression": expr, "returnByValue": True,
                                               "awaitPromise": True}, self.s)
        if "exceptionDetails" in r:
            raise Fail(f"JS error in {expr!r}: {r['exceptionDetails'].get('text')}")
        return r.get("result", {}).get("value")

    def screenshot(self, path):
        r = self.cdp.call("Page.captureScreenshot", {"format": "png"}, self.s, timeout=30)
        with open(path, "wb") as f:
            f.write(base64.b64decode(r["data"]))


def test_chat_page(scratch):
    chromium = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                     if shutil.which(n)), None)
    if not chromium:
        pytest.skip("chromium is not installed (Debian package chromium)")
    if not (os.path.isfile(SERVER) and os.access(SERVER, os.X_OK)):
        pytest.skip(f"baton-server is not built ({SERVER})")
    if not os.path.isfile(MODEL):
        pytest.skip(f"no model at {MODEL}")
    # ---- baton-server on a socket we own ----
    # stories260K's GGUF says 128 positions: give room for two turns of up to 64 tokens
    srv = Server(["-c", "512", "--api-key", KEY], wait_ready=False)
    procs = []
    try:
        run(srv, chromium, scratch, procs)
    except AssertionError:
        print("---- baton-server log (tail) ----\n" + srv.text()[-3000:])
        raise
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        srv.close()


def run(srv, chromium, tmp, procs):
    srv.wait_health(200, timeout=60)
    port = srv.port
    status, h, body = srv.request("GET", "/", key=None, timeout=5)
    ctype = h.get("content-type", "")
    if status != 200 or "text/html" not in ctype or b"/v1/chat/completions" not in body:
        pytest.skip(f"baton-server does not serve the chat page at GET / yet (HTTP {status}, "
                    f"{ctype!r}); wire index_html.h into server/http.c")

    # ---- Chromium, driven over a pipe; everything but loopback goes to a dead proxy ----
    to_chrome_r, to_chrome_w = os.pipe()
    from_chrome_r, from_chrome_w = os.pipe()

    def child_fds():  # Chromium reads commands on fd 3 and writes on fd 4
        a = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
        b = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
        os.dup2(a, 3)
        os.dup2(b, 4)

    args = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--no-default-browser-check", "--disable-extensions", "--disable-sync",
            "--disable-background-networking", "--disable-component-update",
            "--disable-default-apps", "--disable-domain-reliability", "--no-pings",
            "--proxy-server=127.0.0.1:9", "--remote-debugging-pipe",
            f"--user-data-dir={tmp}/profile", "--window-size=1280,860", "about:blank"]
    chrome = subprocess.Popen(args, preexec_fn=child_fds, pass_fds=(3, 4), stdout=subprocess.DEVNULL,
                              stderr=open(os.path.join(tmp, "chromium.log"), "wb"),
                              start_new_session=True)
    procs.append(chrome)
    os.close(to_chrome_r)
    os.close(from_chrome_w)
    cdp = CDP(to_chrome_w, from_chrome_r)
    target = cdp.call("Target.createTarget", {"url": "about:blank"}, timeout=30)["targetId"]
    session = cdp.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    page = Page(cdp, session)
    cdp.call("Page.enable", session=session)
    cdp.call("Runtime.enable", session=session)
    cdp.call("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 860,
                                                     "deviceScaleFactor": 1, "mobile": False}, session)
    base = f"http://127.0.0.1:{port}"
    cdp.call("Page.navigate", {"url": base + "/"}, session)
    wait_until("the page to load", lambda: page.js(
        "document.readyState === 'complete' && !!document.getElementById('input')"), 20)

    # 1. cluster panel from /health
    wait_until("the health chip to say ok", lambda: page.js(
        "document.getElementById('health-chip-text').textContent") == "ok", 15)
    rows = wait_until("rank rows", lambda: page.js(
        "[...document.querySelectorAll('#ranks-body tr')].map(r => [...r.cells].map(c => c.textContent))"), 10)
    if not rows or rows[0][0] != "0":
        raise Fail(f"unexpected rank table {rows}")

    # Record what the page sends.
    page.js("""window.__sent = []; (() => { const f = window.fetch;
        window.fetch = (u, o) => { if (String(u).includes('/chat/completions')) window.__sent.push(JSON.parse(o.body));
                                   return f(u, o); }; })(); true""")

    def send(text):
        page.js(f"""(() => {{ const i = document.getElementById('input'); i.value = {json.dumps(text)};
            document.getElementById('composer').requestSubmit(); return true; }})()""")

    # answers of at most 64 tokens (the control persists like a user's choice)
    page.js("""(() => { const m = document.getElementById('max-tokens'); m.value = '64';
        m.dispatchEvent(new Event('change')); return true; })()""")

    # 2. no key: a clear error, the turn marked, nothing kept
    page.js("localStorage.removeItem('baton.apiKey'); document.getElementById('api-key').value = ''; true")
    send("Once upon a time")
    err = wait_until("the 401 error banner", lambda: page.js(
        "document.getElementById('error').classList.contains('show') && document.getElementById('error-text').textContent"), 15)
    if "Unauthorized" not in err:
        raise Fail(f"error banner says {err!r}")
    if page.js("document.querySelectorAll('.msg.user.failed').length") != 1:
        raise Fail("the unanswered message is not marked")

    # 3. key typed in, Retry: a streamed answer
    page.js(f"""(() => {{ const k = document.getElementById('api-key'); k.value = {json.dumps(KEY)};
        k.dispatchEvent(new Event('change')); document.getElementById('retry').click(); return true; }})()""")
    answers = wait_until("a finished answer", lambda: page.js(
        "[...document.querySelectorAll('.msg.assistant.done .text')].map(t => t.textContent)"), 60)
    if not answers[0].strip():
        raise Fail("the answer is empty")
    if page.js("document.querySelectorAll('.msg.failed').length") or page.js(
            "document.getElementById('error').classList.contains('show')"):
        raise Fail("the failed turn or its error is still shown after a successful retry")
    print("answer 1:", answers[0][:200].replace("\n", " "))

    # 4. the conversation goes on
    send("The end")
    answers = wait_until("a second answer", lambda: (lambda a: a if len(a) == 2 else None)(page.js(
        "[...document.querySelectorAll('.msg.assistant.done .text')].map(t => t.textContent)")), 60)
    sent = page.js("window.__sent")
    roles = [m["role"] for m in sent[-1]["messages"]]
    if roles != ["user", "assistant", "user"] or sent[-1]["messages"][1]["content"] != answers[0]:
        raise Fail(f"second request's messages: {sent[-1]['messages']}")
    if not all(s.get("stream") is True for s in sent):
        raise Fail("a request was not streamed")
    if page.js("document.querySelectorAll('.msg.assistant.failed').length"):
        raise Fail("an answer is marked failed")

    # 5. the key is remembered
    if page.js("localStorage.getItem('baton.apiKey')") != KEY:
        raise Fail("the API key was not stored in localStorage")

    shot = os.path.join(BUILD, "meson-logs", "chat_page.png")
    os.makedirs(os.path.dirname(shot), exist_ok=True)
    page.screenshot(shot)
    print("screenshot:", shot)
    try:
        cdp.call("Browser.close", timeout=5)
    except Fail:
        pass  # it may close the pipe before it answers
    srv.stop(timeout=10)

