#!/usr/bin/env python3
"""Write the seed corpus of fuzz_tok (tests/fuzz/corpus/tok/): texts for the built-in
vocabularies, and small GGUF vocabularies (valid and broken) for tok_load. Python stdlib only.

Run: python3 tests/fuzz/make_tok_corpus.py [OUTDIR]   (the files are committed; re-run only to
change the seeds).
"""
import os
import struct
import sys

here = os.path.dirname(os.path.abspath(__file__))
out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "corpus", "tok")

U32, I32, F32, BOOL, STR, ARR = 4, 5, 6, 7, 8, 9


def s(b):
    b = b.encode() if isinstance(b, str) else b
    return struct.pack("<Q", len(b)) + b


def kv(key, t, v, et=None):
    r = s(key) + struct.pack("<I", t)
    if t == STR:
        return r + s(v)
    if t == U32:
        return r + struct.pack("<I", v)
    if t == BOOL:
        return r + struct.pack("<B", v)
    assert t == ARR
    r += struct.pack("<IQ", et, len(v))
    if et == STR:
        return r + b"".join(s(x) for x in v)
    return r + b"".join(struct.pack("<f" if et == F32 else "<i", x) for x in v)


def gguf(kvs):
    return b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs)


def byte_chars():
    out, n = [], 0
    for b in range(256):
        keep = 0x21 <= b <= 0x7E or 0xA1 <= b <= 0xAC or b >= 0xAE
        out.append(chr(b if keep else 256 + n))
        n += 0 if keep else 1
    return out


def spm_vocab(scores_short=False):
    toks = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)] + \
        ["\u2581", "\u2581t", "he", "\u2581the", "\u2581a"]
    types = [2, 3, 3] + [6] * 256 + [1] * 5
    scores = [0.0] * (len(toks) - 5) + [-1.0, -2.0, -3.0, -4.0, -5.0]
    if scores_short:
        scores = scores[:-1]
    return gguf([kv("tokenizer.ggml.model", STR, "llama"),
                 kv("tokenizer.ggml.tokens", ARR, toks, STR),
                 kv("tokenizer.ggml.scores", ARR, scores, F32),
                 kv("tokenizer.ggml.token_type", ARR, types, I32),
                 kv("tokenizer.ggml.add_bos_token", BOOL, 1)])


def bpe_vocab(pre, extra=()):
    toks = byte_chars() + ["\u0120t", "he", "\u0120the", "in", "12", "<|endoftext|>"] + list(extra)
    types = [1] * 261 + [3] + [4] * len(extra)
    merges = ["\u0120 t", "h e", "\u0120t he", "i n", "1 2"]
    return gguf([kv("tokenizer.ggml.model", STR, "gpt2"),
                 kv("tokenizer.ggml.pre", STR, pre),
                 kv("tokenizer.ggml.tokens", ARR, toks, STR),
                 kv("tokenizer.ggml.token_type", ARR, types, I32),
                 kv("tokenizer.ggml.merges", ARR, merges, STR),
                 kv("tokenizer.ggml.eos_token_id", U32, 261)])


SEEDS = {
    "text_hello": "Hello world, the thin inn.".encode(),
    "text_specials": "<s>hi</s> <|endoftext|><tool>x".encode(),
    "text_scripts": "Grüße мир 世界 नमस्ते 😀👨‍👩‍👧 1234567 it's I'LL".encode(),
    "text_spaces": " \t\n\r\n   \u00a0\u3000 x  \n\n".encode(),
    "text_invalid": b"\x80\xff\xc3(\xe2\x82\xf0\x9f\x98 \xed\xa0\x80\xc0\xaf",
    "gguf_spm": spm_vocab(),
    "gguf_spm_bad_scores": spm_vocab(scores_short=True),
    "gguf_bpe_gpt2": bpe_vocab("gpt-2"),
    "gguf_bpe_llama3": bpe_vocab("llama-bpe", ["<tool>"]),
    "gguf_bpe_deepseek": bpe_vocab("deepseek-llm", ["[PAD1]", "<tool>"]),
    "gguf_bpe_unknown_pre": bpe_vocab("martian"),
}

os.makedirs(out, exist_ok=True)
for name, data in SEEDS.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
print("%d seeds in %s" % (len(SEEDS), out))
