/* test_quant: the type table against ggml's (fixture types.txt), f16/bf16 conversions
 * (exhaustive round trips and ties), dequantisation and quantisation bit-exact against the
 * fixtures written by tools/oracle/make_quant_fixtures.py (gguf-py and ggml), and hand-made edge
 * rows (zeros, constants, huge/tiny magnitudes, NaN/Inf, bad arguments). */
#include "log.h"
#include "quant.h"
#include "t.h"

#include <stdint.h>

static uint32_t fbits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof(u));
    return u;
}

static float bitsf(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

static int read_file(const char *path, unsigned char **data, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    unsigned char *buf = NULL;
    size_t cap = 0, len = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 65536;
            unsigned char *nb = realloc(buf, cap);
            if (!nb) break;
            buf = nb;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
    }
    fclose(f);
    *data = buf;
    *size = len;
    return 0;
}

static uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ------------------------------------------------------------------ type table */

static void test_type_table(void)
{
    unsigned char *data = NULL;
    size_t size = 0;
    const char *path = t_path("BATON_SRC", "tests/fixtures/quant/types.txt");
    CHECK(read_file(path, &data, &size) == 0);
    if (!data) return;
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = 0;
    int lines = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        unsigned id;
        char name[64];
        long blck, tsize;
        if (sscanf(line, "%u %63s %ld %ld", &id, name, &blck, &tsize) != 4) continue;
        lines++;
        const struct bt_type_info *ti = bt_type_get(id);
        if (strcmp(name, "-") == 0) {
            CHECK(ti == NULL);
            if (ti) fprintf(stderr, "  type %u should be unknown\n", id);
            continue;
        }
        CHECK(ti != NULL);
        if (!ti) continue;
        CHECK_STR(ti->name, name);
        CHECK_INT(ti->blck_size, blck);
        CHECK_INT(ti->type_size, tsize);
        CHECK_STR(bt_type_name(id), name);
        CHECK_INT(bt_type_from_name(name), id);
        CHECK_INT(bt_row_size(id, 4 * blck), 4 * tsize);
    }
    CHECK_INT(lines, BT_TYPE_COUNT);
    free(text);
    free(data);

    /* the struct layouts agree with the table */
    CHECK_INT(bt_type_get(BT_Q4_K)->type_size, sizeof(block_q4_K));
    CHECK_INT(bt_type_get(BT_Q8_K)->type_size, sizeof(block_q8_K));
    CHECK_INT(bt_type_get(BT_Q3_K)->type_size, sizeof(block_q3_K));

    CHECK(bt_type_get(BT_TYPE_COUNT) == NULL);
    CHECK(bt_type_get(UINT32_MAX) == NULL);
    CHECK_STR(bt_type_name(4), "unknown");
    CHECK_STR(bt_type_name(1000), "unknown");
    CHECK_INT(bt_type_from_name("Q4_K"), BT_Q4_K);
    CHECK_INT(bt_type_from_name("BF16"), BT_BF16);
    CHECK_INT(bt_type_from_name("q4"), -1);
    CHECK_INT(bt_type_from_name(""), -1);
    CHECK_INT(bt_type_from_name(NULL), -1);
    CHECK_INT(bt_row_size(BT_Q4_0, 33), 0);
    CHECK_INT(bt_row_size(BT_Q4_0, -32), 0);
    CHECK_INT(bt_row_size(BT_Q4_0, 0), 0);
    CHECK_INT(bt_row_size(BT_F32, 7), 28);
    CHECK_INT(bt_row_size(4, 32), 0);
    CHECK_INT(bt_row_size(BT_Q8_K, INT64_MAX / 256 * 256), 0); /* would overflow size_t */

    /* flags */
    const uint32_t deq[] = {BT_F32,  BT_F16,  BT_BF16, BT_Q4_0, BT_Q4_1, BT_Q5_0, BT_Q5_1, BT_Q8_0,
                            BT_Q8_1, BT_Q2_K, BT_Q3_K, BT_Q4_K, BT_Q5_K, BT_Q6_K, BT_Q8_K};
    for (size_t i = 0; i < sizeof(deq) / sizeof(deq[0]); i++) {
        CHECK(bt_type_get(deq[i])->can_dequant);
        CHECK(bt_type_get(deq[i])->can_quant);
    }
    CHECK(!bt_type_get(16)->can_dequant); /* iq2_xxs: sized, not supported */
    CHECK(!bt_type_get(BT_I32)->can_quant);
}

/* ------------------------------------------------------------------ f16 / bf16 */

static void test_half(void)
{
    int bad_rt = 0, bad_tie = 0, bad_bf = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        const float f = bt_f16_to_f32((bt_f16)h);
        const bool nan = ((h >> 10) & 0x1f) == 0x1f && (h & 0x3ff);
        if (nan) {
            if (!isnan(f) || !isnan(bt_f16_to_f32(bt_f32_to_f16(f)))) bad_rt++;
        } else if (bt_f32_to_f16(f) != h) {
            bad_rt++;
        }
        /* ties between neighbours go to the even one; a hair either side goes to the nearer */
        if ((h & 0x7fff) < 0x7bff) {
            const float g = bt_f16_to_f32((bt_f16)(h + 1));
            const float mid = (float)(((double)f + (double)g) / 2); /* exact: 12 bits */
            const uint32_t even = (h & 1) ? h + 1 : h;
            if (bt_f32_to_f16(mid) != even) bad_tie++;
            if (bt_f32_to_f16(nextafterf(mid, 2 * g)) != h + 1) bad_tie++;
            if (f != 0 && bt_f32_to_f16(nextafterf(mid, 0)) != h) bad_tie++;
        }
        /* bf16: round trip and ties the same way */
        const float b = bt_bf16_to_f32((bt_bf16)h);
        const bool bnan = ((h >> 7) & 0xff) == 0xff && (h & 0x7f);
        if (bnan ? !isnan(b) : bt_f32_to_bf16(b) != h) bad_bf++;
        if (!bnan && ((h >> 7) & 0xff) < 0xfe) {
            const float mid = bitsf(fbits(b) | 0x8000u); /* halfway to the next bf16 */
            const uint32_t even = (h & 1) ? h + 1 : h;
            if (bt_f32_to_bf16(mid) != even) bad_bf++;
            if (bt_f32_to_bf16(bitsf(fbits(mid) + 1)) != h + 1) bad_bf++;
            if (bt_f32_to_bf16(bitsf(fbits(mid) - 1)) != h) bad_bf++;
        }
    }
    CHECK_INT(bad_rt, 0);
    CHECK_INT(bad_tie, 0);
    CHECK_INT(bad_bf, 0);

    CHECK_INT(bt_f32_to_f16(65504.f), 0x7bff);
    CHECK_INT(bt_f32_to_f16(65519.99f), 0x7bff);
    CHECK_INT(bt_f32_to_f16(65520.f), 0x7c00); /* ties to even -> overflows to inf */
    CHECK_INT(bt_f32_to_f16(-1e30f), 0xfc00);
    CHECK_INT(bt_f32_to_f16(INFINITY), 0x7c00);
    CHECK_INT(bt_f32_to_f16(-0.0f), 0x8000);
    CHECK_INT(bt_f32_to_f16(0x1p-24f), 0x0001);
    CHECK_INT(bt_f32_to_f16(0x1p-25f), 0x0000);        /* tie to even (0) */
    CHECK_INT(bt_f32_to_f16(0x1.000002p-25f), 0x0001); /* just above the tie */
    CHECK_INT(bt_f32_to_f16(0x1.8p-24f), 0x0002);      /* 1.5 ulp ties up to 2 */
    CHECK_INT(bt_f32_to_f16(0x1.ffcp-15f), 0x0400);    /* rounds up into the normals */
    CHECK_INT(bt_f32_to_f16(1e-30f), 0x0000);
    CHECK(isnan(bt_f16_to_f32(bt_f32_to_f16(NAN))));
    CHECK(isnan(bt_f16_to_f32(bt_f32_to_f16(bitsf(0x7f800001u))))); /* low payload only */
    CHECK_NEAR(bt_f16_to_f32(0x3c00), 1.0, 0);
    CHECK_NEAR(bt_f16_to_f32(0xc000), -2.0, 0);
    CHECK_NEAR(bt_f16_to_f32(0x0001), 0x1p-24, 0);
    CHECK(isinf(bt_f16_to_f32(0x7c00)));

    CHECK_INT(bt_f32_to_bf16(1.0f), 0x3f80);
    CHECK_INT(bt_f32_to_bf16(bitsf(0x3f808000u)), 0x3f80);            /* tie, even stays */
    CHECK_INT(bt_f32_to_bf16(bitsf(0x3f818000u)), 0x3f82);            /* tie, odd goes up */
    CHECK_INT(bt_f32_to_bf16(bitsf(0x7f7fffffu)), 0x7f80);            /* FLT_MAX rounds to inf */
    CHECK(isnan(bt_bf16_to_f32(bt_f32_to_bf16(bitsf(0x7f800001u))))); /* not truncated to inf */
    CHECK(isnan(bt_bf16_to_f32(bt_f32_to_bf16(bitsf(0xffffffffu)))));
    CHECK_INT(bt_f32_to_bf16(bitsf(0x00000001u)), 0x0000); /* subnormals round, not flush */
    CHECK_INT(bt_f32_to_bf16(bitsf(0x0000c000u)), 0x0001);

    /* row helpers */
    float x[5] = {1.0f, -2.5f, 0.333f, 65504.f, 1e-6f}, y[5];
    bt_f16 h[5];
    bt_bf16 b[5];
    bt_f32_to_f16_row(x, h, 5);
    bt_f16_to_f32_row(h, y, 5);
    for (int i = 0; i < 5; i++) CHECK_INT(h[i], bt_f32_to_f16(x[i]));
    for (int i = 0; i < 5; i++) CHECK_NEAR(y[i], x[i], fabs(x[i]) * 1e-3 + 6e-8);
    bt_f32_to_bf16_row(x, b, 5);
    bt_bf16_to_f32_row(b, y, 5);
    for (int i = 0; i < 5; i++) CHECK_NEAR(y[i], x[i], fabs(x[i]) * 4e-3);
}

/* ------------------------------------------------------------------ fixtures */

struct fixture {
    const char *file;
    uint32_t type;
    uint32_t kind; /* 1 deq, 2 quant */
    bool cpu;      /* quantised by ggml's CPU backend: check bt_quantize_row_cpu */
};

static const struct fixture fixtures[] = {
    {"f16_quant.bin", BT_F16, 2, false},      {"bf16_quant.bin", BT_BF16, 2, false},
    {"q4_0_quant.bin", BT_Q4_0, 2, false},    {"q4_1_quant.bin", BT_Q4_1, 2, false},
    {"q5_0_quant.bin", BT_Q5_0, 2, false},    {"q5_1_quant.bin", BT_Q5_1, 2, false},
    {"q8_0_quant.bin", BT_Q8_0, 2, false},    {"q8_1_quant.bin", BT_Q8_1, 2, false},
    {"q2_K_quant.bin", BT_Q2_K, 2, false},    {"q3_K_quant.bin", BT_Q3_K, 2, false},
    {"q4_K_quant.bin", BT_Q4_K, 2, false},    {"q5_K_quant.bin", BT_Q5_K, 2, false},
    {"q6_K_quant.bin", BT_Q6_K, 2, false},    {"q8_K_quant.bin", BT_Q8_K, 2, false},
    {"f16_deq.bin", BT_F16, 1, false},        {"bf16_deq.bin", BT_BF16, 1, false},
    {"q4_0_deq.bin", BT_Q4_0, 1, false},      {"q4_1_deq.bin", BT_Q4_1, 1, false},
    {"q5_0_deq.bin", BT_Q5_0, 1, false},      {"q5_1_deq.bin", BT_Q5_1, 1, false},
    {"q8_0_deq.bin", BT_Q8_0, 1, false},      {"q2_K_deq.bin", BT_Q2_K, 1, false},
    {"q3_K_deq.bin", BT_Q3_K, 1, false},      {"q4_K_deq.bin", BT_Q4_K, 1, false},
    {"q5_K_deq.bin", BT_Q5_K, 1, false},      {"q6_K_deq.bin", BT_Q6_K, 1, false},
    {"q8_0_cpu_quant.bin", BT_Q8_0, 2, true}, {"q8_1_cpu_quant.bin", BT_Q8_1, 2, true},
};

/* index of the first differing float bit pattern, or -1 */
static int64_t first_float_diff(const float *a, const float *b, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (fbits(a[i]) != fbits(b[i])) return i;
    return -1;
}

static void test_fixture(const struct fixture *fx)
{
    char rel[256];
    snprintf(rel, sizeof(rel), "tests/fixtures/quant/%s", fx->file);
    unsigned char *d = NULL;
    size_t size = 0;
    if (read_file(t_path("BATON_SRC", rel), &d, &size) != 0) {
        fprintf(stderr, "missing fixture %s\n", rel);
        CHECK(0);
        return;
    }
    float *x = NULL, *want = NULL, *got = NULL;
    unsigned char *q = NULL;
    CHECK(size >= 28 && memcmp(d, "BTQF", 4) == 0);
    if (size < 28 || memcmp(d, "BTQF", 4) != 0) goto out;
    const uint32_t version = rd32(d + 4), type = rd32(d + 8), kind = rd32(d + 12);
    const uint32_t n = rd32(d + 20), nbytes = rd32(d + 24);
    CHECK_INT(version, 1);
    CHECK_INT(type, fx->type);
    CHECK_INT(kind, fx->kind);
    CHECK_INT(nbytes, bt_row_size(type, n));
    const size_t need = 28 + (kind == 2 ? 4 * (size_t)n : 0) + nbytes + 4 * (size_t)n;
    CHECK_INT(size, need);
    if (size != need || nbytes != bt_row_size(type, n) || n == 0) goto out;

    /* copies, so every buffer is suitably aligned */
    const unsigned char *p = d + 28;
    x = malloc(4 * (size_t)n);
    want = malloc(4 * (size_t)n);
    got = malloc(4 * (size_t)n);
    q = malloc(nbytes);
    if (kind == 2) {
        memcpy(x, p, 4 * (size_t)n);
        p += 4 * (size_t)n;
    }
    const unsigned char *qref = p;
    memcpy(want, p + nbytes, 4 * (size_t)n);

    /* dequantisation of the oracle's bytes */
    memcpy(q, qref, nbytes);
    CHECK_INT(bt_dequantize_row(type, q, got, n), BT_OK);
    int64_t i = first_float_diff(got, want, n);
    if (i >= 0)
        fprintf(stderr, "%s: dequant differs at %lld: %.9g vs %.9g\n", fx->file, (long long)i,
                got[i], want[i]);
    CHECK(i < 0);

    if (kind == 2) {
        memset(q, 0xAA, nbytes);
        CHECK_INT((fx->cpu ? bt_quantize_row_cpu : bt_quantize_row)(type, x, q, n), BT_OK);
        size_t k = 0;
        while (k < nbytes && q[k] == qref[k]) k++;
        if (k < nbytes) {
            const size_t bs = bt_type_get(type)->type_size;
            fprintf(stderr, "%s: quant differs at byte %zu (block %zu, offset %zu): %u vs %u\n",
                    fx->file, k, k / bs, k % bs, q[k], qref[k]);
        }
        CHECK_INT(k, nbytes);
    }
out:
    free(x);
    free(want);
    free(got);
    free(q);
    free(d);
}

/* ------------------------------------------------------------------ round trips, edges */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static double rnd_unit(void) /* [0, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) * 0x1p-53;
}
static float rnd_normal(void)
{
    double u = rnd_unit(), v = rnd_unit();
    return (float)(sqrt(-2 * log(u + 1e-300)) * cos(6.283185307179586 * v));
}

static const uint32_t qtypes[] = {BT_F32,  BT_F16,  BT_BF16, BT_Q4_0, BT_Q4_1,
                                  BT_Q5_0, BT_Q5_1, BT_Q8_0, BT_Q8_1, BT_Q2_K,
                                  BT_Q3_K, BT_Q4_K, BT_Q5_K, BT_Q6_K, BT_Q8_K};
#define NQT (sizeof(qtypes) / sizeof(qtypes[0]))
#define ROW 1024

/* relative RMS error of quantise + dequantise */
static double roundtrip_rel_rms(uint32_t type, const float *x, float *y, int64_t n)
{
    static unsigned char q[ROW * 4];
    if (bt_quantize_row(type, x, q, n) != BT_OK) return 1e9;
    if (bt_dequantize_row(type, q, y, n) != BT_OK) return 1e9;
    double se = 0, sx = 0;
    for (int64_t i = 0; i < n; i++) {
        se += ((double)y[i] - x[i]) * ((double)y[i] - x[i]);
        sx += (double)x[i] * x[i];
    }
    return sx > 0 ? sqrt(se / sx) : sqrt(se);
}

/* about 1.25x the error measured on N(0, 0.02) rows: a quantiser that loses a bit fails */
static double bound_for(uint32_t t)
{
    switch (t) {
    case BT_F32:
        return 0;
    case BT_F16:
        return 3e-4;
    case BT_BF16:
        return 2.5e-3;
    case BT_Q8_0:
    case BT_Q8_1:
    case BT_Q8_K:
        return 8e-3;
    case BT_Q6_K:
        return 2.2e-2;
    case BT_Q5_0:
    case BT_Q5_1:
    case BT_Q5_K:
        return 5e-2;
    case BT_Q4_0:
    case BT_Q4_1:
    case BT_Q4_K:
        return 0.1;
    case BT_Q3_K:
        return 0.19;
    case BT_Q2_K:
        return 0.36;
    default:
        return 0;
    }
}

static void test_roundtrip(void)
{
    static float x[ROW], y[ROW];
    for (int i = 0; i < ROW; i++) x[i] = rnd_normal() * 0.02f;
    for (size_t k = 0; k < NQT; k++) {
        const double e = roundtrip_rel_rms(qtypes[k], x, y, ROW);
        if (getenv("QUANT_VERBOSE"))
            fprintf(stderr, "%-5s rel rms %.5f\n", bt_type_name(qtypes[k]), e);
        if (!(e <= bound_for(qtypes[k])))
            fprintf(stderr, "%s: relative RMS error %g > %g\n", bt_type_name(qtypes[k]), e,
                    bound_for(qtypes[k]));
        CHECK(e <= bound_for(qtypes[k]));
    }
    const double e4 = roundtrip_rel_rms(BT_Q4_K, x, y, ROW);
    const double e6 = roundtrip_rel_rms(BT_Q6_K, x, y, ROW);
    const double e8 = roundtrip_rel_rms(BT_Q8_0, x, y, ROW);
    CHECK(e8 < e6 && e6 < e4);

    /* determinism: same input, same bytes */
    static unsigned char a[ROW * 4], b[ROW * 4];
    for (size_t k = 0; k < NQT; k++) {
        const size_t rs = bt_row_size(qtypes[k], ROW);
        memset(a, 1, rs);
        memset(b, 2, rs);
        bt_quantize_row(qtypes[k], x, a, ROW);
        bt_quantize_row(qtypes[k], x, b, ROW);
        CHECK(memcmp(a, b, rs) == 0);
    }
}

static void test_edges(void)
{
    static float x[ROW], y[ROW];
    static unsigned char q[ROW * 4];

    for (size_t k = 0; k < NQT; k++) {
        const uint32_t t = qtypes[k];
        const char *name = bt_type_name(t);
        /* all zeros -> exactly zero back */
        memset(x, 0, sizeof(x));
        CHECK_INT(bt_quantize_row(t, x, q, ROW), BT_OK);
        CHECK_INT(bt_dequantize_row(t, q, y, ROW), BT_OK);
        int nz = 0;
        for (int i = 0; i < ROW; i++) nz += y[i] != 0;
        if (nz) fprintf(stderr, "%s: zero row gives %d non-zeros\n", name, nz);
        CHECK_INT(nz, 0);

        /* constant rows, positive and negative, come back close */
        const float consts[] = {0.75f, -3.0f, 1e-3f};
        for (int c = 0; c < 3; c++) {
            for (int i = 0; i < ROW; i++) x[i] = consts[c];
            bt_quantize_row(t, x, q, ROW);
            bt_dequantize_row(t, q, y, ROW);
            double maxerr = 0;
            for (int i = 0; i < ROW; i++) maxerr = fmax(maxerr, fabs((double)y[i] - x[i]));
            const double tol = fabs(consts[c]) * (t == BT_Q2_K || t == BT_Q3_K ? 0.15 : 0.05);
            if (!(maxerr <= tol))
                fprintf(stderr, "%s: constant %g: max error %g\n", name, consts[c], maxerr);
            CHECK(maxerr <= tol);
        }

        /* large magnitudes whose scales still fit an f16 (and any in q8_K's f32 scale) */
        for (int i = 0; i < ROW; i++) x[i] = rnd_normal() * 2000.0f;
        double e = roundtrip_rel_rms(t, x, y, ROW);
        CHECK(e <= bound_for(t) * 1.5 + 1e-6);
        if (t == BT_Q8_K || t == BT_F32) {
            for (int i = 0; i < ROW; i++) x[i] = rnd_normal() * 1e30f;
            CHECK(roundtrip_rel_rms(t, x, y, ROW) <= bound_for(t) * 1.5);
            for (int i = 0; i < ROW; i++) x[i] = rnd_normal() * 1e-30f;
            CHECK(roundtrip_rel_rms(t, x, y, ROW) <= bound_for(t) * 1.5);
        }

        /* tiny magnitudes: scales underflow the f16 and the row may collapse to zero, but the
         * result stays finite and never grows */
        for (int i = 0; i < ROW; i++) x[i] = rnd_normal() * 1e-9f;
        bt_quantize_row(t, x, q, ROW);
        bt_dequantize_row(t, q, y, ROW);
        int bad = 0;
        for (int i = 0; i < ROW; i++) bad += !isfinite(y[i]) || fabsf(y[i]) > 1e-7f;
        CHECK_INT(bad, 0);

        /* NaN / Inf / FLT_MAX inputs: defined behaviour (UBSan), status OK */
        for (int i = 0; i < ROW; i++) x[i] = rnd_normal();
        x[5] = NAN;
        x[300] = INFINITY;
        x[600] = -3.4e38f;
        CHECK_INT(bt_quantize_row(t, x, q, ROW), BT_OK);
        CHECK_INT(bt_dequantize_row(t, q, y, ROW), BT_OK);

        /* arguments */
        const int blck = bt_type_get(t)->blck_size;
        if (blck > 1) {
            CHECK_INT(bt_quantize_row(t, x, q, blck + 1), BT_EINVAL);
            CHECK_INT(bt_dequantize_row(t, q, y, blck - 1), BT_EINVAL);
        }
        CHECK_INT(bt_quantize_row(t, x, q, -blck), BT_EINVAL);
        CHECK_INT(bt_quantize_row(t, x, q, 0), BT_OK);
        CHECK_INT(bt_dequantize_row(t, q, y, 0), BT_OK);
    }
    CHECK_INT(bt_quantize_row(16, x, q, 256), BT_EUNSUP);
    CHECK_INT(bt_dequantize_row(16, q, y, 256), BT_EUNSUP);
    CHECK_INT(bt_dequantize_row(4, q, y, 32), BT_EUNSUP);
    CHECK_INT(bt_dequantize_row(12345, q, y, 32), BT_EUNSUP);
    CHECK_INT(bt_quantize_row(BT_I32, x, q, 32), BT_EUNSUP);

    /* activation blocks carry their sums */
    for (int i = 0; i < ROW; i++) x[i] = rnd_normal();
    block_q8_1 b1[ROW / QK8_1];
    bt_quantize_row(BT_Q8_1, x, b1, ROW);
    for (int k = 0; k < ROW / QK8_1; k++) {
        int sum = 0;
        for (int j = 0; j < QK8_1; j++) sum += b1[k].qs[j];
        CHECK_NEAR(bt_f16_to_f32(b1[k].s), sum * bt_f16_to_f32(b1[k].d),
                   fabs(sum * bt_f16_to_f32(b1[k].d)) * 1e-3 + 1e-6);
    }
    block_q8_K bk[ROW / QK_K];
    bt_quantize_row(BT_Q8_K, x, bk, ROW);
    for (int k = 0; k < ROW / QK_K; k++) {
        int amax = 0;
        for (int g = 0; g < QK_K / 16; g++) {
            int sum = 0;
            for (int j = 0; j < 16; j++) sum += bk[k].qs[g * 16 + j];
            CHECK_INT(bk[k].bsums[g], sum);
        }
        for (int j = 0; j < QK_K; j++) amax = abs(bk[k].qs[j]) > amax ? abs(bk[k].qs[j]) : amax;
        CHECK_INT(amax, 127);
    }
    /* q8_0: exact .5 ties round away from zero, like roundf (d = 1 here) */
    for (int i = 0; i < QK8_0; i++) x[i] = 0;
    x[0] = 127.f;
    x[1] = 2.5f;
    x[2] = -2.5f;
    x[3] = 0.5f;
    block_q8_0 b0;
    bt_quantize_row(BT_Q8_0, x, &b0, QK8_0);
    CHECK_INT(b0.qs[0], 127);
    CHECK_INT(b0.qs[1], 3);
    CHECK_INT(b0.qs[2], -3);
    CHECK_INT(b0.qs[3], 1);
    /* ... while ggml's x86 CPU path rounds them to even */
    CHECK_INT(bt_quantize_row_cpu(BT_Q8_0, x, &b0, QK8_0), BT_OK);
    CHECK_INT(b0.qs[0], 127);
    CHECK_INT(b0.qs[1], 2);
    CHECK_INT(b0.qs[2], -2);
    CHECK_INT(b0.qs[3], 0);
    block_q8_1 c1;
    CHECK_INT(bt_quantize_row_cpu(BT_Q8_1, x, &c1, QK8_1), BT_OK);
    CHECK_INT(c1.qs[1], 2);
    CHECK_NEAR(bt_f16_to_f32(c1.s), 127.0, 0.1); /* d = 1: s = 127 + 2 - 2 + 0 */
    CHECK_INT(bt_quantize_row_cpu(BT_Q8_0, x, &b0, 31), BT_EINVAL);
    CHECK_INT(bt_quantize_row_cpu(16, x, &b0, 256), BT_EUNSUP);
    /* other types: the reference */
    block_q8_K k1, k2;
    for (int i = 0; i < QK_K; i++) x[i] = rnd_normal();
    CHECK_INT(bt_quantize_row_cpu(BT_Q8_K, x, &k1, QK_K), BT_OK);
    CHECK_INT(bt_quantize_row(BT_Q8_K, x, &k2, QK_K), BT_OK);
    CHECK(memcmp(&k1, &k2, sizeof(k1)) == 0);

    /* nearest_int: ties to even, like ggml's */
    CHECK_INT(bt_nearest_int(0.5f), 0);
    CHECK_INT(bt_nearest_int(1.5f), 2);
    CHECK_INT(bt_nearest_int(2.5f), 2);
    CHECK_INT(bt_nearest_int(-0.5f), 0);
    CHECK_INT(bt_nearest_int(-1.5f), -2);
    CHECK_INT(bt_nearest_int(3.7f), 4);
    CHECK_INT(bt_nearest_int(-4194303.f), -4194303);
}

int main(void)
{
    test_type_table();
    test_half();
    for (size_t i = 0; i < sizeof(fixtures) / sizeof(fixtures[0]); i++) test_fixture(&fixtures[i]);
    test_roundtrip();
    test_edges();
    return t_done();
}
