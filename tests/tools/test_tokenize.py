#!/usr/bin/env python3
"""Test baton-tokenize against llama.cpp's tokenizer test vectors (models/vocab/vectors) and a
few decode / special-token / error cases. Usage: test_tokenize.py BATON_TOKENIZE
(env BATON_SHARED: the shared data folder)."""
import os
import subprocess
import sys

exe = sys.argv[1]
shared = os.environ.get("BATON_SHARED", os.path.join(os.path.dirname(__file__), "../../../shared"))
vocab = os.path.join(shared, "models", "vocab")
failures = 0


def check(cond, what):
    global failures
    if not cond:
        failures += 1
        print("FAIL:", what, file=sys.stderr)


def run(args, data):
    p = subprocess.run([exe, *args], input=data, capture_output=True, timeout=60)
    return p.returncode, p.stdout, p.stderr


def vectors(name):
    inp = open(os.path.join(vocab, "vectors", "ggml-vocab-%s.gguf.inp" % name), "rb").read()
    out = open(os.path.join(vocab, "vectors", "ggml-vocab-%s.gguf.out" % name), "rb").read()
    texts = inp.split(b"\n__ggml_vocab_test__\n")
    if texts and texts[-1] == b"":
        texts.pop()
    return list(zip(texts, out.decode().split("\n")))


for name in ("llama-spm", "gpt-2"):
    model = os.path.join(vocab, "ggml-vocab-%s.gguf" % name)
    cases = vectors(name)
    check(len(cases) > 20, "%s: vectors read" % name)
    for text, want in cases[:: max(1, len(cases) // 12)]:
        rc, out, err = run(["-m", model], text)
        check(rc == 0, "%s: exit 0 for %r (%d, %r)" % (name, text, rc, err))
        check(out.split() == want.encode().split(), "%s: %r -> %r, want %r" % (name, text, out, want))

gpt2 = os.path.join(vocab, "ggml-vocab-gpt-2.gguf")
spm = os.path.join(vocab, "ggml-vocab-llama-spm.gguf")

# decode round trip
for text in (b"Hello world", "Grüße, 世界 😀\n\ttab".encode()):
    rc, ids, _ = run(["-m", gpt2], text)
    rc2, back, err = run(["-m", gpt2, "--decode"], ids)
    check(rc == 0 and rc2 == 0 and back == text, "gpt-2 round trip %r -> %r (%r)" % (text, back, err))

# special tokens: plain text unless --special
rc, out, _ = run(["-m", gpt2], b"<|endoftext|>")
check(rc == 0 and len(out.split()) > 1, "gpt-2: <|endoftext|> is text without --special: %r" % out)
rc, out, _ = run(["-m", gpt2, "--special"], b"<|endoftext|>")
check(rc == 0 and out.split() == [b"50256"], "gpt-2: <|endoftext|> with --special: %r" % out)
rc, out, _ = run(["-m", spm, "--special"], b"<s>hi")
check(rc == 0 and out.split()[:2] == [b"1", b"1"], "llama-spm: BOS + <s> with --special: %r" % out)
rc, out, _ = run(["-m", spm, "--decode"], b"1 15043 2")
check(rc == 0 and out == b" Hello", "llama-spm: control tokens hidden: %r" % out)
rc, out, _ = run(["-m", spm, "--decode", "--special"], b"1 15043 2")
check(rc == 0 and out == b"<s> Hello</s>", "llama-spm: control tokens shown: %r" % out)

# errors
rc, _, err = run(["-m", spm, "--decode"], b"1 32000")
check(rc == 1 and b"not a token id" in err, "out-of-range id: %d %r" % (rc, err))
rc, _, err = run(["-m", spm, "--decode"], b"12abc")
check(rc == 1, "garbage id: %d %r" % (rc, err))
rc, _, err = run(["-m", "/nonexistent.gguf"], b"x")
check(rc == 1 and b"nonexistent" in err, "missing model: %d %r" % (rc, err))
rc, _, _ = run([], b"x")
check(rc == 2, "no -m: exit 2 (got %d)" % rc)
rc, out, _ = run(["--help"], b"")
check(rc == 0 and b"usage" in out, "--help")

print("%d failures" % failures, file=sys.stderr)
sys.exit(1 if failures else 0)
