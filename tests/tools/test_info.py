#!/usr/bin/env python3
"""Test baton-info: key lines for stories260K.gguf, and exit 1 with the reader's error for
malformed files. Usage: test_info.py BATON_INFO  (env BATON_SHARED: the shared data folder)."""
import os
import struct
import subprocess
import sys
import tempfile

exe = sys.argv[1]
shared = os.environ.get("BATON_SHARED", os.path.join(os.path.dirname(__file__), "../../../shared"))
model = os.path.join(shared, "models", "stories260K.gguf")
failures = 0


def check(cond, what):
    global failures
    if not cond:
        failures += 1
        print("FAIL:", what, file=sys.stderr)


def run(*args):
    p = subprocess.run([exe, *args], capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout, p.stderr


rc, out, err = run(model)
check(rc == 0, f"exit 0 on stories260K.gguf (got {rc}, stderr {err!r})")
lines = {}
for line in out.splitlines():
    if ":" in line:
        k, _, v = line.partition(":")
        lines.setdefault(k.strip(), v.strip())
# values as gguf-py reads them from the file
want = {
    "architecture": "llama",
    "GGUF version": "3",
    "context length": "128",
    "embedding length": "64",
    "block count": "5",
    "feed-forward length": "172",
    "head count": "8",
    "head count kv": "4",
    "rms eps": "1e-05",
    "rope scaling": "none",
    "tensors": "48",
    "f32": "48 (1.12 MiB)",
    "vocabulary size": "512",
    "tokenizer model": "llama",
    "BOS id": "1",
    "EOS id": "2",
    "chat template": "none",
}
for k, v in want.items():
    check(lines.get(k) == v, f"line '{k}: {v}' (got {lines.get(k)!r})")
size = os.path.getsize(model)
check(lines.get("file size", "").startswith(f"{size} bytes"), "file size line")
check(lines.get("total tensor bytes", "").startswith("1171200 bytes"), "total tensor bytes line")

rc, out, err = run("-v", model)
check(rc == 0 and "token_embd.weight" in out and "tokenizer.ggml.tokens" in out, "-v lists tensors and keys")

rc, out, err = run("--help")
check(rc == 0 and "usage: baton-info" in out, "--help")
rc, out, err = run()
check(rc == 2 and "usage" in err, "no argument: exit 2")

with tempfile.TemporaryDirectory() as d:
    # a download cut short: the last tensor's data is missing
    cut = os.path.join(d, "cut.gguf")
    with open(model, "rb") as f, open(cut, "wb") as g:
        g.write(f.read(size - 1000))
    rc, out, err = run(cut)
    check(rc == 1, f"truncated file: exit 1 (got {rc})")
    check(err.startswith(f"baton-info: {cut}: tensor '") and "is past the end of the file" in err,
          f"truncated file error text: {err!r}")
    check(out == "", "nothing on stdout for a bad file")
    bad = os.path.join(d, "bad.gguf")
    with open(bad, "wb") as g:
        g.write(b"GGUF" + struct.pack("<IQQ", 1, 0, 0))
    rc, out, err = run(bad)
    check(rc == 1 and f"{bad}: GGUF version 1 is not supported" in err, f"v1 file: {rc} {err!r}")
    rc, out, err = run(os.path.join(d, "missing.gguf"))
    check(rc == 1 and "missing.gguf: cannot open" in err, f"missing file: {rc} {err!r}")

print("test_info:", "FAILED" if failures else "ok", file=sys.stderr)
sys.exit(1 if failures else 0)
