#!/opt/oracle/bin/python
"""Check that baton-mkmodel writes GGUF files llama.cpp loads and runs, with sane logits, and that
its quantisation and tensor-type choices match llama-quantize's.

For each configuration (tiny preset; a K-quant friendly variant with 256-wide rows; qwen2; tied
embeddings) and each weight type:
  1. baton-mkmodel writes the model; llama_cpp.Llama loads it (n_ctx 64) and evaluates a prompt;
     the logits must be finite, spread out (std > 1) and correlate with the f32 model's logits
     (the same seed gives the same underlying weights at every type);
  2. llama.cpp's own quantiser (llama_model_quantize, no imatrix) converts the f32 model to the
     same file type; every tensor must get the same type as baton chose, and tensors of the same
     type must be byte-identical.

Usage: /opt/oracle/bin/python tools/oracle/check_mkmodel.py [--mkmodel PATH] [--vocab FILE]
Prints a table and exits non-zero on any failure. Needs llama-cpp-python and gguf (oracle env).
"""

import argparse
import ctypes
import os
import subprocess
import sys
import tempfile

import numpy as np
from gguf import GGUFReader

import llama_cpp

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))

TYPES = ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_K", "q3_K", "q4_K",
         "q5_K", "q6_K"]
# llama_ftype for llama_model_quantize, as baton-mkmodel labels its files
FTYPES = {"f32": 0, "f16": 1, "bf16": 32, "q4_0": 2, "q4_1": 3, "q8_0": 7, "q5_0": 8, "q5_1": 9,
          "q2_K": 10, "q3_K": 11, "q4_K": 15, "q5_K": 17, "q6_K": 18}
# minimum correlation of the last-token logits with the f32 model's
MIN_CORR = {"f32": 0.9999, "f16": 0.999, "bf16": 0.99, "q8_0": 0.99, "q6_K": 0.98, "q5_K": 0.95,
            "q5_0": 0.95, "q5_1": 0.95, "q4_K": 0.9, "q4_0": 0.9, "q4_1": 0.9, "q3_K": 0.7,
            "q2_K": 0.5}
CONFIGS = [
    ("tiny", []),
    ("k256", ["--n-embd", "256", "--n-ff", "512", "--n-head", "4", "--n-head-kv", "2",
              "--n-layer", "8"]),
    ("gqa8", ["--n-embd", "256", "--n-ff", "768", "--n-head", "8", "--n-head-kv", "1",
              "--n-layer", "22"]),
    ("qwen2", ["--arch", "qwen2"]),
    ("tied", ["--tied"]),
]
PROMPT = b"Once upon a time there was a little robot"


def find_mkmodel():
    for d in (os.environ.get("BATON_BUILD"), os.path.join(ROOT, "build"),
              os.path.join(ROOT, "build-quant")):
        if d and os.path.exists(os.path.join(d, "baton-mkmodel")):
            return os.path.join(d, "baton-mkmodel")
    return None


def logits(path):
    m = llama_cpp.Llama(path, n_ctx=64, n_threads=1, verbose=False, logits_all=True)
    toks = m.tokenize(PROMPT)
    m.eval(toks)
    lg = np.array(m.scores[: m.n_tokens], dtype=np.float64)
    del m
    return lg


class quiet_fds:
    """Silence llama.cpp's own stdout/stderr chatter (file descriptors 1 and 2)."""

    def __enter__(self):
        sys.stdout.flush()
        sys.stderr.flush()
        self.saved = [os.dup(1), os.dup(2)]
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        os.close(null)

    def __exit__(self, *exc):
        os.dup2(self.saved[0], 1)
        os.dup2(self.saved[1], 2)
        for fd in self.saved:
            os.close(fd)


def llama_quantize(src, dst, ftype):
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = ftype
    p.nthread = 1
    with quiet_fds():
        rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(p))
    if rc != 0:
        raise RuntimeError("llama_model_quantize failed (%d)" % rc)


def compare_tensors(ours, theirs):
    """(n_tensors, type mismatches, data mismatches among same-type tensors) as lists of names"""
    a = {t.name: t for t in GGUFReader(ours).tensors}
    b = {t.name: t for t in GGUFReader(theirs).tensors}
    if set(a) != set(b):
        return len(a), ["tensor sets differ: %s" % sorted(set(a) ^ set(b))], []
    bad_type, bad_data = [], []
    for name in a:
        ta, tb = a[name], b[name]
        if ta.tensor_type != tb.tensor_type:
            bad_type.append("%s: %s vs llama.cpp %s" % (name, ta.tensor_type.name,
                                                       tb.tensor_type.name))
        elif ta.data.tobytes() != tb.data.tobytes():
            bad_data.append(name)
    return len(a), bad_type, bad_data


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mkmodel", default=find_mkmodel())
    ap.add_argument("--vocab", default=os.path.join(ROOT, "..", "shared", "models", "vocab",
                                                     "ggml-vocab-llama-spm.gguf"))
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--configs", default=",".join(c for c, _ in CONFIGS))
    args = ap.parse_args()
    if not args.mkmodel:
        sys.exit("baton-mkmodel not found: build it or pass --mkmodel")
    types = args.types.split(",")
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for cname, extra in [c for c in CONFIGS if c[0] in args.configs.split(",")]:
            ref = None
            f32_path = os.path.join(tmp, "%s-f32.gguf" % cname)
            for t in ["f32"] + [t for t in types if t != "f32"]:
                path = os.path.join(tmp, "%s-%s.gguf" % (cname, t))
                cmd = [args.mkmodel, "-q", "-j", "1", "--seed", "7", "--type", t, "--vocab",
                       args.vocab, "-o", path] + extra
                r = subprocess.run(cmd, capture_output=True, text=True)
                if r.returncode != 0:
                    print("FAIL %-6s %-5s baton-mkmodel: %s" % (cname, t, r.stderr.strip()))
                    failures += 1
                    continue
                notes = []
                ok = True
                try:
                    lg = logits(path)
                except Exception as e:  # llama.cpp refused the file
                    print("FAIL %-6s %-5s llama.cpp: %s" % (cname, t, e))
                    failures += 1
                    continue
                last = lg[-1]
                if not np.isfinite(lg).all() or lg.std() < 1.0:
                    ok = False
                    notes.append("degenerate logits (std %.3g)" % lg.std())
                top = np.sort(last)[::-1]
                if t == "f32":
                    ref = lg
                    corr = 1.0
                else:
                    corr = float(np.corrcoef(ref.ravel(), lg.ravel())[0, 1]) if ref is not None \
                        else float("nan")
                    if not corr >= MIN_CORR[t]:
                        ok = False
                        notes.append("corr %.4f < %.4f" % (corr, MIN_CORR[t]))
                # llama.cpp's quantiser on the f32 model must make the same file
                if t != "f32":
                    theirs = os.path.join(tmp, "%s-%s-llama.gguf" % (cname, t))
                    try:
                        llama_quantize(f32_path, theirs, FTYPES[t])
                        n, bad_type, bad_data = compare_tensors(path, theirs)
                        if bad_type:
                            ok = False
                            notes.append("types differ: " + "; ".join(bad_type[:3]) +
                                         (" ..." if len(bad_type) > 3 else ""))
                        if bad_data:
                            ok = False
                            notes.append("%d/%d tensors differ from llama-quantize: %s" % (
                                len(bad_data), n, ", ".join(bad_data[:3])))
                        if not bad_type and not bad_data:
                            notes.append("= llama-quantize (%d tensors)" % n)
                    except Exception as e:
                        ok = False
                        notes.append("llama_model_quantize: %s" % e)
                    os.path.exists(theirs) and os.unlink(theirs)
                print("%s %-6s %-5s %6.2f MiB  logits std %5.2f  top1-top2 %5.2f  argmax %5d  "
                      "corr %.4f  %s" % ("ok  " if ok else "FAIL", cname, t,
                                         os.path.getsize(path) / 2 ** 20, lg.std(),
                                         top[0] - top[1], int(last.argmax()), corr,
                                         "; ".join(notes)))
                failures += not ok
                if t != "f32":
                    os.unlink(path)
    print("%d failure(s)" % failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
