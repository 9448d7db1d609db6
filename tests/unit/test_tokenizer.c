/* test_tokenizer: the tokenizers against llama.cpp.
 *
 * (a) llama.cpp's test vectors in ../shared/models/vocab/vectors (exact ids);
 * (b) every vocabulary in ../shared/models/vocab and stories260K.gguf against the fixtures of
 *     tools/oracle/make_tok_fixtures.py (ids, detokenized text, BOS/EOS/EOG/control sets);
 * (c) the llama3 / qwen2 / gpt-2 splitters against the reference regexes (splits.bin);
 * (d) the incremental decoder: never invalid UTF-8, holds unfinished characters, U+FFFD;
 * plus hostile GGUF metadata, buffer-size contracts and concurrent encoding. */
#include "gguf.h"
#include "gguf_write.h"
#include "log.h"
#include "tokenizer.h"
#include "unicode.h"
#include "t.h"

#include <pthread.h>
#include <stdbool.h>
#include <unistd.h>

/* ---- helpers ---- */

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    size_t r;
    while (buf && (r = fread(buf + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) {
            char *p = realloc(buf, 2 * cap + 1);
            if (!p) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = p;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf) buf[n] = 0;
    *len = n;
    return buf;
}

static struct tok *load_vocab(const char *path, struct gguf **gout)
{
    char err[512];
    struct gguf *g = NULL;
    struct tok *t = NULL;
    if (gguf_open(path, &g, err, sizeof(err)) != 0) {
        fprintf(stderr, "gguf_open %s: %s\n", path, err);
        return NULL;
    }
    if (tok_load(g, &t, err, sizeof(err)) != 0) {
        fprintf(stderr, "tok_load %s: %s\n", path, err);
        gguf_close(g);
        return NULL;
    }
    if (gout)
        *gout = g;
    else
        gguf_close(g); /* the tok must not depend on the gguf */
    return t;
}

static const char *tmp_path(void)
{
    static char p[256];
    const char *d = getenv("TMPDIR");
    snprintf(p, sizeof(p), "%s/test_tokenizer_%d.gguf", d ? d : "/tmp", (int)getpid());
    return p;
}

/* A copy of the vocabulary with tokenizer.ggml.pre replaced (as the oracle script makes). */
static struct tok *load_vocab_pre(const char *path, const char *pre)
{
    char err[512];
    struct gguf *g = NULL;
    if (gguf_open(path, &g, err, sizeof(err)) != 0) {
        fprintf(stderr, "gguf_open %s: %s\n", path, err);
        return NULL;
    }
    struct gguf_writer *w = gguf_writer_new();
    int rc = 0;
    for (int64_t i = 0; i < gguf_n_kv(g) && rc == 0; i++) {
        const struct gguf_kv *kv = gguf_kv_at(g, i);
        rc = strcmp(kv->key, "tokenizer.ggml.pre") == 0 ? gguf_writer_set_str(w, kv->key, pre)
                                                        : gguf_writer_copy_kv(w, kv);
    }
    gguf_close(g);
    if (rc == 0) rc = gguf_writer_begin(w, tmp_path(), err, sizeof(err));
    if (rc == 0) rc = gguf_writer_finish(w, err, sizeof(err));
    gguf_writer_free(w);
    struct tok *t = rc == 0 ? load_vocab(tmp_path(), NULL) : NULL;
    if (rc) fprintf(stderr, "writing %s: %s\n", tmp_path(), err);
    unlink(tmp_path());
    return t;
}

/* encode into a malloc'd array (two calls: size, then fill) */
static int encode(const struct tok *t, const char *s, size_t n, bool add, bool special,
                  int32_t **ids)
{
    int k = tok_encode(t, s, n, add, special, NULL, 0);
    *ids = NULL;
    if (k < 0) return k;
    *ids = malloc(sizeof(int32_t) * (size_t)(k + 1));
    int k2 = tok_encode(t, s, n, add, special, *ids, k);
    return k2 == k ? k : -100;
}

static int decode(const struct tok *t, const int32_t *ids, int n, bool special, char **out)
{
    int k = tok_decode(t, ids, n, special, NULL, 0);
    *out = NULL;
    if (k < 0) return k;
    *out = malloc((size_t)k + 1);
    int k2 = tok_decode(t, ids, n, special, *out, k);
    if (k2 < 0 || k2 > k) return -100;
    return k2;
}

static bool valid_utf8(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        int r = uni_utf8_check((const uint8_t *)s + i, n - i);
        if (r <= 0) return false;
        i += (size_t)r;
    }
    return true;
}

struct rd {
    const uint8_t *p, *end;
    bool bad;
};

static uint64_t rd_v(struct rd *r)
{
    uint64_t v = 0;
    for (int sh = 0; sh < 64; sh += 7) {
        if (r->p >= r->end) {
            r->bad = true;
            return 0;
        }
        uint8_t b = *r->p++;
        v |= (uint64_t)(b & 0x7F) << sh;
        if (!(b & 0x80)) return v;
    }
    r->bad = true;
    return 0;
}

static const char *rd_bytes(struct rd *r, size_t *n)
{
    *n = (size_t)rd_v(r);
    if (r->bad || *n > (size_t)(r->end - r->p)) {
        r->bad = true;
        *n = 0;
        return "";
    }
    const char *s = (const char *)r->p;
    r->p += *n;
    return s;
}

static bool rd_magic(struct rd *r, const char *m)
{
    if (r->end - r->p < 8 || memcmp(r->p, m, 8) != 0) return false;
    r->p += 8;
    return true;
}

static void print_ids(const char *what, const int32_t *ids, int n)
{
    fprintf(stderr, "  %s:", what);
    for (int i = 0; i < n && i < 40; i++) fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "%s\n", n > 40 ? " ..." : "");
}

/* ---- (a) llama.cpp's test vectors ---- */

static void test_vectors(const char *name)
{
    char p[512], po[512];
    snprintf(p, sizeof(p), "models/vocab/vectors/ggml-vocab-%s.gguf.inp", name);
    snprintf(po, sizeof(po), "models/vocab/vectors/ggml-vocab-%s.gguf.out", name);
    size_t ni, no;
    char *inp = read_file(t_path("BATON_SHARED", p), &ni);
    char *out = read_file(t_path("BATON_SHARED", po), &no);
    snprintf(p, sizeof(p), "models/vocab/ggml-vocab-%s.gguf", name);
    struct tok *t = load_vocab(t_path("BATON_SHARED", p), NULL);
    CHECK(inp && out && t);
    if (!inp || !out || !t) goto done;
    static const char sep[] = "\n__ggml_vocab_test__\n";
    size_t pos = 0, opos = 0;
    int n_cases = 0, n_ok = 0;
    while (pos < ni) {
        const char *nx = memmem(inp + pos, ni - pos, sep, sizeof(sep) - 1);
        size_t len = nx ? (size_t)(nx - (inp + pos)) : ni - pos;
        /* the matching output line */
        const char *ol = out + opos, *oe = memchr(ol, '\n', no - opos);
        if (!oe) oe = out + no;
        opos = (size_t)(oe - out) + (oe < out + no);
        int32_t want[1024];
        int nw = 0;
        for (const char *q = ol; q < oe && nw < 1024;) {
            char *e;
            long v = strtol(q, &e, 10);
            if (e == q) break;
            want[nw++] = (int32_t)v;
            q = e;
        }
        int32_t *ids;
        int n = encode(t, inp + pos, len, false, false, &ids);
        n_cases++;
        bool ok = n == nw && memcmp(ids, want, sizeof(int32_t) * (size_t)n) == 0;
        n_ok += ok;
        CHECK(ok);
        if (!ok) {
            fprintf(stderr, "vector %s #%d: '%.*s'\n", name, n_cases, (int)len, inp + pos);
            print_ids("want", want, nw);
            print_ids("got ", ids, n);
        }
        free(ids);
        pos = nx ? (size_t)(nx - inp) + sizeof(sep) - 1 : ni;
    }
    CHECK(n_cases > 20);
    fprintf(stderr, "vectors %-10s %d/%d exact\n", name, n_ok, n_cases);
done:
    free(inp);
    free(out);
    tok_free(t);
}

/* ---- (b) oracle fixtures ---- */

struct corpus {
    int n;
    const char **text;
    size_t *len;
    char *data;
};

static bool load_corpus(struct corpus *c)
{
    size_t n;
    c->data = read_file(t_path("BATON_SRC", "tests/fixtures/tok/corpus.bin"), &n);
    if (!c->data) return false;
    struct rd r = {(const uint8_t *)c->data, (const uint8_t *)c->data + n, false};
    if (!rd_magic(&r, "BTOKCP01")) return false;
    c->n = (int)rd_v(&r);
    c->text = calloc((size_t)c->n, sizeof(char *));
    c->len = calloc((size_t)c->n, sizeof(size_t));
    for (int i = 0; i < c->n; i++) c->text[i] = rd_bytes(&r, &c->len[i]);
    return !r.bad && r.p == r.end;
}

static void check_id_set(const struct tok *t, struct rd *r,
                         bool (*pred)(const struct tok *, int32_t), const char *what,
                         const char *name)
{
    int n = (int)rd_v(r);
    bool *want = calloc((size_t)tok_n_vocab(t), 1);
    for (int i = 0; i < n; i++) {
        uint64_t id = rd_v(r);
        if (id < (uint64_t)tok_n_vocab(t)) want[id] = true;
    }
    int bad = 0;
    for (int32_t id = 0; id < tok_n_vocab(t); id++) {
        if (pred(t, id) != want[id]) {
            if (bad++ < 5)
                fprintf(stderr, "%s: token %d '%s': %s %d, llama.cpp %d\n", name, id,
                        tok_text(t, id), what, pred(t, id), want[id]);
        }
    }
    CHECK_INT(bad, 0);
    free(want);
}

static void test_fixture(const char *name, const char *gguf_rel, const char *pre,
                         const struct corpus *c)
{
    char p[256];
    if (pre)
        snprintf(p, sizeof(p), "tests/fixtures/tok/%s@%s.bin", name, pre);
    else
        snprintf(p, sizeof(p), "tests/fixtures/tok/%s.bin", name);
    size_t n;
    char *data = read_file(t_path("BATON_SRC", p), &n);
    const char *gp = t_path("BATON_SHARED", gguf_rel);
    struct tok *t = pre ? load_vocab_pre(gp, pre) : load_vocab(gp, NULL);
    CHECK(data && t);
    if (!data || !t) goto done;
    struct rd r = {(const uint8_t *)data, (const uint8_t *)data + n, false};
    CHECK(rd_magic(&r, "BTOKFX01"));
    CHECK_INT(rd_v(&r), tok_n_vocab(t));
    CHECK_INT((int64_t)rd_v(&r) - 1, tok_bos(t));
    CHECK_INT((int64_t)rd_v(&r) - 1, tok_eos(t));
    CHECK_INT((int64_t)rd_v(&r) - 1, tok_eot(t));
    uint8_t fl[2] = {r.p[0], r.p[1]};
    r.p += 2;
    CHECK_INT(fl[0], tok_add_bos(t));
    CHECK_INT(fl[1], tok_add_eos(t));
    check_id_set(t, &r, tok_is_eog, "eog", name);
    check_id_set(t, &r, tok_is_control, "control", name);
    int n_cases = (int)rd_v(&r), ok_enc = 0, ok_dec = 0;
    for (int i = 0; i < n_cases && !r.bad; i++) {
        uint8_t flags = *r.p++;
        const char *text;
        size_t len;
        if (flags & 4) {
            text = rd_bytes(&r, &len);
        } else {
            uint64_t k = rd_v(&r);
            if (k >= (uint64_t)c->n) {
                r.bad = true;
                break;
            }
            text = c->text[k];
            len = c->len[k];
        }
        int nw = (int)rd_v(&r);
        int32_t *want = malloc(sizeof(int32_t) * (size_t)(nw + 1));
        for (int j = 0; j < nw; j++) want[j] = (int32_t)rd_v(&r);
        const char *dec_want = text;
        size_t dec_len = len;
        if (!(flags & 8)) dec_want = rd_bytes(&r, &dec_len);

        bool special = flags & 1, add = flags & 2;
        int32_t *ids;
        int k = encode(t, text, len, add, special, &ids);
        bool ok = k == nw && memcmp(ids, want, sizeof(int32_t) * (size_t)nw) == 0;
        ok_enc += ok;
        if (!ok) {
            fprintf(stderr, "%s case %d (special %d add %d) '%.*s':\n", name, i, special, add,
                    (int)len, text);
            print_ids("llama.cpp", want, nw);
            print_ids("baton    ", ids, k);
        }
        char *dec;
        int kd = decode(t, want, nw, special, &dec);
        bool okd = kd >= 0 && (size_t)kd == dec_len && memcmp(dec, dec_want, dec_len) == 0;
        ok_dec += okd;
        if (!okd)
            fprintf(stderr, "%s case %d decode: want '%.*s' (%zu) got '%.*s' (%d)\n", name, i,
                    (int)dec_len, dec_want, dec_len, kd > 0 ? kd : 0, dec ? dec : "", kd);
        free(dec);
        free(ids);
        free(want);
    }
    CHECK(!r.bad && r.p == r.end);
    CHECK(n_cases > 300);
    CHECK_INT(ok_enc, n_cases);
    CHECK_INT(ok_dec, n_cases);
    fprintf(stderr, "oracle  %-12s %-15s encode %d/%d, decode %d/%d\n", name, pre ? pre : "",
            ok_enc, n_cases, ok_dec, n_cases);
done:
    free(data);
    tok_free(t);
}

/* ---- (c) pre-tokenizer splits ---- */

static void test_splits(void)
{
    size_t n;
    char *data = read_file(t_path("BATON_SRC", "tests/fixtures/tok/splits.bin"), &n);
    CHECK(data != NULL);
    if (!data) return;
    struct rd r = {(const uint8_t *)data, (const uint8_t *)data + n, false};
    CHECK(rd_magic(&r, "BTOKSP01"));
    int npre = (int)rd_v(&r);
    char pres[8][32];
    for (int i = 0; i < npre && i < 8; i++) {
        size_t l;
        const char *s = rd_bytes(&r, &l);
        snprintf(pres[i], sizeof(pres[i]), "%.*s", (int)l, s);
    }
    int nt = (int)rd_v(&r), ok[8] = {0};
    for (int i = 0; i < nt && !r.bad; i++) {
        size_t len;
        const char *text = rd_bytes(&r, &len);
        for (int k = 0; k < npre; k++) {
            int nw = (int)rd_v(&r);
            uint32_t *want = malloc(sizeof(uint32_t) * (size_t)(nw + 1));
            for (int j = 0; j < nw; j++) want[j] = (uint32_t)rd_v(&r);
            uint32_t got[4096];
            int ng = tok_pre_split_test(pres[k], text, len, got, 4096);
            bool same = ng == nw && memcmp(got, want, sizeof(uint32_t) * (size_t)nw) == 0;
            ok[k] += same;
            if (!same) {
                fprintf(stderr, "split %s '%.*s': regex %d words, baton %d:", pres[k], (int)len,
                        text, nw, ng);
                for (int j = 0; j < nw && j < 30; j++) fprintf(stderr, " %u", want[j]);
                fprintf(stderr, " |");
                for (int j = 0; j < ng && j < 30; j++) fprintf(stderr, " %u", got[j]);
                fprintf(stderr, "\n");
            }
            free(want);
        }
    }
    CHECK(!r.bad && r.p == r.end);
    CHECK(nt > 300);
    for (int k = 0; k < npre; k++) {
        CHECK_INT(ok[k], nt);
        fprintf(stderr, "regex   %-12s %d/%d splits equal\n", pres[k], ok[k], nt);
    }
    CHECK_INT(tok_pre_split_test("no-such-pre", "x", 1, NULL, 0), BT_EINVAL);
    free(data);
}

/* ---- (d) incremental decoding ---- */

static void stream_all(const struct tok *t, const int32_t *ids, int n, char *out, int *outn)
{
    struct tok_stream s;
    tok_stream_init(&s, t);
    int cap = tok_max_piece(t), w = 0;
    char *buf = malloc((size_t)cap);
    for (int i = 0; i < n; i++) {
        int k = tok_stream_push(&s, ids[i], buf, cap);
        CHECK(k >= 0);
        if (k < 0) break;
        CHECK(valid_utf8(buf, (size_t)k)); /* every chunk is whole characters */
        memcpy(out + w, buf, (size_t)k);
        w += k;
    }
    int k = tok_stream_flush(&s, buf, cap);
    CHECK(k >= 0);
    if (k > 0) memcpy(out + w, buf, (size_t)k), w += k;
    CHECK_INT(tok_stream_flush(&s, buf, cap), 0);
    free(buf);
    *outn = w;
}

static void test_stream(const char *name, const char *gguf_rel)
{
    struct tok *t = load_vocab(t_path("BATON_SHARED", gguf_rel), NULL);
    CHECK(t != NULL);
    if (!t) return;
    static const char *const texts[] = {
        "😀👨‍👩‍👧‍👦🇺🇸🇯🇵 flags 🏳️‍🌈 and 🧑🏿‍🚀!",
        "日本語 한국어 ภาษาไทย नमस्ते ∑√∞ 𝄞𝕏",
        "mixed ascii and émojis 🤖🤖🤖 end",
    };
    for (int i = 0; i < 3; i++) {
        int32_t *ids;
        int n = encode(t, texts[i], strlen(texts[i]), false, false, &ids);
        CHECK(n > 0);
        char *full;
        int nf = decode(t, ids, n, false, &full);
        char out[4096];
        int no = 0;
        stream_all(t, ids, n, out, &no);
        CHECK(valid_utf8(out, (size_t)no));
        /* the stream keeps the SPM leading space that tok_decode drops */
        const char *o = out;
        if (no == nf + 1 && out[0] == ' ') o++, no--;
        CHECK(no == nf && memcmp(o, full, (size_t)nf) == 0);
        free(full);
        free(ids);
    }
    fprintf(stderr, "stream  %-12s ok\n", name);
    tok_free(t);
}

/* Byte tokens one by one (llama-spm: <0xXX> tokens): nothing until a character completes. */
static void test_stream_bytes(void)
{
    struct tok *t =
        load_vocab(t_path("BATON_SHARED", "models/vocab/ggml-vocab-llama-spm.gguf"), NULL);
    CHECK(t != NULL);
    if (!t) return;
    int32_t b[256];
    for (int i = 0; i < 256; i++) {
        char s[8];
        snprintf(s, sizeof(s), "<0x%02X>", i);
        b[i] = tok_lookup(t, s, 6);
        CHECK(b[i] >= 0);
    }
    struct tok_stream s;
    char out[64];
    tok_stream_init(&s, t);
    /* U+1F600 byte by byte */
    CHECK_INT(tok_stream_push(&s, b[0xF0], out, sizeof(out)), 0);
    CHECK_INT(tok_stream_push(&s, b[0x9F], out, sizeof(out)), 0);
    CHECK_INT(tok_stream_push(&s, b[0x98], out, sizeof(out)), 0);
    CHECK_INT(tok_stream_push(&s, b[0x80], out, sizeof(out)), 4);
    CHECK(memcmp(out, "\xF0\x9F\x98\x80", 4) == 0);
    /* broken: F0 9F then 'a' -> U+FFFD 'a' */
    tok_stream_push(&s, b[0xF0], out, sizeof(out));
    CHECK_INT(tok_stream_push(&s, b[0x9F], out, sizeof(out)), 0);
    CHECK_INT(tok_stream_push(&s, b['a'], out, sizeof(out)), 4);
    CHECK(memcmp(out,
                 "\xEF\xBF\xBD"
                 "a",
                 4) == 0);
    /* lone continuation bytes and an invalid lead: one U+FFFD each */
    CHECK_INT(tok_stream_push(&s, b[0x80], out, sizeof(out)), 3);
    CHECK_INT(tok_stream_push(&s, b[0xFF], out, sizeof(out)), 3);
    CHECK_INT(tok_stream_push(&s, b[0xC0], out, sizeof(out)), 3);
    /* surrogate lead ED A0: ill-formed at the second byte */
    CHECK_INT(tok_stream_push(&s, b[0xED], out, sizeof(out)), 0);
    CHECK_INT(tok_stream_push(&s, b[0xA0], out, sizeof(out)), 6);
    /* an unfinished character at the end becomes U+FFFD on flush */
    CHECK_INT(tok_stream_push(&s, b[0xE2], out, sizeof(out)), 0);
    CHECK_INT(tok_stream_push(&s, b[0x82], out, sizeof(out)), 0);
    CHECK_INT(tok_stream_flush(&s, out, 2), BT_EFULL);
    CHECK_INT(tok_stream_flush(&s, out, sizeof(out)), 3);
    CHECK(memcmp(out, "\xEF\xBF\xBD", 3) == 0);
    /* a full buffer leaves the stream unchanged */
    tok_stream_push(&s, b[0xE2], out, sizeof(out));
    tok_stream_push(&s, b[0x82], out, sizeof(out));
    CHECK_INT(tok_stream_push(&s, b[0xAC], out, 2), BT_EFULL);
    CHECK_INT(tok_stream_push(&s, b[0xAC], out, sizeof(out)), 3);
    CHECK(memcmp(out, "\xE2\x82\xAC", 3) == 0);
    /* control tokens give nothing unless asked */
    CHECK_INT(tok_stream_push(&s, tok_eos(t), out, sizeof(out)), 0);
    s.special = true;
    CHECK_INT(tok_stream_push(&s, tok_eos(t), out, sizeof(out)), 4);
    CHECK(memcmp(out, "</s>", 4) == 0);
    CHECK_INT(tok_stream_push(&s, -1, out, sizeof(out)), BT_EINVAL);
    CHECK_INT(tok_stream_push(&s, tok_n_vocab(t), out, sizeof(out)), BT_EINVAL);

    /* every emoji of a long run fed byte by byte: output is always valid UTF-8 */
    const char *emo = "😀👍🏽👨‍👩‍👧‍👦🇺🇸❤️";
    size_t el = strlen(emo);
    int32_t ids[128];
    for (size_t i = 0; i < el; i++) ids[i] = b[(uint8_t)emo[i]];
    char all[512];
    int na = 0;
    stream_all(t, ids, (int)el, all, &na);
    CHECK(na == (int)el && memcmp(all, emo, el) == 0);
    /* and with garbage bytes mixed in */
    int32_t mix[] = {b[0xF0], b[0x9F], b[0x98], b[0xC3], b[0xA9], b[0xE2], b['x'], b[0x80]};
    stream_all(t, mix, 8, all, &na);
    CHECK(valid_utf8(all, (size_t)na));
    CHECK(na == 3 + 2 + 3 + 1 + 3 && memcmp(all + 3, "\xC3\xA9", 2) == 0);
    tok_free(t);
}

/* ---- API contracts ---- */

static void test_api(void)
{
    struct tok *t = load_vocab(t_path("BATON_SHARED", "models/stories260K.gguf"), NULL);
    CHECK(t != NULL);
    if (!t) return;
    CHECK_INT(tok_type(t), TOK_TYPE_SPM);
    CHECK_INT(tok_n_vocab(t), 512);
    CHECK_INT(tok_bos(t), 1);
    CHECK_INT(tok_eos(t), 2);
    CHECK(tok_add_bos(t));
    CHECK(!tok_add_eos(t));
    CHECK(tok_is_eog(t, 2));
    CHECK(!tok_is_eog(t, 1));
    CHECK(!tok_is_eog(t, -1));
    CHECK(!tok_is_eog(t, 512));
    CHECK_STR(tok_text(t, 1), "<s>");
    CHECK(tok_text(t, 512) == NULL);
    CHECK_INT(tok_attr(t, 1), TOK_ATTR_CONTROL);
    CHECK_INT(tok_attr(t, 0), TOK_ATTR_UNKNOWN);
    CHECK_INT(tok_attr(t, 3), TOK_ATTR_BYTE);
    CHECK_INT(tok_attr(t, 600), -1);
    CHECK_INT(tok_lookup(t, "<s>", 3), 1);
    CHECK_INT(tok_lookup(t, "<s>x", 4), -1);

    const char *s = "Once upon a time";
    int32_t ids[64];
    int n = tok_encode(t, s, strlen(s), true, false, ids, 64);
    CHECK(n > 3);
    CHECK_INT(ids[0], 1);
    /* too small a buffer: the count, and only cap written */
    int32_t small[2] = {-7, -7};
    CHECK_INT(tok_encode(t, s, strlen(s), true, false, small, 1), n);
    CHECK_INT(small[0], 1);
    CHECK_INT(small[1], -7);
    CHECK_INT(tok_encode(t, s, strlen(s), true, false, NULL, 0), n);
    CHECK_INT(tok_encode(t, "", 0, true, false, ids, 64), 1);
    CHECK_INT(tok_encode(t, "", 0, false, false, ids, 64), 0);
    CHECK_INT(tok_encode(t, NULL, 3, false, false, ids, 64), BT_EINVAL);
    CHECK_INT(tok_encode(t, s, 3, false, false, NULL, 4), BT_EINVAL);
    /* <s> is a control token: text unless parse_special */
    int32_t a[16], b2[16];
    int na = tok_encode(t, "<s>", 3, false, false, a, 16);
    int nb = tok_encode(t, "<s>", 3, false, true, b2, 16);
    CHECK(na > 1);
    CHECK_INT(nb, 1);
    CHECK_INT(b2[0], 1);

    char buf[256];
    /* the space prefix is dropped from the first token only (llama.cpp keeps it after BOS) */
    int k = tok_decode(t, ids + 1, n - 1, false, buf, sizeof(buf));
    CHECK_INT(k, (int)strlen(s));
    CHECK(k >= 0 && memcmp(buf, s, (size_t)k) == 0);
    CHECK_INT(tok_decode(t, ids + 1, n - 1, false, buf, 3), k); /* needed size */
    k = tok_decode(t, ids, n, false, buf, sizeof(buf));
    CHECK(k == (int)strlen(s) + 1 && buf[0] == ' ' && memcmp(buf + 1, s, strlen(s)) == 0);
    k = tok_decode(t, ids, n, true, buf, sizeof(buf));
    CHECK(k > 3 && memcmp(buf, "<s> Once", 8) == 0);
    int32_t bad[2] = {5, 9999};
    CHECK_INT(tok_decode(t, bad, 2, false, buf, sizeof(buf)), BT_EINVAL);
    CHECK_INT(tok_piece(t, 1, false, buf, sizeof(buf)), 0);
    CHECK_INT(tok_piece(t, 1, true, buf, sizeof(buf)), 3);
    CHECK_INT(tok_piece(t, 3 + 'A', false, buf, sizeof(buf)), 1); /* <0x41> */
    CHECK_INT(buf[0], 'A');
    CHECK_INT(tok_piece(t, 1, true, buf, 1), 3);
    CHECK_INT(tok_piece(t, -1, true, buf, 1), BT_EINVAL);
    CHECK(tok_max_piece(t) >= 3 * 9);
    tok_free(t);
    tok_free(NULL);
}

/* ---- hostile metadata ---- */

/* Write a small SPM-ish vocabulary with tweaks, then try to load it. */
enum {
    H_OK,
    H_NO_MODEL,
    H_BAD_MODEL,
    H_SCORES_SHORT,
    H_TYPES_WRONG,
    H_BAD_BYTE,
    H_DUP,
    H_BOS_RANGE,
    H_TOKENS_NOT_STR,
    H_BPE_NO_MERGES,
    H_BPE_UNKNOWN_PRE,
    H_NAN
};

static int hostile(int what, char *err, size_t errsz, struct tok **out)
{
    static const char *const base[] = {"<unk>",
                                       "<s>",
                                       "</s>",
                                       "<0x41>",
                                       "\xE2\x96\x81",
                                       "a",
                                       "b",
                                       "ab",
                                       "\xE2\x96\x81"
                                       "ab"};
    int n = 9;
    struct gguf_str toks[9];
    float scores[9];
    int32_t types[9];
    for (int i = 0; i < n; i++) {
        toks[i] = (struct gguf_str){base[i], strlen(base[i])};
        scores[i] = -(float)i;
        types[i] = i == 0 ? 2 : i < 3 ? 3 : i == 3 ? 6 : 1;
    }
    if (what == H_BAD_BYTE) toks[3] = (struct gguf_str){"<0xZ1>", 6};
    if (what == H_DUP) toks[6] = (struct gguf_str){"a", 1};
    if (what == H_NAN) scores[5] = NAN;
    struct gguf_writer *w = gguf_writer_new();
    bool bpe = what == H_BPE_NO_MERGES || what == H_BPE_UNKNOWN_PRE;
    if (what != H_NO_MODEL)
        gguf_writer_set_str(w, "tokenizer.ggml.model",
                            what == H_BAD_MODEL ? "t5"
                            : bpe               ? "gpt2"
                                                : "llama");
    if (what == H_BPE_UNKNOWN_PRE) {
        gguf_writer_set_str(w, "tokenizer.ggml.pre", "martian");
        struct gguf_str m[1] = {{"a b", 3}};
        gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", m, 1);
    }
    if (what == H_TOKENS_NOT_STR)
        gguf_writer_set_arr(w, "tokenizer.ggml.tokens", GGUF_TYPE_INT32, types, (uint64_t)n);
    else
        gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, (uint64_t)n);
    gguf_writer_set_arr(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, scores,
                        (uint64_t)(what == H_SCORES_SHORT ? n - 1 : n));
    if (what == H_TYPES_WRONG)
        gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_FLOAT32, scores, (uint64_t)n);
    else
        gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types, (uint64_t)n);
    if (what == H_BOS_RANGE) gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1000);
    char e[256];
    int rc = gguf_writer_begin(w, tmp_path(), e, sizeof(e));
    if (rc == 0) rc = gguf_writer_finish(w, e, sizeof(e));
    gguf_writer_free(w);
    if (rc != 0) {
        fprintf(stderr, "writer: %s\n", e);
        return -1000;
    }
    struct gguf *g;
    rc = gguf_open(tmp_path(), &g, e, sizeof(e));
    if (rc != 0) {
        fprintf(stderr, "open: %s\n", e);
        unlink(tmp_path());
        return -1000;
    }
    *out = NULL;
    err[0] = 0;
    rc = tok_load(g, out, err, errsz);
    gguf_close(g);
    unlink(tmp_path());
    return rc;
}

static void test_hostile(void)
{
    char err[256];
    struct tok *t;
    CHECK_INT(hostile(H_OK, err, sizeof(err), &t), 0);
    if (t) {
        int32_t ids[16];
        int n = tok_encode(t, "ab A", 4, false, false, ids, 16);
        CHECK_INT(n, 3); /* "▁ab" "▁" <0x41> */
        CHECK_INT(ids[0], 8);
        CHECK_INT(ids[1], 4);
        CHECK_INT(ids[2], 3);
        /* bytes with no byte token fall back to <unk> */
        n = tok_encode(t, "z", 1, false, false, ids, 16);
        CHECK_INT(n, 2);
        CHECK_INT(ids[1], 0);
        tok_free(t);
    }
    static const struct {
        int what;
        int rc;
        const char *msg;
    } cases[] = {
        {H_NO_MODEL, BT_EFORMAT, "tokenizer.ggml.model"},
        {H_BAD_MODEL, BT_EUNSUP, "'t5'"},
        {H_SCORES_SHORT, BT_EFORMAT, "scores"},
        {H_TYPES_WRONG, BT_EFORMAT, "token_type"},
        {H_BAD_BYTE, BT_EFORMAT, "<0xXX>"},
        {H_DUP, BT_EFORMAT, "same text"},
        {H_TOKENS_NOT_STR, BT_EFORMAT, "tokenizer.ggml.tokens"},
        {H_BPE_NO_MERGES, BT_EFORMAT, "merges"},
        {H_NAN, BT_EFORMAT, "NaN"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = hostile(cases[i].what, err, sizeof(err), &t);
        CHECK_INT(rc, cases[i].rc);
        CHECK(t == NULL);
        if (!strstr(err, cases[i].msg))
            fprintf(stderr, "hostile case %d: error '%s' lacks '%s'\n", cases[i].what, err,
                    cases[i].msg);
        CHECK(strstr(err, cases[i].msg) != NULL);
    }
    /* tolerated with a warning: bad BOS id keeps the default, unknown pre -> default */
    CHECK_INT(hostile(H_BOS_RANGE, err, sizeof(err), &t), 0);
    if (t) CHECK_INT(tok_bos(t), 1);
    tok_free(t);
    CHECK_INT(hostile(H_BPE_UNKNOWN_PRE, err, sizeof(err), &t), 0);
    if (t) {
        int32_t ids[8];
        CHECK_INT(tok_type(t), TOK_TYPE_BPE);
        CHECK_INT(tok_encode(t, "ab", 2, false, false, ids, 8), 1); /* merge "a b" */
        CHECK_INT(ids[0], 7);
    }
    tok_free(t);
}

/* ---- concurrency: one tok, several threads ---- */

struct job {
    const struct tok *t;
    const struct corpus *c;
    unsigned long long sum;
};

static void *enc_job(void *arg)
{
    struct job *j = arg;
    for (int i = 0; i < j->c->n; i++) {
        int32_t *ids;
        int n = encode(j->t, j->c->text[i], j->c->len[i], true, true, &ids);
        for (int k = 0; k < n; k++) j->sum = j->sum * 31 + (unsigned)ids[k];
        free(ids);
    }
    return NULL;
}

static void test_threads(const struct corpus *c)
{
    struct tok *t =
        load_vocab(t_path("BATON_SHARED", "models/vocab/ggml-vocab-deepseek-llm.gguf"), NULL);
    CHECK(t != NULL);
    if (!t) return;
    struct job ref = {t, c, 0}, jobs[4];
    enc_job(&ref);
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (struct job){t, c, 0};
        pthread_create(&th[i], NULL, enc_job, &jobs[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK(jobs[i].sum == ref.sum);
    }
    tok_free(t);
}

int main(void)
{
    bt_log_set_level(BT_LOG_ERROR);
    test_vectors("llama-spm");
    test_vectors("gpt-2");

    struct corpus c = {0};
    CHECK(load_corpus(&c));
    static const char *const vocabs[][2] = {
        {"llama-spm", "models/vocab/ggml-vocab-llama-spm.gguf"},
        {"phi-3", "models/vocab/ggml-vocab-phi-3.gguf"},
        {"gpt-2", "models/vocab/ggml-vocab-gpt-2.gguf"},
        {"deepseek-llm", "models/vocab/ggml-vocab-deepseek-llm.gguf"},
        {"falcon", "models/vocab/ggml-vocab-falcon.gguf"},
        {"starcoder", "models/vocab/ggml-vocab-starcoder.gguf"},
        {"stories260K", "models/stories260K.gguf"},
    };
    for (size_t i = 0; i < sizeof(vocabs) / sizeof(vocabs[0]); i++)
        test_fixture(vocabs[i][0], vocabs[i][1], NULL, &c);
    /* pre-tokenizers without a vocabulary here, on real merges */
    test_fixture("gpt-2", vocabs[2][1], "llama-bpe", &c);
    test_fixture("gpt-2", vocabs[2][1], "qwen2", &c);
    test_fixture("gpt-2", vocabs[2][1], "default", &c);
    test_fixture("deepseek-llm", vocabs[3][1], "deepseek-coder", &c);
    test_splits();
    for (size_t i = 0; i < sizeof(vocabs) / sizeof(vocabs[0]); i++)
        test_stream(vocabs[i][0], vocabs[i][1]);
    test_stream_bytes();
    test_api();
    test_hostile();
    test_threads(&c);
    free(c.text);
    free(c.len);
    free(c.data);
    return t_done();
}
