#!/opt/oracle/bin/python
"""Produce the engine's oracle fixtures (tests/fixtures/engine/*.txt) with llama.cpp.

    /opt/oracle/bin/python tools/oracle/make_engine_fixtures.py [--build BUILD_DIR]

Needs llama-cpp-python (the oracle env) and a built baton-mkmodel in BUILD_DIR (default
build). The unit tests compare baton against these files without llama.cpp:

  stories260K.txt   the real tiny Llama: greedy continuations of a few prompts with n_ctx 512
                    (llama.cpp runs past the GGUF's training context of 128 with a warning;
                    baton-cli -c 512 does the same), the exact bytes llama.cpp's pieces make, and
                    the logits after the prompt.
  <arch>-<type>.txt synthetic models from baton-mkmodel (vocab of stories260K, seed fixed, so
                    the tests regenerate byte-identical files; size and CRC-32 recorded):
                    a prompt and llama.cpp's 256-token greedy continuation; for f32 models the
                    logits at a few positions too.

Format (one record per line, space-separated; '#' lines are comments):
  model NAME                      a stories model from ../shared, or
  mkmodel ARGS...                 baton-mkmodel arguments; {vocab} stands for the vocab path
  file SIZE CRC32HEX              (zlib's CRC-32 of the whole file)
  case NAME                       starts a case (stories file); the synthetic files have one
  n_ctx N
  n_predict N
  prompt_hex HEX                  the prompt text
  prompt_tokens N ids...
  gen_tokens N ids...             llama.cpp's greedy tokens (EOG not included)
  eog 0|1                         generation stopped at an end-of-generation token
  text_hex HEX                    bytes baton-cli must print (pieces of gen_tokens, UTF-8 fixed
                                  as Python's errors="replace")
  runner_up N tok:rel ...         per greedy step: llama.cpp's second-best token and its
                                  distance to the best, as a fraction of the logit range
  logits POS N values...          llama.cpp's logits after the token at position POS
  margin_min X / margin_median X  top-1 minus top-2 logit over the greedy steps (information)
  end
"""
import argparse
import ctypes
import os
import subprocess
import sys
import tempfile
import zlib

import numpy as np
import llama_cpp

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.path.join(HERE, "..", ".."))
SHARED = os.path.abspath(os.path.join(SRC, "..", "shared"))
OUT = os.path.join(SRC, "tests", "fixtures", "engine")

STORIES_PROMPTS = [
    # name, prompt, n_predict
    ("once", "Once upon a time", 200),
    ("lily", "Lily and Ben were playing in the garden when", 120),
    ("dog", "The little dog", 100),
    ("empty", "", 60),
    ("quote", 'Tom said, "I like the big red ball!" Then', 80),
]

TYPES = ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_K", "q5_K", "q6_K"]
# Shapes where every type is really used (rows multiple of 256 for the K-quants).
DIMS = ["--n-embd", "256", "--n-layer", "2", "--n-head", "4", "--n-head-kv", "2",
        "--n-ff", "512", "--ctx", "512"]
SYN_PROMPT = "Once upon a time"
SYN_STEPS = 256
SEED = "7"
# Steps whose top two logits are closer than this fraction of the logit range are near-ties: the
# rounding of activations to 8 bits (as llama.cpp and baton both do for quantised weights) turns
# float differences of an ulp into logit differences of up to ~1 % of the range at times, so
# either order is right there. The tests accept llama.cpp's runner-up at those steps only.
NEAR_TIE = 0.02


def file_id(path):
    data = open(path, "rb").read()
    return len(data), "%08x" % zlib.crc32(data)


def load(path, n_ctx, kv_f32):
    kw = dict(n_ctx=n_ctx, n_threads=1, n_threads_batch=1, verbose=False, logits_all=True,
              flash_attn=False)
    if kv_f32:
        kw.update(type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)
    return llama_cpp.Llama(path, **kw)


def piece(m, tok):
    buf = ctypes.create_string_buffer(256)
    n = llama_cpp.llama_token_to_piece(m._model.vocab, tok, buf, 256, 0, False)
    assert n >= 0
    return buf.raw[:n]


def is_eog(m, tok):
    return bool(llama_cpp.llama_vocab_is_eog(m._model.vocab, tok))


def greedy(m, prompt_toks, steps, stop_at_eog):
    """Greedy continuation, one token per decode like a generating client. Returns the tokens,
    whether it stopped at an EOG token, the logits rows by position, and the margins."""
    m.reset()
    m.eval(prompt_toks)
    out, rows, margins, runner_up, eog = [], {}, [], [], False
    rows[len(prompt_toks) - 1] = np.array(m.scores[m.n_tokens - 1], dtype=np.float32)
    for _ in range(steps):
        lg = np.array(m.scores[m.n_tokens - 1], dtype=np.float32)
        rows[m.n_tokens - 1] = lg
        order = np.argsort(-lg, kind="stable")
        margins.append(float(lg[order[0]] - lg[order[1]]))
        runner_up.append((int(order[1]), float((lg[order[0]] - lg[order[1]]) /
                                               (lg[order[0]] - lg[order[-1]]))))
        t = int(np.argmax(lg))
        if stop_at_eog and is_eog(m, t):
            eog = True
            break
        out.append(t)
        m.eval([t])
    return out, eog, rows, margins, runner_up


def ids(name, v):
    return "%s %d %s" % (name, len(v), " ".join(str(int(x)) for x in v))


def logits_line(pos, row):
    return "logits %d %d %s" % (pos, len(row), " ".join("%.6g" % x for x in row))


def stories(f):
    path = os.path.join(SHARED, "models", "stories260K.gguf")
    size, h = file_id(path)
    f.write("model stories260K\nfile %d %s\n" % (size, h))
    m = load(path, 512, False)
    for name, prompt, n in STORIES_PROMPTS:
        ptoks = m.tokenize(prompt.encode(), add_bos=True, special=True)
        gen, eog, rows, margins, _ = greedy(m, ptoks, n, True)
        text = b"".join(piece(m, t) for t in gen).decode("utf-8", errors="replace").encode()
        f.write("case %s\nn_ctx 512\nn_predict %d\nprompt_hex %s\n" % (name, n, prompt.encode().hex()))
        f.write(ids("prompt_tokens", ptoks) + "\n" + ids("gen_tokens", gen) + "\n")
        f.write("eog %d\ntext_hex %s\n" % (int(eog), text.hex()))
        f.write(logits_line(len(ptoks) - 1, rows[len(ptoks) - 1]) + "\n")
        f.write("margin_min %.4g\nmargin_median %.4g\nend\n" % (min(margins), np.median(margins)))
        print("stories %-6s prompt %3d gen %3d eog %d margin min %.4f median %.3f" %
              (name, len(ptoks), len(gen), eog, min(margins), np.median(margins)))


def synthetic(build, arch, typ, tied, tmp):
    args = ["--arch", arch, "--type", typ, "--seed", SEED] + DIMS + (["--tied"] if tied else [])
    out = os.path.join(tmp, "m.gguf")
    vocab = os.path.join(SHARED, "models", "stories260K.gguf")
    cmd = [os.path.join(build, "baton-mkmodel")] + args + ["--vocab", vocab, "-o", out]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    size, h = file_id(out)
    m = load(out, 512, True)
    ptoks = m.tokenize(SYN_PROMPT.encode(), add_bos=True, special=True)
    gen, _, rows, margins, runner_up = greedy(m, ptoks, SYN_STEPS, False)
    name = "%s-%s%s" % (arch, typ.lower(), "-tied" if tied else "")
    with open(os.path.join(OUT, name + ".txt"), "w") as f:
        f.write("# llama.cpp (llama-cpp-python %s), KV cache f32; by %s\n" %
                (llama_cpp.__version__, os.path.relpath(__file__, SRC)))
        f.write("mkmodel %s --vocab {vocab}\nfile %d %s\ncase greedy\nn_ctx 512\n" %
                (" ".join(args), size, h))
        f.write(ids("prompt_tokens", ptoks) + "\n" + ids("gen_tokens", gen) + "\n")
        f.write("runner_up %d %s\n" % (len(runner_up), " ".join("%d:%.5f" % r for r in runner_up)))
        if typ == "f32":
            p0 = len(ptoks) - 1
            for pos in (p0, p0 + 1, p0 + 100, p0 + SYN_STEPS - 1):
                f.write(logits_line(pos, rows[pos]) + "\n")
        f.write("margin_min %.4g\nmargin_median %.4g\nend\n" % (min(margins), np.median(margins)))
    distinct = len(set(gen))
    sep = np.mean([r[1] >= NEAR_TIE for r in runner_up])
    print("%-16s gen %d (%d distinct) margin min %.4f median %.3f, %.0f %% of steps separated" %
          (name, len(gen), distinct, min(margins), np.median(margins), 100 * sep))
    del m


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(SRC, "build"))
    ap.add_argument("--only", choices=["stories", "synthetic"])
    a = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    if a.only != "synthetic":
        with open(os.path.join(OUT, "stories260K.txt"), "w") as f:
            f.write("# llama.cpp (llama-cpp-python %s), default KV cache (f16); by %s\n" %
                    (llama_cpp.__version__, os.path.relpath(__file__, SRC)))
            stories(f)
    if a.only != "stories":
        with tempfile.TemporaryDirectory() as tmp:
            for arch in ("llama", "qwen2"):
                for typ in TYPES:
                    synthetic(a.build, arch, typ, False, tmp)
            synthetic(a.build, "qwen2", "f32", True, tmp)
            synthetic(a.build, "llama", "q8_0", True, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
