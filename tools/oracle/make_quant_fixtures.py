#!/opt/oracle/bin/python
"""Write the quantisation fixtures under tests/fixtures/quant/ for tests/unit/test_quant.c.

Oracles: gguf-py (gguf.quants, numpy) and ggml itself (libggml-base.so shipped with
llama-cpp-python, called through ctypes: quantize_row_*_ref, dequantize_row_*). Where both
implement a conversion the script checks that they agree byte for byte and fails otherwise.
Everything is seeded, so running the script again writes identical files.

Usage: /opt/oracle/bin/python tools/oracle/make_quant_fixtures.py [OUTDIR]
       (OUTDIR defaults to tests/fixtures/quant next to this script's repository)

File format (all little-endian), one file per (type, kind), named <type>_<kind>.bin,
e.g. q4_K_quant.bin, q4_K_deq.bin:

    offset  size  field
    0       4     magic "BTQF"
    4       4     u32 version (1)
    8       4     u32 type      ggml / GGUF type id (e.g. 12 = q4_K)
    12      4     u32 kind      1 = deq:   quantised bytes -> floats
                                2 = quant: floats -> quantised bytes -> floats
    16      4     u32 oracle    bit 0: gguf-py produced/confirmed it, bit 1: ggml's reference
                                  (libggml-base) did, bit 2: ggml's x86 CPU backend
                                  (libggml-cpu quantize_row_q8_0/q8_1) did
    20      4     u32 n         number of elements (a multiple of the block size)
    24      4     u32 nbytes    bytes of quantised data (= row size of n elements)
    28      ...   kind 2 only: f32[n] input values
                  u8[nbytes]   quantised data (kind 1: random but valid blocks;
                                               kind 2: the oracle's quantisation of the input)
                  f32[n]       the oracle's dequantisation of those bytes

The C test checks that bt_dequantize_row reproduces the f32 output bit for bit (both kinds)
and that bt_quantize_row reproduces the bytes exactly (kind 2). The files q8_0_cpu_quant.bin and
q8_1_cpu_quant.bin (oracle bit 2) hold ggml's CPU-backend activation quantisation instead, which
bt_quantize_row_cpu must reproduce (needs a libggml-cpu built for x86 with AVX2, as the
llama-cpp-python wheel here is; the script checks that it differs from the reference on ties).

types.txt: ggml's type table, one line per id 0..N-1: "<id> <name> <blck_size> <type_size>",
with name "-" (and sizes 0) for ids ggml has deprecated or removed.
"""

import ctypes
import os
import struct
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

MAGIC = b"BTQF"
VERSION = 1
KIND_DEQ, KIND_QUANT = 1, 2
OR_GGUFPY, OR_GGML, OR_GGML_CPU = 1, 2, 4

NAMES = {T.F16: "f16", T.BF16: "bf16", T.Q4_0: "q4_0", T.Q4_1: "q4_1", T.Q5_0: "q5_0",
         T.Q5_1: "q5_1", T.Q8_0: "q8_0", T.Q8_1: "q8_1", T.Q2_K: "q2_K", T.Q3_K: "q3_K",
         T.Q4_K: "q4_K", T.Q5_K: "q5_K", T.Q6_K: "q6_K", T.Q8_K: "q8_K"}
# ggml's own sizes (gguf-py still lists the old 40-byte q8_1 with f32 d and s).
SIZES = {T.F16: (1, 2), T.BF16: (1, 2), T.Q4_0: (32, 18), T.Q4_1: (32, 20), T.Q5_0: (32, 22),
         T.Q5_1: (32, 24), T.Q8_0: (32, 34), T.Q8_1: (32, 36), T.Q2_K: (256, 84),
         T.Q3_K: (256, 110), T.Q4_K: (256, 144), T.Q5_K: (256, 176), T.Q6_K: (256, 210),
         T.Q8_K: (256, 292)}
# byte offsets of the f16 scale fields in each block (kind 1 sets them to sane values)
F16_FIELDS = {T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
              T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208]}
GGUFPY_QUANT = {T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0}
GGUFPY_DEQ = {T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K,
              T.Q6_K}
GGML_DEQ = {T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K,
            T.Q8_K}


def load_ggml():
    try:
        import llama_cpp  # noqa: F401  (only to find its libraries)
    except ImportError:
        return None
    libdir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    for name in ("libggml-base.so", "libggml.so"):
        path = os.path.join(libdir, name)
        if os.path.exists(path):
            lib = ctypes.CDLL(path)
            if hasattr(lib, "quantize_row_q4_K_ref"):
                return lib
    return None


GGML = load_ggml()


def load_ggml_cpu():
    if GGML is None:
        return None
    import llama_cpp
    path = os.path.join(os.path.dirname(llama_cpp.__file__), "lib", "libggml-cpu.so")
    return ctypes.CDLL(path) if os.path.exists(path) else None


GGML_CPU = load_ggml_cpu()
# ids 0..42 are known to the ggml in llama-cpp-python 0.3.36 (42 = q2_0 is newer than gguf-py)
GGML_TYPE_COUNT = 43


def ptr(a):
    return a.ctypes.data_as(ctypes.c_void_p)


def ggml_quant(t, x):
    bs, ts = SIZES[t]
    out = np.zeros(len(x) // bs * ts, dtype=np.uint8)
    xs = np.ascontiguousarray(x, dtype=np.float32)
    if t == T.F16:
        GGML.ggml_fp32_to_fp16_row(ptr(xs), ptr(out), ctypes.c_int64(len(x)))
    elif t == T.BF16:
        GGML.ggml_fp32_to_bf16_row_ref(ptr(xs), ptr(out), ctypes.c_int64(len(x)))
    else:
        fn = getattr(GGML, "quantize_row_%s_ref" % NAMES[t])
        fn(ptr(xs), ptr(out), ctypes.c_int64(len(x)))
    return out


def ggml_deq(t, q, n):
    out = np.zeros(n, dtype=np.float32)
    fn = getattr(GGML, "dequantize_row_%s" % NAMES[t])
    fn(ptr(np.ascontiguousarray(q)), ptr(out), ctypes.c_int64(n))
    return out


def numpy_deq(t, q, n):
    """Independent dequantisation for what neither gguf-py nor ggml exports."""
    if t == T.F16:
        return q.view(np.float16).astype(np.float32)
    if t == T.Q8_1:  # d f16, s f16, 32 x int8
        b = q.reshape(-1, 36)
        d = b[:, 0:2].copy().view(np.float16).astype(np.float32)
        qs = b[:, 4:].copy().view(np.int8).astype(np.float32)
        return (qs * d).reshape(n)
    raise ValueError(t)


def same(a, b):
    return a.shape == b.shape and a.tobytes() == b.tobytes()


def write(outdir, t, kind, oracle, x, q, y, suffix=""):
    bs, ts = SIZES[t]
    n = len(y)
    assert n % bs == 0 and len(q) == n // bs * ts, (NAMES[t], n, len(q))
    path = os.path.join(outdir, "%s%s_%s.bin" % (NAMES[t], suffix,
                                                  "quant" if kind == KIND_QUANT else "deq"))
    with open(path, "wb") as f:
        f.write(MAGIC + struct.pack("<6I", VERSION, int(t), kind, oracle, n, len(q)))
        if kind == KIND_QUANT:
            f.write(np.asarray(x, dtype="<f4").tobytes())
        f.write(np.asarray(q, dtype=np.uint8).tobytes())
        f.write(np.asarray(y, dtype="<f4").tobytes())
    print("wrote %-32s n=%-5d bytes=%-5d oracle=%s" % (
        os.path.relpath(path), n, len(q),
        "+".join(s for s, b in (("gguf-py", OR_GGUFPY), ("ggml", OR_GGML),
                                ("ggml-cpu", OR_GGML_CPU)) if oracle & b)))


# ------------------------------------------------------------------ inputs

def block_pattern(rng, k, size):
    """One block (size values) of input pattern k: ordinary and awkward distributions."""
    p = k % 16
    if p == 0:
        return rng.standard_normal(size)
    if p == 1:
        return rng.standard_normal(size) * 1e-3
    if p == 2:
        return rng.standard_normal(size) * 300
    if p == 3:
        return rng.uniform(-1, 1, size)
    if p == 4:
        return np.zeros(size)
    if p == 5:
        return np.full(size, 0.75)
    if p == 6:
        return rng.uniform(0.5, 2, size)
    if p == 7:
        return rng.uniform(-2, -0.5, size)
    if p == 8:  # one outlier
        v = rng.standard_normal(size) * 0.1
        v[3] = 10
        return v
    if p == 9:  # exact .5 ties after scaling by 1 (q8: amax 127 -> d = 1)
        v = (rng.integers(-120, 120, size) + 0.5)
        v[0] = 127
        return v
    if p == 10:
        return rng.laplace(0, 1, size)
    if p == 11:
        return rng.standard_normal(size) * 1e-5  # scales near the f16 subnormal range
    if p == 12:
        return rng.standard_normal(size) * 1000
    if p == 13:  # sub-blocks of very different scale (exercises K-quant scale packing)
        v = rng.standard_normal(size)
        for j in range(0, size, 16):
            v[j:j + 16] *= 10.0 ** rng.uniform(-3, 1)
        return v
    if p == 14:  # mostly zero, few values
        v = np.zeros(size)
        v[rng.integers(0, size, 3)] = rng.standard_normal(3)
        return v
    return rng.standard_normal(size) * 10.0 ** rng.uniform(-2, 2)


def quant_inputs(t, rng):
    bs = SIZES[t][0]
    if bs == 32:
        pats = range(32)
    else:  # super-blocks: fewer, chosen to keep the files small
        pats = [0, 2, 4, 5, 6, 8, 11, 12, 13, 14]
    return np.concatenate([block_pattern(rng, k, max(bs, 32)) for k in pats]).astype(np.float32)


def half_inputs(rng):
    """Floats that exercise f32 -> f16 / bf16 rounding: ties, overflow, subnormals, signs."""
    v = [0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, 65504.0, 65519.99, 65520.0, -65520.0, 1e9,
         2.0 ** -14, 2.0 ** -24, 2.0 ** -25, 2.0 ** -25 * 1.0001, 2.0 ** -26, 1.5 * 2.0 ** -24,
         2.5 * 2.0 ** -24, 6.0e-8, 3.0e-8, 1e-30, 3.4e38, -3.4e38, 1.4e-45]
    for k in range(64):  # exact ties between neighbouring halves, both parities
        m = 1024 + k
        v.append((m + 0.5) * 2.0 ** -10)
        v.append(-(m + 0.5) * 2.0 ** rng.integers(-14, 5))
    bits = rng.integers(0, 2 ** 32, 512, dtype=np.uint64).astype(np.uint32)
    rand = bits.view(np.float32)
    rand = rand[np.isfinite(rand)]
    spread = rng.standard_normal(256) * np.exp2(rng.uniform(-30, 17, 256))
    x = np.concatenate([np.array(v), rand.astype(np.float64), spread]).astype(np.float32)
    return x[: len(x) // 32 * 32]


# ------------------------------------------------------------------ random blocks

def random_blocks(t, rng, n):
    bs, ts = SIZES[t]
    nb = n // bs
    if t in (T.F16, T.BF16):
        q = rng.integers(0, 2 ** 16, n, dtype=np.uint64).astype(np.uint16)
        exp = (q >> (10 if t == T.F16 else 7)) & (0x1F if t == T.F16 else 0xFF)
        nan = (exp == (0x1F if t == T.F16 else 0xFF)) & ((q & (0x3FF if t == T.F16 else 0x7F)) != 0)
        q[nan] = 0x3C00 if t == T.F16 else 0x3F80  # NaNs have no single right answer
        specials = [0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x0400, 0x7BFF, 0x7C00, 0xFC00] \
            if t == T.F16 else [0x0000, 0x8000, 0x0001, 0x007F, 0x0080, 0x7F7F, 0x7F80, 0xFF80]
        q[: len(specials)] = specials
        return q.view(np.uint8)
    q = rng.integers(0, 256, (nb, ts), dtype=np.uint64).astype(np.uint8)
    for off in F16_FIELDS[t]:
        d = (rng.uniform(1e-4, 0.5, nb) * rng.choice([-1, 1], nb)).astype(np.float16)
        d[0] = 0  # one block with a zero scale
        q[:, off:off + 2] = d.view(np.uint8).reshape(nb, 2)
    return q.reshape(-1)


# ------------------------------------------------------------------ main

def main():
    here = os.path.dirname(os.path.abspath(__file__))
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "..", "tests",
                                                                  "fixtures", "quant")
    os.makedirs(outdir, exist_ok=True)
    if GGML is None:
        sys.exit("llama-cpp-python (ggml) is needed for the K-quant fixtures: "
                 "/opt/oracle/bin/python -c 'import llama_cpp' fails")
    rng = np.random.default_rng(20240611)

    GGML.ggml_type_name.restype = ctypes.c_char_p
    GGML.ggml_type_size.restype = ctypes.c_size_t
    GGML.ggml_blck_size.restype = ctypes.c_int64
    with open(os.path.join(outdir, "types.txt"), "w") as f:
        for t in range(GGML_TYPE_COUNT):
            name = GGML.ggml_type_name(t).decode()
            bs, ts = GGML.ggml_blck_size(t), GGML.ggml_type_size(t)
            if bs == 0 or not name.replace("_", "").isalnum():
                name, bs, ts = "-", 0, 0
            f.write("%d %s %d %d\n" % (t, name, bs, ts))
    print("wrote types.txt (%d ids)" % GGML_TYPE_COUNT)

    # kind 2: quantisation
    for t in [T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q8_1, T.Q2_K, T.Q3_K,
              T.Q4_K, T.Q5_K, T.Q6_K, T.Q8_K]:
        x = half_inputs(rng) if t in (T.F16, T.BF16) else quant_inputs(t, rng)
        n = len(x)
        oracle = 0
        q = ggml_quant(t, x)
        oracle |= OR_GGML
        if t == T.F16:
            with np.errstate(over="ignore"):
                qn = x.astype(np.float16).view(np.uint8)
            assert same(q, qn), "ggml and numpy disagree on f32->f16"
            oracle |= OR_GGUFPY
        elif t in GGUFPY_QUANT:
            qp = quants.quantize(x.reshape(1, -1), t).reshape(-1)
            assert same(q, qp), "ggml and gguf-py disagree on quantising %s" % NAMES[t]
            oracle |= OR_GGUFPY
        if t in GGUFPY_DEQ:
            y = quants.dequantize(q.reshape(1, -1), t).reshape(-1).astype(np.float32)
            if t in GGML_DEQ:
                assert same(y, ggml_deq(t, q, n)), "dequant mismatch %s" % NAMES[t]
        elif t in GGML_DEQ:
            y = ggml_deq(t, q, n)
        else:
            y = numpy_deq(t, q, n)
        write(outdir, t, KIND_QUANT, oracle, x, q, y)

    # kind 2 again: the CPU backend's activation quantisers (differ from the reference on ties)
    if GGML_CPU is None:
        sys.exit("libggml-cpu.so not found next to libggml-base.so")
    for t in [T.Q8_0, T.Q8_1]:
        x = quant_inputs(t, rng)
        n = len(x)
        q = np.zeros(n // 32 * SIZES[t][1], dtype=np.uint8)
        getattr(GGML_CPU, "quantize_row_%s" % NAMES[t])(ptr(x), ptr(q), ctypes.c_int64(n))
        assert not same(q, ggml_quant(t, x)), \
            "libggml-cpu quantize_row_%s equals the reference: not an AVX2 build?" % NAMES[t]
        y = ggml_deq(t, q, n) if t in GGML_DEQ else numpy_deq(t, q, n)
        write(outdir, t, KIND_QUANT, OR_GGML_CPU, x, q, y, suffix="_cpu")

    # kind 1: dequantisation of random (valid) blocks
    for t in [T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q2_K, T.Q3_K, T.Q4_K,
              T.Q5_K, T.Q6_K]:
        bs = SIZES[t][0]
        n = 2048 if bs == 256 else 1024
        q = random_blocks(t, rng, n)
        if t == T.F16:
            y, oracle = numpy_deq(t, q, n), OR_GGUFPY
        else:
            y = quants.dequantize(q.reshape(1, -1), t).reshape(-1).astype(np.float32)
            oracle = OR_GGUFPY
            if t in GGML_DEQ:
                assert same(y, ggml_deq(t, q, n)), "dequant mismatch %s" % NAMES[t]
                oracle |= OR_GGML
        write(outdir, t, KIND_DEQ, oracle, None, q, y)


if __name__ == "__main__":
    main()
