#!/usr/bin/env python3
"""Write the seed corpus of fuzz_gguf (tests/fuzz/corpus/gguf/): small valid GGUF files and one
malformed file per rule the reader enforces. Python stdlib only.

Run: python3 tests/fuzz/make_gguf_corpus.py [OUTDIR]   (the files are committed; re-run only to
change the seeds; files found by fuzzing are added beside them with libFuzzer's -merge=1).
"""
import os
import struct
import sys

here = os.path.dirname(os.path.abspath(__file__))
out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "corpus", "gguf")

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<B",
       U64: "<Q", I64: "<q", F64: "<d"}
# ggml type: (block size, bytes per block)
GT = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
      12: (256, 144), 13: (256, 176), 14: (256, 210), 30: (1, 2)}


def s(b):
    b = b.encode() if isinstance(b, str) else b
    return struct.pack("<Q", len(b)) + b


def kv(key, t, v):
    r = s(key) + struct.pack("<I", t)
    if t == STR:
        return r + s(v)
    if t == ARR:
        et, items = v
        r += struct.pack("<IQ", et, len(items))
        return r + b"".join(s(x) if et == STR else struct.pack(FMT[et], x) for x in items)
    return r + struct.pack(FMT[t], v)


def nbytes(t, ne):
    bs, ts = GT[t]
    n = ne[0] // bs * ts
    for d in ne[1:]:
        n *= d
    return n


def gguf(kvs, tensors, version=3, align=32, data=True, magic=b"GGUF"):
    """tensors: (name, type, ne); offsets laid out in order with padding."""
    h = magic + struct.pack("<IQQ", version, len(tensors), len(kvs)) + b"".join(kvs)
    off, blobs = 0, []
    for name, t, ne in tensors:
        h += s(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
        h += struct.pack("<IQ", t, off)
        n = nbytes(t, ne)
        blobs.append(bytes((i * 37 + off) & 255 for i in range(n)) + b"\0" * (-n % align))
        off += n + (-n % align)
    if not data:
        return h
    return h + b"\0" * (-len(h) % align) + b"".join(blobs)


files = {}
all_kv = [kv("general.architecture", STR, "llama"), kv("t.u8", U8, 7), kv("t.i8", I8, -7),
          kv("t.u16", U16, 700), kv("t.i16", I16, -700), kv("t.u32", U32, 70000),
          kv("t.i32", I32, -70000), kv("t.f32", F32, 0.5), kv("t.bool", BOOL, 1),
          kv("t.u64", U64, 2**40), kv("t.i64", I64, -2**40), kv("t.f64", F64, 2.5),
          kv("t.str", STR, "x\0y"), kv("a.str", ARR, (STR, ["a", "", "\u2581b", b"\0"])),
          kv("a.i32", ARR, (I32, [1, -2, 3])), kv("a.f32", ARR, (F32, [0.5, 1.5])),
          kv("a.bool", ARR, (BOOL, [1, 0])), kv("a.u64", ARR, (U64, [2**63])),
          kv("a.empty", ARR, (U8, []))]
tensors = [("token_embd.weight", 0, [8, 4]), ("blk.0.attn_q.weight", 2, [64, 2]),
           ("blk.0.ffn.weight", 8, [32, 2, 2]), ("norm", 1, [5]), ("out", 14, [256, 1, 1, 1]),
           ("bf", 30, [3]), ("k4", 12, [256]), ("q41", 3, [32]), ("q50", 6, [32]), ("q51", 7, [32])]
files["valid_all_types"] = gguf(all_kv, tensors)
files["valid_v2"] = gguf(all_kv[:3], tensors[:2], version=2)
files["valid_align64"] = gguf([kv("general.alignment", U32, 64)] + all_kv[:2], tensors[:3], align=64)
files["valid_no_tensors"] = gguf(all_kv, [], data=False)
files["valid_empty"] = gguf([], [])
files["valid_vocab"] = gguf([kv("tokenizer.ggml.model", STR, "gpt2"),
                             kv("tokenizer.ggml.tokens", ARR, (STR, [bytes([i]) for i in range(256)])),
                             kv("tokenizer.ggml.scores", ARR, (F32, [float(-i) for i in range(256)])),
                             kv("tokenizer.ggml.token_type", ARR, (I32, [1] * 256))], [])
# malformed: one per rule
files["bad_magic"] = gguf(all_kv[:2], [], magic=b"GGUG")
files["bad_version1"] = gguf(all_kv[:2], [], version=1)
files["bad_version_be"] = gguf(all_kv[:2], [], version=0x03000000)
files["bad_truncated"] = files["valid_all_types"][:700]
files["bad_n_kv"] = b"GGUF" + struct.pack("<IQQ", 3, 0, 10**12) + kv("a", U8, 1)
files["bad_n_tensors"] = b"GGUF" + struct.pack("<IQQ", 3, 2**63, 0) + b"\0" * 40
files["bad_str_len"] = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + s("k") + struct.pack("<IQ", STR, 2**62) + b"ab"
files["bad_arr_count"] = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + s("k") + struct.pack("<IIQ", ARR, U32, 2**62) + b"\0" * 8
files["bad_str_arr_count"] = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + s("k") + struct.pack("<IIQ", ARR, STR, 2**61) + b"\0" * 16
files["bad_vtype"] = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + s("k") + struct.pack("<I", 13) + b"\0" * 8
files["bad_nested"] = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + s("k") + struct.pack("<IIQ", ARR, ARR, 1) + struct.pack("<IQB", U8, 1, 0)
files["bad_alignment"] = gguf([kv("general.alignment", U32, 48)], tensors[:1])
files["bad_alignment_type"] = gguf([kv("general.alignment", U64, 64)], tensors[:1])
files["bad_dup_key"] = gguf([kv("k", U8, 1), kv("k", U8, 2)], [])
files["bad_empty_key"] = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + s("") + struct.pack("<IB", U8, 1) + b"\0"


def ti(name, ne, t, off):
    return s(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d & (2**64 - 1)) for d in ne) + struct.pack("<IQ", t, off)


def raw(infos, tail=512):
    h = b"GGUF" + struct.pack("<IQQ", 3, len(infos), 0) + b"".join(infos)
    return h + b"\0" * (-len(h) % 32) + b"\0" * tail


files["bad_ndims0"] = raw([ti("t", [], 0, 0)])
files["bad_ndims5"] = raw([ti("t", [1, 1, 1, 1, 1], 0, 0)])
files["bad_dim0"] = raw([ti("t", [32, 0], 0, 0)])
files["bad_dim_neg"] = raw([ti("t", [32, -1], 0, 0)])
files["bad_nel_overflow"] = raw([ti("t", [2**32, 2**31, 4], 0, 0)])
files["bad_block"] = raw([ti("t", [33], 2, 0)])
files["bad_ggml_type"] = raw([ti("t", [32], 4, 0)])
files["bad_misaligned"] = raw([ti("t", [32], 0, 16)])
files["bad_past_eof"] = raw([ti("t", [32], 0, 0)], tail=100)
files["bad_overlap"] = raw([ti("a", [64], 0, 0), ti("b", [8], 0, 128)])
files["bad_dup_tensor"] = raw([ti("a", [8], 0, 0), ti("a", [8], 0, 32)])
files["bad_empty_name"] = raw([ti("", [8], 0, 0)])

shared = os.path.join(here, "..", "..", "..", "shared", "models", "stories260K.gguf")
if os.path.exists(shared):
    # the real model's header, metadata and tensor index (no weights): parses, then its tensors
    # are past the end
    with open(shared, "rb") as f:
        files["stories260K_meta"] = f.read(14176)

os.makedirs(out, exist_ok=True)
total = 0
for name, data in sorted(files.items()):
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
    total += len(data)
print(f"{len(files)} files, {total} bytes in {out}")
