/* tokenizer: SentencePiece-style and byte-level BPE tokenizers from GGUF metadata (see
 * tokenizer.h). The behaviour follows llama.cpp's llama-vocab.cpp and unicode.cpp token for token
 * (checked against it by tests/unit/test_tokenizer.c with fixtures from
 * tools/oracle/make_tok_fixtures.py); the code is our own. */
#include "tokenizer.h"

#include "gguf.h"
#include "log.h"
#include "unicode.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOK_MAX_VOCAB     (1 << 24)
#define TOK_MAX_MERGES    (1 << 24) /* ranks stay exact in a float */
#define TOK_MAX_TOKEN_LEN 65536
#define TOK_MAX_PIECES    (256u << 20) /* bytes of all decoded pieces together */
#define TOK_MAX_INPUT     (INT_MAX / 8)

/* Token attributes as llama.cpp keeps them (a bit set). */
enum {
    A_UNKNOWN = 1 << 0,
    A_UNUSED = 1 << 1,
    A_NORMAL = 1 << 2,
    A_CONTROL = 1 << 3,
    A_USER = 1 << 4,
    A_BYTE = 1 << 5,
    A_LSTRIP = 1 << 7,
    A_RSTRIP = 1 << 8,
};

/* Pre-tokenizers: each is a list of splitting stages. */
enum pre_kind {
    PRE_DEFAULT,
    PRE_GPT2,
    PRE_LLAMA3,
    PRE_QWEN2,
    PRE_DEEPSEEK_LLM,
    PRE_DEEPSEEK_CODER,
    PRE_FALCON,
    PRE_STARCODER,
};

enum stage {
    ST_END = 0,
    ST_GPT2,   /* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S) */
    ST_LLAMA3, /* (?i:'s|..)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|... */
    ST_QWEN2,  /* as llama3 with \p{N} */
    ST_CRLF,   /* [\r\n] */
    ST_DSLLM_LETTER,  /* \s?[A-Za-zµÀ-Ö...]+ */
    ST_DSLLM_PUNCT,   /* \s?[!-/:-~！-／：-～‘-‟　-。]+ */
    ST_WS_END,        /* \s+$ */
    ST_CJK,           /* [一-龥ࠀ-一가-퟿]+ */
    ST_NUM_RUN,       /* \p{N}+ */
    ST_NUM_ONE,       /* \p{N} */
    ST_LETTER_RUN,    /* \s?\p{L}+ */
    ST_PUNCT_RUN,     /* \s?\p{P}+ */
    ST_PUNCT_FALCON,  /* [\p{P}\$\+<=>\^~\|`]+ */
    ST_PUNCT_DEFAULT, /* [\p{P}\$\+<=>\^~\|]+ */
    ST_DIGIT3,        /* [0-9][0-9][0-9] */
};

static const uint8_t pre_stages[][7] = {
    [PRE_DEFAULT] = {ST_PUNCT_DEFAULT, ST_GPT2, ST_NUM_RUN, ST_DIGIT3},
    [PRE_GPT2] = {ST_GPT2},
    [PRE_LLAMA3] = {ST_LLAMA3},
    [PRE_QWEN2] = {ST_QWEN2},
    [PRE_DEEPSEEK_LLM] = {ST_CRLF, ST_DSLLM_LETTER, ST_DSLLM_PUNCT, ST_WS_END, ST_CJK, ST_NUM_RUN},
    [PRE_DEEPSEEK_CODER] = {ST_CRLF, ST_LETTER_RUN, ST_PUNCT_RUN, ST_CJK, ST_NUM_ONE},
    [PRE_FALCON] = {ST_PUNCT_FALCON, ST_GPT2, ST_DIGIT3},
    [PRE_STARCODER] = {ST_NUM_ONE, ST_GPT2},
};

/* tokenizer.ggml.pre names (llama.cpp's list, for the splitting rules implemented here). */
enum { PF_NO_CLEAN = 1, PF_IGNORE_MERGES = 2, PF_ADD_BOS = 4 };
static const struct {
    const char *name;
    uint8_t pre;
    uint8_t flags;
} pre_names[] = {
    {"default", PRE_DEFAULT, 0},
    {"llama3", PRE_LLAMA3, PF_IGNORE_MERGES | PF_ADD_BOS},
    {"llama-v3", PRE_LLAMA3, PF_IGNORE_MERGES | PF_ADD_BOS},
    {"llama-bpe", PRE_LLAMA3, PF_IGNORE_MERGES | PF_ADD_BOS},
    {"falcon3", PRE_LLAMA3, PF_IGNORE_MERGES | PF_ADD_BOS},
    {"falcon-h1", PRE_LLAMA3, PF_IGNORE_MERGES | PF_ADD_BOS},
    {"pixtral", PRE_LLAMA3, PF_IGNORE_MERGES | PF_ADD_BOS},
    {"dbrx", PRE_LLAMA3, 0},
    {"smaug-bpe", PRE_LLAMA3, 0},
    {"deepseek-llm", PRE_DEEPSEEK_LLM, PF_NO_CLEAN},
    {"deepseek-coder", PRE_DEEPSEEK_CODER, PF_NO_CLEAN},
    {"falcon", PRE_FALCON, 0},
    {"mpt", PRE_GPT2, 0},
    {"olmo", PRE_GPT2, 0},
    {"jais", PRE_GPT2, 0},
    {"gpt-2", PRE_GPT2, 0},
    {"gpt2", PRE_GPT2, 0},
    {"phi-2", PRE_GPT2, 0},
    {"jina-es", PRE_GPT2, 0},
    {"jina-de", PRE_GPT2, 0},
    {"jina-v1-en", PRE_GPT2, 0},
    {"jina-v2-es", PRE_GPT2, 0},
    {"jina-v2-de", PRE_GPT2, 0},
    {"jina-v2-code", PRE_GPT2, 0},
    {"roberta-bpe", PRE_GPT2, 0},
    {"gigachat", PRE_GPT2, 0},
    {"exaone4", PRE_GPT2, 0},
    {"starcoder", PRE_STARCODER, 0},
    {"refact", PRE_STARCODER, 0},
    {"command-r", PRE_STARCODER, PF_NO_CLEAN},
    {"smollm", PRE_STARCODER, PF_NO_CLEAN},
    {"codeshell", PRE_STARCODER, 0},
    {"exaone", PRE_STARCODER, 0},
    {"minerva-7b", PRE_STARCODER, 0},
    {"qwen2", PRE_QWEN2, PF_NO_CLEAN},
    {"deepseek-r1-qwen", PRE_QWEN2, PF_NO_CLEAN},
    {"stablelm2", PRE_QWEN2, 0},
    {"megrez", PRE_QWEN2, 0},
    {"hunyuan", PRE_QWEN2, PF_NO_CLEAN},
};

struct tok {
    int type; /* enum tok_type */
    int pre;  /* enum pre_kind */
    int32_t n;
    char *text; /* arena of token texts, each NUL-terminated */
    uint32_t *text_off, *text_len;
    float *score;
    uint16_t *attr;
    uint8_t *eog;
    char *piece; /* arena of pieces rendered with special = true */
    uint32_t *piece_off, *piece_len;
    int max_piece;
    int32_t *hash; /* open addressing: token text -> id, -1 empty */
    uint32_t hash_mask;
    /* merges: "left right" strings; split = length of left */
    char *mtext;
    uint32_t *moff, *mlen, *msplit;
    int32_t n_merges;
    int32_t *mhash;
    uint32_t mhash_mask;
    int32_t *special; /* control / user-defined / unknown ids, longest text first */
    int n_special;
    int32_t bos, eos, eot, eom, unk;
    int32_t byte_tok[256]; /* SPM byte fallback: <0xXX> (else the one-byte token) of each byte */
    bool add_bos, add_eos, add_space_prefix, clean_spaces, ignore_merges;
    char benc[256][2]; /* byte-level BPE: UTF-8 of the code point standing for each byte */
    uint8_t benc_len[256];
    int16_t bdec[324]; /* code point (< 324) -> byte, -1 if none */
};

/* ---- small helpers ---- */

static uint32_t fnv1a(uint32_t h, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}
#define FNV_INIT 2166136261u

static inline bool c_isspace(char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

static inline const char *ttext(const struct tok *t, int32_t id)
{
    return t->text + t->text_off[id];
}

static int32_t lookup(const struct tok *t, const char *s, size_t n)
{
    uint32_t h = fnv1a(FNV_INIT, s, n) & t->hash_mask;
    for (;;) {
        int32_t id = t->hash[h];
        if (id < 0) return -1;
        if (t->text_len[id] == n && memcmp(ttext(t, id), s, n) == 0) return id;
        h = (h + 1) & t->hash_mask;
    }
}

static uint32_t merge_hash(const char *l, size_t ln, const char *r, size_t rn)
{
    uint32_t h = fnv1a(FNV_INIT, l, ln);
    h = (h ^ 0x1FFu) * 16777619u;
    return fnv1a(h, r, rn);
}

/* Rank of merge (l, r), or -1. */
static int32_t merge_rank(const struct tok *t, const char *l, size_t ln, const char *r, size_t rn)
{
    uint32_t h = merge_hash(l, ln, r, rn) & t->mhash_mask;
    for (;;) {
        int32_t m = t->mhash[h];
        if (m < 0) return -1;
        const char *s = t->mtext + t->moff[m];
        if (t->msplit[m] == ln && t->mlen[m] == ln + 1 + rn && memcmp(s, l, ln) == 0 &&
            memcmp(s + ln + 1, r, rn) == 0)
            return m;
        h = (h + 1) & t->mhash_mask;
    }
}

static uint32_t pow2_at_least(uint64_t n)
{
    uint32_t p = 16;
    while (p < n) p <<= 1;
    return p;
}

/* ---- public accessors ---- */

void tok_free(struct tok *t)
{
    if (!t) return;
    free(t->text);
    free(t->text_off);
    free(t->text_len);
    free(t->score);
    free(t->attr);
    free(t->eog);
    free(t->piece);
    free(t->piece_off);
    free(t->piece_len);
    free(t->hash);
    free(t->mtext);
    free(t->moff);
    free(t->mlen);
    free(t->msplit);
    free(t->mhash);
    free(t->special);
    free(t);
}

int tok_type(const struct tok *t)
{
    return t->type;
}
int tok_n_vocab(const struct tok *t)
{
    return t->n;
}
int32_t tok_bos(const struct tok *t)
{
    return t->bos;
}
int32_t tok_eos(const struct tok *t)
{
    return t->eos;
}
int32_t tok_eot(const struct tok *t)
{
    return t->eot;
}
bool tok_add_bos(const struct tok *t)
{
    return t->add_bos;
}
bool tok_add_eos(const struct tok *t)
{
    return t->add_eos;
}
int tok_max_piece(const struct tok *t)
{
    return t->max_piece;
}

bool tok_is_eog(const struct tok *t, int32_t id)
{
    return id >= 0 && id < t->n && t->eog[id];
}

bool tok_is_control(const struct tok *t, int32_t id)
{
    return id >= 0 && id < t->n && (t->attr[id] & A_CONTROL);
}

const char *tok_text(const struct tok *t, int32_t id)
{
    return id >= 0 && id < t->n ? ttext(t, id) : NULL;
}

int tok_attr(const struct tok *t, int32_t id)
{
    if (id < 0 || id >= t->n) return -1;
    unsigned a = t->attr[id];
    if (a & A_CONTROL) return TOK_ATTR_CONTROL;
    if (a & A_USER) return TOK_ATTR_USER_DEFINED;
    if (a & A_UNKNOWN) return TOK_ATTR_UNKNOWN;
    if (a & A_BYTE) return TOK_ATTR_BYTE;
    if (a & A_UNUSED) return TOK_ATTR_UNUSED;
    if (a & A_NORMAL) return TOK_ATTR_NORMAL;
    return TOK_ATTR_UNDEFINED;
}

int32_t tok_lookup(const struct tok *t, const char *text, size_t len)
{
    return lookup(t, text, len);
}

/* ---- loading ---- */

static void bpe_init_bytes(struct tok *t)
{
    int n = 0;
    for (int i = 0; i < 324; i++) t->bdec[i] = -1;
    for (int b = 0; b < 256; b++) {
        bool keep = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        uint32_t cp = keep ? (uint32_t)b : 256u + (uint32_t)n++;
        char u[4];
        t->benc_len[b] = (uint8_t)uni_encode(cp, u);
        memcpy(t->benc[b], u, t->benc_len[b]);
        t->bdec[cp] = (int16_t)b;
    }
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Byte value of a "<0xXX>" token, or -1. */
static int byte_token_value(const char *s, size_t n)
{
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int hi = hex_digit(s[3]), lo = hex_digit(s[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

/* Append text to a growable buffer. */
struct sbuf {
    char *p;
    size_t n, cap;
};

static int sb_put(struct sbuf *b, const void *s, size_t n)
{
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return BT_ENOMEM;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    return 0;
}

/* Piece of a token for special = true, appended to b (llama.cpp's token_to_piece). */
static int render_piece(const struct tok *t, int32_t id, struct sbuf *b)
{
    unsigned a = t->attr[id];
    const char *s = ttext(t, id);
    size_t n = t->text_len[id];
    if (a & (A_UNKNOWN | A_CONTROL | A_USER)) return sb_put(b, s, n);
    if (a & A_NORMAL) {
        if (t->type == TOK_TYPE_SPM) {
            for (size_t i = 0; i < n;) {
                if (i + 3 <= n && memcmp(s + i, "\xE2\x96\x81", 3) == 0) {
                    if (sb_put(b, " ", 1)) return BT_ENOMEM;
                    i += 3;
                } else {
                    if (sb_put(b, s + i, 1)) return BT_ENOMEM;
                    i++;
                }
            }
            return 0;
        }
        /* byte-level BPE: each code point stands for one byte */
        for (size_t i = 0; i < n;) {
            uint32_t cp = uni_decode_lenient(s, n, &i);
            if (cp < 324 && t->bdec[cp] >= 0) {
                char c = (char)t->bdec[cp];
                if (sb_put(b, &c, 1)) return BT_ENOMEM;
            } else {
                char u[4], hex[12];
                int k = uni_encode(cp, u);
                if (sb_put(b, "[UNK_BYTE_0x", 12)) return BT_ENOMEM;
                for (int j = 0; j < k; j++) {
                    static const char hx[] = "0123456789abcdef";
                    hex[2 * j] = hx[(uint8_t)u[j] >> 4];
                    hex[2 * j + 1] = hx[(uint8_t)u[j] & 15];
                }
                if (sb_put(b, hex, (size_t)(2 * k)) || sb_put(b, s, n) || sb_put(b, "]", 1))
                    return BT_ENOMEM;
            }
            if (b->n > TOK_MAX_PIECES) return BT_EFORMAT;
        }
        return 0;
    }
    if (a & A_BYTE) {
        char c = (char)byte_token_value(s, n);
        return sb_put(b, &c, 1);
    }
    return 0; /* undefined / unused: nothing */
}

/* A special token id from the GGUF into *id; a missing key keeps *id, a bad one is ignored with a
 * warning. */
static void read_special_id(const struct gguf *g, const char *path, const char *key, int32_t n,
                            int32_t *id)
{
    const struct gguf_kv *kv = gguf_find_kv(g, key);
    if (!kv) return;
    uint32_t v;
    if (gguf_get_u32(g, key, &v) != 0) {
        bt_warn("%s: %s has type %s, ignored", path, key, gguf_vtype_name(kv->type));
        return;
    }
    if (v >= (uint32_t)n) {
        bt_warn("%s: %s = %u is out of the vocabulary (%d tokens), using %d", path, key, v, n, *id);
        return;
    }
    *id = (int32_t)v;
}

static void read_flag(const struct gguf *g, const char *path, const char *key, bool *flag)
{
    const struct gguf_kv *kv = gguf_find_kv(g, key);
    if (!kv) return;
    if (gguf_get_bool(g, key, flag) != 0)
        bt_warn("%s: %s has type %s, ignored", path, key, gguf_vtype_name(kv->type));
}

static bool gstr_is(struct gguf_str s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len == n && memcmp(s.data, lit, n) == 0;
}

/* Index in pre_names of a tokenizer.ggml.pre value, or -1. */
static int find_pre(struct gguf_str name)
{
    for (size_t k = 0; k < sizeof(pre_names) / sizeof(pre_names[0]); k++)
        if (gstr_is(name, pre_names[k].name)) return (int)k;
    return -1;
}

/* tokenizer.ggml.pre: the pre-tokenizer and its flags; missing or unknown: the default one (with
 * a warning). */
static void load_pre(struct tok *t, const struct gguf *g, const char *path)
{
    struct gguf_str pre;
    t->pre = PRE_DEFAULT;
    if (gguf_get_str(g, "tokenizer.ggml.pre", &pre) != 0) {
        bt_warn("%s: no tokenizer.ggml.pre; using the default pre-tokenizer", path);
        return;
    }
    int k = find_pre(pre);
    if (k < 0) {
        bt_warn("%s: unknown pre-tokenizer '%.*s'; using the default one", path,
                (int)(pre.len > 64 ? 64 : pre.len), pre.data);
        return;
    }
    t->pre = pre_names[k].pre;
    if (pre_names[k].flags & PF_NO_CLEAN) t->clean_spaces = false;
    if (pre_names[k].flags & PF_IGNORE_MERGES) t->ignore_merges = true;
    if (pre_names[k].flags & PF_ADD_BOS) t->add_bos = true;
}

/* tokenizer.ggml.model: the family, with its default special ids and flags. */
static int load_family(struct tok *t, const struct gguf *g, const char *path, char *err,
                       size_t errsz)
{
    struct gguf_str model;
    if (gguf_get_str(g, "tokenizer.ggml.model", &model) != 0)
        return bt_errf(err, errsz, BT_EFORMAT, "%s: no tokenizer.ggml.model string", path);
    if (gstr_is(model, "llama")) {
        t->type = TOK_TYPE_SPM;
        t->bos = 1, t->eos = 2, t->unk = 0;
        t->add_space_prefix = true;
        t->add_bos = true;
    } else if (gstr_is(model, "gpt2")) {
        t->type = TOK_TYPE_BPE;
        t->bos = 11, t->eos = 11, t->unk = -1;
        t->clean_spaces = true;
        load_pre(t, g, path);
        bpe_init_bytes(t);
    } else {
        return bt_errf(err, errsz, BT_EUNSUP,
                       "%s: tokenizer.ggml.model '%.*s' is not supported (llama, gpt2)", path,
                       (int)(model.len > 64 ? 64 : model.len), model.data);
    }
    t->eot = t->eom = -1;
    read_flag(g, path, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix);
    return 0;
}

/* The per-token arrays of the GGUF: texts (required), scores and types (optional). */
struct vocab_arrays {
    const struct gguf_kv *text, *score, *type;
};

/* Find the arrays and check their element types and lengths (one entry per token). */
static int find_vocab_arrays(const struct gguf *g, const char *path, struct vocab_arrays *a,
                             char *err, size_t errsz)
{
    const struct gguf_kv *kt = gguf_find_kv(g, "tokenizer.ggml.tokens");
    if (!kt || kt->type != GGUF_TYPE_ARRAY || kt->arr_type != GGUF_TYPE_STRING)
        return bt_errf(err, errsz, BT_EFORMAT,
                       "%s: tokenizer.ggml.tokens is missing or not an array of strings", path);
    if (kt->arr_n == 0 || kt->arr_n > TOK_MAX_VOCAB)
        return bt_errf(err, errsz, BT_EFORMAT, "%s: tokenizer.ggml.tokens has %llu entries (1..%d)",
                       path, (unsigned long long)kt->arr_n, TOK_MAX_VOCAB);
    int n = (int)kt->arr_n;
    const struct gguf_kv *ks = gguf_find_kv(g, "tokenizer.ggml.scores");
    if (ks && (ks->type != GGUF_TYPE_ARRAY ||
               (ks->arr_type != GGUF_TYPE_FLOAT32 && ks->arr_type != GGUF_TYPE_INT32) ||
               ks->arr_n != kt->arr_n))
        return bt_errf(
            err, errsz, BT_EFORMAT,
            "%s: tokenizer.ggml.scores must be an f32 or i32 array of %d entries (one per token)",
            path, n);
    const struct gguf_kv *ky = gguf_find_kv(g, "tokenizer.ggml.token_type");
    if (ky &&
        (ky->type != GGUF_TYPE_ARRAY || ky->arr_type != GGUF_TYPE_INT32 || ky->arr_n != kt->arr_n))
        return bt_errf(
            err, errsz, BT_EFORMAT,
            "%s: tokenizer.ggml.token_type must be an i32 array of %d entries (one per token)",
            path, n);
    *a = (struct vocab_arrays){kt, ks, ky};
    return 0;
}

/* Bytes the NUL-terminated copies of the first n strings of kv take, an empty string counting as
 * empty_len bytes. Each must be readable and at most TOK_MAX_TOKEN_LEN bytes, all together under
 * 4 GiB. what: "token" or "merge", for the message. */
static int string_array_bytes(const struct gguf_kv *kv, int32_t n, size_t empty_len,
                              const char *what, const char *path, uint64_t *total, char *err,
                              size_t errsz)
{
    *total = 0;
    for (int32_t i = 0; i < n; i++) {
        struct gguf_str s;
        if (gguf_arr_str(kv, (uint64_t)i, &s) != 0 || s.len > TOK_MAX_TOKEN_LEN)
            return bt_errf(err, errsz, BT_EFORMAT,
                           "%s: %s %d is unreadable or longer than %d bytes", path, what, i,
                           TOK_MAX_TOKEN_LEN);
        *total += (s.len ? s.len : empty_len) + 1;
    }
    if (*total >= UINT32_MAX)
        return bt_errf(err, errsz, BT_EFORMAT, "%s: %s texts take %llu bytes (at most 4 GiB)", path,
                       what, (unsigned long long)*total);
    return 0;
}

/* The per-token arrays for t->n tokens and text_bytes of texts; the hash table empty. */
static int alloc_tokens(struct tok *t, uint64_t text_bytes, const char *path, char *err,
                        size_t errsz)
{
    size_t n = (size_t)t->n;
    t->text = malloc(text_bytes);
    t->text_off = malloc(sizeof(uint32_t) * n);
    t->text_len = malloc(sizeof(uint32_t) * n);
    t->score = malloc(sizeof(float) * n);
    t->attr = malloc(sizeof(uint16_t) * n);
    t->eog = calloc(n, 1);
    t->piece_off = malloc(sizeof(uint32_t) * n);
    t->piece_len = malloc(sizeof(uint32_t) * n);
    t->hash_mask = pow2_at_least(2 * (uint64_t)n) - 1;
    t->hash = malloc(sizeof(int32_t) * ((size_t)t->hash_mask + 1));
    if (!t->text || !t->text_off || !t->text_len || !t->score || !t->attr || !t->eog ||
        !t->piece_off || !t->piece_len || !t->hash)
        return bt_errf(err, errsz, BT_ENOMEM, "%s: out of memory for %d tokens", path, t->n);
    memset(t->hash, 0xFF, sizeof(int32_t) * ((size_t)t->hash_mask + 1));
    return 0;
}

/* Copy the text of token i to the arena at *off (an empty text becomes "[EMPTY_i]") and index it
 * in the hash table; two tokens with the same text are an error. */
static int add_token_text(struct tok *t, const struct gguf_kv *kt, int32_t i, uint32_t *off,
                          const char *path, char *err, size_t errsz)
{
    struct gguf_str s;
    gguf_arr_str(kt, (uint64_t)i, &s);
    char *dst = t->text + *off;
    size_t len = s.len;
    if (len == 0)
        len = (size_t)snprintf(dst, 21, "[EMPTY_%d]", i);
    else
        memcpy(dst, s.data, len);
    dst[len] = 0;
    t->text_off[i] = *off;
    t->text_len[i] = (uint32_t)len;
    *off += (uint32_t)len + 1;
    uint32_t h = fnv1a(FNV_INIT, dst, len) & t->hash_mask;
    for (; t->hash[h] >= 0; h = (h + 1) & t->hash_mask) {
        int32_t j = t->hash[h];
        if (t->text_len[j] == len && memcmp(ttext(t, j), dst, len) == 0)
            return bt_errf(err, errsz, BT_EFORMAT, "%s: tokens %d and %d have the same text", path,
                           j, i);
    }
    t->hash[h] = i;
    return 0;
}

/* Score (default 0) and attributes (from the token type, default NORMAL) of token i, whose text
 * is in place. A NaN score or a BYTE token not spelled <0xXX> is an error. */
static int read_score_and_type(struct tok *t, const struct vocab_arrays *a, int32_t i,
                               const char *path, char *err, size_t errsz)
{
    static const uint16_t type_attr[7] = {0,      A_NORMAL, A_UNKNOWN, A_CONTROL,
                                          A_USER, A_UNUSED, A_BYTE};
    double sc = 0;
    if (a->score) gguf_arr_f64(a->score, (uint64_t)i, &sc);
    if (isnan(sc)) return bt_errf(err, errsz, BT_EFORMAT, "%s: score of token %d is NaN", path, i);
    t->score[i] = (float)sc;
    int64_t ty = 1;
    if (a->type) gguf_arr_i64(a->type, (uint64_t)i, &ty);
    t->attr[i] = ty >= 0 && ty < 7 ? type_attr[ty] : 0;
    if ((t->attr[i] & A_BYTE) && byte_token_value(ttext(t, i), t->text_len[i]) < 0)
        return bt_errf(err, errsz, BT_EFORMAT,
                       "%s: token %d has type BYTE but its text is not <0xXX>", path, i);
    return 0;
}

/* The vocabulary: texts (arena + hash table), scores and attributes of every token. */
static int load_tokens(struct tok *t, const struct gguf *g, const char *path, char *err,
                       size_t errsz)
{
    struct vocab_arrays a = {0};
    uint64_t bytes = 0;
    int rc = find_vocab_arrays(g, path, &a, err, errsz);
    if (rc) return rc;
    t->n = (int32_t)a.text->arr_n;
    if ((rc = string_array_bytes(a.text, t->n, 20, "token", path, &bytes, err, errsz)) ||
        (rc = alloc_tokens(t, bytes, path, err, errsz)))
        return rc;
    uint32_t off = 0;
    for (int32_t i = 0; i < t->n; i++)
        if ((rc = add_token_text(t, a.text, i, &off, path, err, errsz)) ||
            (rc = read_score_and_type(t, &a, i, path, err, errsz)))
            return rc;
    return 0;
}

/* Copy merge i to the arena at *off and index it by its pair (the first merge of a pair wins).
 * It splits at the first space after the first byte; one without a space never matches. */
static void add_merge(struct tok *t, const struct gguf_kv *kv, int32_t i, uint32_t *off)
{
    struct gguf_str s;
    gguf_arr_str(kv, (uint64_t)i, &s);
    char *l = t->mtext + *off;
    memcpy(l, s.data, s.len);
    l[s.len] = 0;
    t->moff[i] = *off;
    t->mlen[i] = (uint32_t)s.len;
    *off += (uint32_t)s.len + 1;
    const char *sp = s.len > 1 ? memchr(l + 1, ' ', s.len - 1) : NULL;
    if (!sp) return;
    uint32_t ln = (uint32_t)(sp - l);
    t->msplit[i] = ln;
    if (merge_rank(t, l, ln, l + ln + 1, s.len - ln - 1) >= 0) return;
    uint32_t h = merge_hash(l, ln, l + ln + 1, s.len - ln - 1) & t->mhash_mask;
    while (t->mhash[h] >= 0) h = (h + 1) & t->mhash_mask;
    t->mhash[h] = i;
}

/* tokenizer.ggml.merges (byte-level BPE): "left right" strings, ranked by position; the hash
 * table finds a pair's first merge. */
static int load_merges(struct tok *t, const struct gguf *g, const char *path, char *err,
                       size_t errsz)
{
    const struct gguf_kv *kv = gguf_find_kv(g, "tokenizer.ggml.merges");
    if (!kv)
        return bt_errf(err, errsz, BT_EFORMAT,
                       "%s: byte-level BPE vocabulary without tokenizer.ggml.merges", path);
    if (kv->type != GGUF_TYPE_ARRAY || kv->arr_type != GGUF_TYPE_STRING)
        return bt_errf(err, errsz, BT_EFORMAT,
                       "%s: tokenizer.ggml.merges is not an array of strings", path);
    if (kv->arr_n > TOK_MAX_MERGES)
        return bt_errf(err, errsz, BT_EFORMAT,
                       "%s: tokenizer.ggml.merges has %llu entries (at most %d)", path,
                       (unsigned long long)kv->arr_n, TOK_MAX_MERGES);
    int32_t nm = (int32_t)kv->arr_n;
    uint64_t total = 0;
    int rc = string_array_bytes(kv, nm, 0, "merge", path, &total, err, errsz);
    if (rc) return rc;
    t->mtext = malloc(total + 1);
    t->moff = malloc(sizeof(uint32_t) * ((size_t)nm + 1));
    t->mlen = malloc(sizeof(uint32_t) * ((size_t)nm + 1));
    t->msplit = malloc(sizeof(uint32_t) * ((size_t)nm + 1));
    t->mhash_mask = pow2_at_least(2 * (uint64_t)nm) - 1;
    t->mhash = malloc(sizeof(int32_t) * ((size_t)t->mhash_mask + 1));
    if (!t->mtext || !t->moff || !t->mlen || !t->msplit || !t->mhash)
        return bt_errf(err, errsz, BT_ENOMEM, "%s: out of memory for %d merges", path, nm);
    memset(t->mhash, 0xFF, sizeof(int32_t) * ((size_t)t->mhash_mask + 1));
    uint32_t off = 0;
    for (int32_t i = 0; i < nm; i++) add_merge(t, kv, i, &off);
    t->n_merges = nm;
    return 0;
}

/* Special token ids: the family defaults (where in range), then the GGUF's; the add_bos/add_eos
 * flags (dropped, with a warning, where the token is missing). fim[]: the FIM ids from the GGUF
 * (pre, suf, mid, pad, rep, sep), -1 where absent. */
static void load_special_ids(struct tok *t, const struct gguf *g, const char *path, int32_t fim[6])
{
    static const char *const fim_keys[9] = {
        "tokenizer.ggml.fim_pre_token_id", "tokenizer.ggml.fim_suf_token_id",
        "tokenizer.ggml.fim_mid_token_id", "tokenizer.ggml.fim_pad_token_id",
        "tokenizer.ggml.fim_rep_token_id", "tokenizer.ggml.fim_sep_token_id",
        "tokenizer.ggml.prefix_token_id",  "tokenizer.ggml.suffix_token_id",
        "tokenizer.ggml.middle_token_id"};
    int32_t n = t->n;
    if (t->bos >= n) t->bos = -1;
    if (t->eos >= n) t->eos = -1;
    if (t->unk >= n) t->unk = -1;
    int32_t sep = -1, pad = -1, mask = -1; /* checked (warnings), not used */
    read_special_id(g, path, "tokenizer.ggml.bos_token_id", n, &t->bos);
    read_special_id(g, path, "tokenizer.ggml.eos_token_id", n, &t->eos);
    read_special_id(g, path, "tokenizer.ggml.eot_token_id", n, &t->eot);
    read_special_id(g, path, "tokenizer.ggml.eom_token_id", n, &t->eom);
    read_special_id(g, path, "tokenizer.ggml.unknown_token_id", n, &t->unk);
    read_special_id(g, path, "tokenizer.ggml.seperator_token_id", n, &sep);
    read_special_id(g, path, "tokenizer.ggml.padding_token_id", n, &pad);
    read_special_id(g, path, "tokenizer.ggml.mask_token_id", n, &mask);
    /* the last three are older names of the first three */
    for (int i = 0; i < 6; i++) fim[i] = -1;
    for (int i = 0; i < 9; i++) read_special_id(g, path, fim_keys[i], n, &fim[i < 6 ? i : i - 6]);
    read_flag(g, path, "tokenizer.ggml.add_bos_token", &t->add_bos);
    read_flag(g, path, "tokenizer.ggml.add_eos_token", &t->add_eos);
    if (t->add_bos && t->bos < 0) {
        bt_warn("%s: add_bos_token is set but there is no BOS token", path);
        t->add_bos = false;
    }
    if (t->add_eos && t->eos < 0) {
        bt_warn("%s: add_eos_token is set but there is no EOS token", path);
        t->add_eos = false;
    }
}

static bool text_is(const struct tok *t, int32_t id, const char *s)
{
    size_t n = strlen(s);
    return t->text_len[id] == n && memcmp(ttext(t, id), s, n) == 0;
}

static bool text_in(const struct tok *t, int32_t id, const char *const *list)
{
    for (; *list; list++)
        if (text_is(t, id, *list)) return true;
    return false;
}

/* Token-text conventions llama.cpp applies on top of the GGUF metadata: end-of-generation and
 * fill-in-the-middle tokens found by their text become control tokens. The lists end with NULL;
 * fim_names follows the order of the FIM ids (pre, suf, mid, pad, rep, sep). */
#define U_BAR  "\xEF\xBD\x9C" /* U+FF5C */
#define U_LOWB "\xE2\x96\x81" /* U+2581 */
static const char *const eot_names[] = {"<|eot_id|>",
                                        "<|im_end|>",
                                        "<|end|>",
                                        "<end_of_turn>",
                                        "<|endoftext|>",
                                        "<|end_of_text|>",
                                        "<EOT>",
                                        "_<EOT>",
                                        "[EOT]",
                                        "<" U_BAR "end" U_LOWB "of" U_LOWB "sentence" U_BAR ">",
                                        "<end_of_utterance>",
                                        NULL};
static const char *const fim_names[6][9] = {
    {"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<" U_BAR "fim" U_LOWB "begin" U_BAR ">",
     "<PRE>", U_LOWB "<PRE>", "<|code_prefix|>", "<|prefix|>", NULL},
    {"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<" U_BAR "fim" U_LOWB "hole" U_BAR ">",
     "<SUF>", U_LOWB "<SUF>", "<|code_suffix|>", "<|suffix|>", NULL},
    {"<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<" U_BAR "fim" U_LOWB "end" U_BAR ">",
     "<MID>", U_LOWB "<MID>", "<|code_middle|>", "<|middle|>", NULL},
    {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]", NULL},
    {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>", NULL},
    {"<|file_sep|>", NULL},
};
static const char *const eog_names[] = {"<|eot_id|>",
                                        "<|im_end|>",
                                        "<|end|>",
                                        "<|return|>",
                                        "<|call|>",
                                        "<|flush|>",
                                        "<|calls|>",
                                        "<end_of_turn>",
                                        "<|endoftext|>",
                                        "</s>",
                                        "<|eom_id|>",
                                        "<EOT>",
                                        "_<EOT>",
                                        "[EOT]",
                                        "[EOS]",
                                        "<|end_of_text|>",
                                        "<end_of_utterance>",
                                        "<eos>",
                                        "<turn|>",
                                        "<|tool_response>",
                                        "<" U_BAR "end" U_LOWB "of" U_LOWB "sentence" U_BAR ">",
                                        "[e~[",
                                        NULL};
static const char *const always_user[] = {"<|channel|>", "<|message|>", "<|start|>",
                                          "<|constrain|>", NULL};
static const char *const eom_names[] = {"<|eom_id|>", NULL};

/* EOT, EOM and FIM ids the GGUF does not give (fim[k] < 0): the lowest id with a known text, made a
 * control token (EOT: the earliest name of eot_names wins, <|end|> before <|endoftext|>). f[]: fim
 * completed. */
static void find_ids_by_text(struct tok *t, const int32_t fim[6], int32_t f[6])
{
    memcpy(f, fim, 6 * sizeof(*f));
    bool eot_text = t->eot < 0, eom_text = t->eom < 0;
    int eot_rank = INT_MAX;
    for (int32_t id = 0; id < t->n; id++) {
        for (int k = 0; eot_text && eot_names[k] && k < eot_rank; k++) {
            if (text_is(t, id, eot_names[k])) {
                t->eot = id;
                eot_rank = k;
                t->attr[id] |= A_CONTROL;
            }
        }
        if (eom_text && t->eom < 0 && text_in(t, id, eom_names)) {
            t->eom = id;
            t->attr[id] |= A_CONTROL;
        }
        for (int k = 0; k < 6; k++) {
            if (fim[k] < 0 && f[k] < 0 && text_in(t, id, fim_names[k])) {
                f[k] = id;
                t->attr[id] |= A_CONTROL;
            }
        }
    }
}

/* End of generation: the FIM pad/repo/separator tokens, every token named in eog_names (made a
 * control token), EOS, EOT and EOM. The always_user texts become user-defined tokens. */
static void mark_eog(struct tok *t, const int32_t f[6])
{
    for (int k = 3; k < 6; k++)
        if (f[k] >= 0) t->eog[f[k]] = 1;
    for (int32_t id = 0; id < t->n; id++) {
        if (text_in(t, id, eog_names)) {
            t->eog[id] = 1;
            t->attr[id] |= A_CONTROL;
        }
        if (text_in(t, id, always_user)) t->attr[id] = A_USER;
    }
    if (t->eos >= 0) t->eog[t->eos] = 1;
    if (t->eot >= 0) t->eog[t->eot] = 1;
    if (t->eom >= 0) t->eog[t->eom] = 1;
}

/* "<|end|>" is not the end where "<|return|>" + "<|call|>" (or "<|calls|>" + "<|flush|>") exist;
 * "</s>" is a normal token next to "<|tool_response>" or "<|plamo:eos|>". */
static void unmark_false_eog(struct tok *t)
{
    bool has_return = false, has_call = false, has_flush = false, has_marker = false;
    int32_t end_id = -1, s_id = -1;
    for (int32_t id = 0; id < t->n; id++) {
        if (!t->eog[id]) continue;
        if (text_is(t, id, "<|return|>"))
            has_return = true;
        else if (text_is(t, id, "<|call|>") || text_is(t, id, "<|calls|>"))
            has_call = true;
        else if (text_is(t, id, "<|flush|>"))
            has_flush = true;
        else if (text_is(t, id, "<|end|>"))
            end_id = id;
        if (text_is(t, id, "<|tool_response>") || text_is(t, id, "<|plamo:eos|>"))
            has_marker = true;
        else if (text_is(t, id, "</s>"))
            s_id = id;
    }
    if (end_id >= 0 && has_call && (has_return || has_flush)) {
        t->eog[end_id] = 0;
        t->attr[end_id] = A_USER;
    }
    if (has_marker && s_id >= 0) {
        t->eog[s_id] = 0;
        t->attr[s_id] = A_NORMAL;
    }
}

/* fim[]: the FIM ids from the GGUF (pre, suf, mid, pad, rep, sep), -1 where absent. */
static void apply_text_rules(struct tok *t, const int32_t fim[6])
{
    int32_t f[6];
    find_ids_by_text(t, fim, f);
    mark_eog(t, f);
    unmark_false_eog(t);
}

static int cmp_special(const void *a, const void *b, void *arg)
{
    const struct tok *t = arg;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (t->text_len[x] != t->text_len[y]) return t->text_len[x] > t->text_len[y] ? -1 : 1;
    return (x > y) - (x < y);
}

/* The control, user-defined and unknown tokens, longest text first (the partition's order). */
static int build_special_list(struct tok *t, const char *path, char *err, size_t errsz)
{
    t->special = malloc(sizeof(int32_t) * (size_t)t->n);
    if (!t->special) return bt_errf(err, errsz, BT_ENOMEM, "%s: out of memory", path);
    for (int32_t i = 0; i < t->n; i++)
        if (t->attr[i] & (A_CONTROL | A_USER | A_UNKNOWN)) t->special[t->n_special++] = i;
    qsort_r(t->special, (size_t)t->n_special, sizeof(int32_t), cmp_special, t);
    return 0;
}

/* Every token's piece (for special = true) in one arena, and max_piece. */
static int build_pieces(struct tok *t, const char *path, char *err, size_t errsz)
{
    struct sbuf pieces = {0};
    int rc;
    for (int32_t i = 0; i < t->n; i++) {
        size_t start = pieces.n;
        if ((rc = render_piece(t, i, &pieces)) == 0 && pieces.n > TOK_MAX_PIECES) rc = BT_EFORMAT;
        if (rc) goto fail;
        t->piece_off[i] = (uint32_t)start;
        t->piece_len[i] = (uint32_t)(pieces.n - start);
        if ((int)t->piece_len[i] > t->max_piece) t->max_piece = (int)t->piece_len[i];
    }
    if ((rc = sb_put(&pieces, "", 1))) goto fail;
    t->piece = pieces.p;
    t->max_piece = 3 * (t->max_piece + 4);
    return 0;

fail:
    free(pieces.p);
    if (rc == BT_EFORMAT)
        return bt_errf(err, errsz, rc, "%s: decoded tokens exceed %u bytes", path, TOK_MAX_PIECES);
    return bt_errf(err, errsz, rc, "%s: out of memory", path);
}

/* SPM byte fallback: the <0xXX> token of each byte, else its one-byte token, else -1. */
static void build_byte_tokens(struct tok *t)
{
    for (int b = 0; b < 256; b++) {
        char buf[8];
        snprintf(buf, sizeof(buf), "<0x%02X>", b);
        t->byte_tok[b] = lookup(t, buf, 6);
        if (t->byte_tok[b] < 0) {
            buf[0] = (char)b;
            t->byte_tok[b] = lookup(t, buf, 1);
        }
    }
}

/* Per-model token attributes, by general.name: Phi-3 strips spaces after its special tokens. */
static void apply_model_rules(struct tok *t, const struct gguf *g)
{
    struct gguf_str name;
    if (gguf_get_str(g, "general.name", &name) != 0) return;
    char low[256];
    size_t k = name.len < sizeof(low) - 1 ? name.len : sizeof(low) - 1;
    for (size_t i = 0; i < k; i++) {
        char c = name.data[i];
        low[i] = c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
    }
    low[k] = 0;
    if (!strstr(low, "phi-3") && !strstr(low, "phi3")) return;
    for (int i = 0; i < t->n_special; i++) t->attr[t->special[i]] |= A_RSTRIP;
    static const char *const keep[] = {"<unk>", "<s>", "<|endoftext|>"};
    int32_t id = lookup(t, "</s>", 4);
    if (id >= 0) t->attr[id] |= A_RSTRIP;
    for (int i = 0; i < 3; i++)
        if ((id = lookup(t, keep[i], strlen(keep[i]))) >= 0) t->attr[id] &= ~A_RSTRIP;
}

int tok_load(const struct gguf *g, struct tok **out, char *err, size_t errsz)
{
    const char *path = gguf_path(g);
    int32_t fim[6];
    int rc;
    *out = NULL;
    struct tok *t = calloc(1, sizeof(*t));
    if (!t) return bt_errf(err, errsz, BT_ENOMEM, "%s: out of memory", path);
    if ((rc = load_family(t, g, path, err, errsz))) goto fail;
    if ((rc = load_tokens(t, g, path, err, errsz))) goto fail;
    if (t->type == TOK_TYPE_BPE && (rc = load_merges(t, g, path, err, errsz))) goto fail;
    load_special_ids(t, g, path, fim);
    apply_text_rules(t, fim);
    if ((rc = build_special_list(t, path, err, errsz))) goto fail;
    if ((rc = build_pieces(t, path, err, errsz))) goto fail;
    build_byte_tokens(t);
    apply_model_rules(t, g);
    *out = t;
    return 0;

fail:
    tok_free(t);
    return rc;
}

/* ---- encoding: shared scratch ---- */

struct emit {
    int32_t *out;
    int cap;
    int n;
};

static inline void emit_tok(struct emit *e, int32_t id)
{
    if (e->n < e->cap) e->out[e->n] = id;
    e->n++;
}

struct sym {
    int prev, next;
    uint32_t off, n;
};

struct bigram {
    float score; /* higher first; BPE: -rank */
    int left, right;
    uint32_t size;
};

static inline bool bg_before(const struct bigram *a, const struct bigram *b)
{
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static void heap_push(struct bigram *h, int *n, struct bigram v)
{
    int i = (*n)++;
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!bg_before(&v, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = v;
}

static struct bigram heap_pop(struct bigram *h, int *n)
{
    struct bigram top = h[0], v = h[--*n];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && bg_before(&h[c + 1], &h[c])) c++;
        if (!bg_before(&h[c], &v)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n > 0) h[i] = v;
    return top;
}

/* Output of one splitting stage: segment ends. */
struct segs {
    uint32_t *end;
    size_t n, cap;
};

static int seg_push(struct segs *s, size_t end)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 64;
        void *p = realloc(s->end, cap * sizeof(uint32_t));
        if (!p) return BT_ENOMEM;
        s->end = p;
        s->cap = cap;
    }
    s->end[s->n++] = (uint32_t)end;
    return 0;
}

/* Scratch reused across the fragments of one tok_encode call. */
struct scratch {
    char *buf; /* SPM text / BPE word bytes */
    size_t buf_cap;
    struct sym *sym;
    struct bigram *heap;
    size_t sym_cap;
    uint32_t *cp;
    uint8_t *info;
    size_t cp_cap;
    struct segs seg, seg2; /* word ends (exclusive), in code points */
};

static void scratch_free(struct scratch *s)
{
    free(s->buf);
    free(s->sym);
    free(s->heap);
    free(s->cp);
    free(s->info);
    free(s->seg.end);
    free(s->seg2.end);
}

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q) return BT_ENOMEM;
    *p = q;
    *cap = c;
    return 0;
}

static int scratch_syms(struct scratch *s, size_t n)
{
    size_t cap = s->sym_cap;
    if (grow((void **)&s->sym, &cap, n + 1, sizeof(struct sym))) return BT_ENOMEM;
    void *h = realloc(s->heap, sizeof(struct bigram) * (3 * cap + 1));
    if (!h) return BT_ENOMEM;
    s->heap = h;
    s->sym_cap = cap;
    return 0;
}

/* ---- merging symbols (both families) ---- */

static inline size_t utf8_len_lead(uint8_t b)
{
    static const uint8_t len[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return len[b >> 4];
}

/* Rank of joining adjacent symbols l and r (higher joins first) into *rank; false if they never
 * join. SPM: the score of the joined text's token; byte-level BPE: minus the merge's index. */
static inline bool pair_rank(const struct tok *t, const struct scratch *s, int l, int r,
                             float *rank)
{
    const char *p = s->buf + s->sym[l].off;
    uint32_t ln = s->sym[l].n, rn = s->sym[r].n;
    if (t->type == TOK_TYPE_SPM) {
        int32_t id = lookup(t, p, ln + rn);
        if (id < 0) return false;
        *rank = t->score[id];
    } else {
        int32_t m = merge_rank(t, p, ln, p + ln, rn);
        if (m < 0) return false;
        *rank = -(float)m;
    }
    return true;
}

static void add_pair(const struct tok *t, struct scratch *s, int *nh, int l, int r)
{
    float rank;
    if (l < 0 || r < 0 || !pair_rank(t, s, l, r, &rank)) return;
    heap_push(s->heap, nh, (struct bigram){rank, l, r, s->sym[l].n + s->sym[r].n});
}

/* Split s->buf[0..m) (m > 0) into one symbol per UTF-8 character, then join the best-ranked
 * adjacent pair (the leftmost of equals) until no pair ranks. The symbols left are linked from
 * s->sym[0] in text order. */
static int merge_symbols(const struct tok *t, struct scratch *s, size_t m)
{
    if (scratch_syms(s, m)) return BT_ENOMEM;
    int ns = 0;
    for (size_t off = 0; off < m;) {
        size_t k = utf8_len_lead((uint8_t)s->buf[off]);
        if (k > m - off) k = m - off;
        s->sym[ns] = (struct sym){ns - 1, off + k == m ? -1 : ns + 1, (uint32_t)off, (uint32_t)k};
        off += k;
        ns++;
    }
    int nh = 0;
    for (int i = 1; i < ns; i++) add_pair(t, s, &nh, i - 1, i);
    while (nh > 0) {
        struct bigram b = heap_pop(s->heap, &nh);
        struct sym *l = &s->sym[b.left], *r = &s->sym[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size) continue; /* stale pair */
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) s->sym[r->next].prev = b.left;
        add_pair(t, s, &nh, l->prev, b.left);
        add_pair(t, s, &nh, b.left, l->next);
    }
    return 0;
}

/* Token for one byte of a symbol the vocabulary lacks, or -1. SPM: its <0xXX> token (else the
 * one-byte token, else UNK); byte-level BPE: the one-byte token. */
static inline int32_t byte_fallback(const struct tok *t, uint8_t b)
{
    if (t->type == TOK_TYPE_BPE) return lookup(t, (const char *)&b, 1);
    return t->byte_tok[b] >= 0 ? t->byte_tok[b] : t->unk;
}

/* Tokens of s->buf[0..m): merge, then each symbol's token (or its bytes' fallback tokens). */
static int merge_encode(const struct tok *t, struct scratch *s, size_t m, struct emit *e)
{
    if (m == 0) return 0;
    if (merge_symbols(t, s, m)) return BT_ENOMEM;
    for (int i = 0; i != -1; i = s->sym[i].next) {
        const char *p = s->buf + s->sym[i].off;
        int32_t id = lookup(t, p, s->sym[i].n);
        if (id >= 0) {
            emit_tok(e, id);
            continue;
        }
        for (uint32_t j = 0; j < s->sym[i].n; j++)
            if ((id = byte_fallback(t, (uint8_t)p[j])) >= 0) emit_tok(e, id);
    }
    return 0;
}

/* ---- SentencePiece-style ---- */

static int spm_encode(const struct tok *t, struct scratch *s, const char *text, size_t len,
                      bool prefix, struct emit *e)
{
    /* escape: ' ' -> U+2581, optional leading one */
    size_t need = 3 * (len + 1);
    if (grow((void **)&s->buf, &s->buf_cap, need, 1)) return BT_ENOMEM;
    size_t m = 0;
    if (prefix) memcpy(s->buf, "\xE2\x96\x81", 3), m = 3;
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ')
            memcpy(s->buf + m, "\xE2\x96\x81", 3), m += 3;
        else
            s->buf[m++] = text[i];
    }
    return merge_encode(t, s, m, e);
}

/* ---- byte-level BPE: pre-tokenizer ---- */

struct pre {
    const uint32_t *cp;
    const uint8_t *info; /* uni_info of each code point */
};

/* Class tests of llama.cpp's pre-tokenizers. "Custom" splitters use the Unicode classes directly;
 * the others run std::regex over a text where each non-ASCII code point stands for its class (so
 * there \s, \p{L}, \p{N}, \p{P} are ASCII classes plus the non-ASCII members of the class). */
static inline bool f_ws(uint8_t f)
{
    return f & UNI_WS;
}
static inline bool f_l(uint8_t f)
{
    return (f & UNI_CAT_MASK) == UNI_L;
}
static inline bool f_n(uint8_t f)
{
    return (f & UNI_CAT_MASK) == UNI_N;
}

static inline bool rx_space(uint32_t c, uint8_t f)
{
    return c < 128 ? (c == ' ' || (c >= '\t' && c <= '\r')) : f_ws(f);
}
static inline bool ascii_alpha(uint32_t c)
{
    return (c | 32) >= 'a' && (c | 32) <= 'z';
}
static inline bool ascii_digit(uint32_t c)
{
    return c >= '0' && c <= '9';
}
static inline bool ascii_punct(uint32_t c) /* the ASCII members of \p{P} */
{
    return (c >= 0x21 && c <= 0x23) || (c >= 0x25 && c <= 0x2A) || (c >= 0x2C && c <= 0x2F) ||
           c == 0x3A || c == 0x3B || c == 0x3F || c == 0x40 || (c >= 0x5B && c <= 0x5D) ||
           c == 0x5F || c == 0x7B || c == 0x7D;
}
static inline bool rx_letter(uint32_t c, uint8_t f)
{
    return c < 128 ? ascii_alpha(c) : (!f_ws(f) && f_l(f));
}
static inline bool rx_number(uint32_t c, uint8_t f)
{
    return c < 128 ? ascii_digit(c) : (!f_ws(f) && f_n(f));
}
static inline bool rx_punct(uint32_t c, uint8_t f)
{
    return c < 128 ? ascii_punct(c) : (!f_ws(f) && (f & UNI_CAT_MASK) == UNI_P);
}
/* Code point as the std::wregex stages see it: non-ASCII white space becomes U+000B. */
static inline uint32_t rx_wchar(uint32_t c, uint8_t f)
{
    return c >= 128 && f_ws(f) ? 0x0B : c;
}
static bool dsllm_punct(uint32_t c)
{
    return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x7E) || (c >= 0xFF01 && c <= 0xFF0F) ||
           (c >= 0xFF1A && c <= 0xFF5E) || (c >= 0x2018 && c <= 0x201F) ||
           (c >= 0x3000 && c <= 0x3002);
}
static bool cjk(uint32_t c)
{
    return (c >= 0x4E00 && c <= 0x9FA5) || (c >= 0x0800 && c <= 0x4E00) ||
           (c >= 0xAC00 && c <= 0xD7FF);
}

/* Membership of code point i in a stage's repeated class. */
static bool rx_class(int st, const struct pre *x, size_t i)
{
    uint32_t c = x->cp[i];
    uint8_t f = x->info[i];
    switch (st) {
    case ST_DSLLM_LETTER:
        return uni_in_dsllm_letters(rx_wchar(c, f));
    case ST_DSLLM_PUNCT:
        return dsllm_punct(rx_wchar(c, f));
    case ST_CJK:
        return cjk(rx_wchar(c, f));
    case ST_NUM_RUN:
    case ST_NUM_ONE:
        return rx_number(c, f);
    case ST_LETTER_RUN:
        return rx_letter(c, f);
    case ST_PUNCT_RUN:
        return rx_punct(c, f);
    case ST_PUNCT_FALCON:
    case ST_PUNCT_DEFAULT:
        if (c < 128 && (c == '$' || c == '+' || c == '<' || c == '=' || c == '>' || c == '^' ||
                        c == '~' || c == '|'))
            return true;
        if (c == '`') return st == ST_PUNCT_FALCON;
        return rx_punct(c, f);
    default:
        return false;
    }
}

/* Length of the regex match of stage st at position i of [.., end), 0 if none. */
static size_t rx_match(int st, const struct pre *x, size_t i, size_t end)
{
    const uint32_t *cp = x->cp;
    size_t j = i;
    switch (st) {
    case ST_CRLF:
        return cp[i] == '\r' || cp[i] == '\n';
    case ST_DIGIT3:
        return i + 3 <= end && ascii_digit(cp[i]) && ascii_digit(cp[i + 1]) &&
                       ascii_digit(cp[i + 2])
                   ? 3
                   : 0;
    case ST_WS_END:
        while (j < end && rx_space(cp[j], x->info[j])) j++;
        return j == end ? end - i : 0;
    case ST_NUM_ONE:
        return rx_class(st, x, i);
    case ST_DSLLM_LETTER:
    case ST_DSLLM_PUNCT:
    case ST_LETTER_RUN:
    case ST_PUNCT_RUN: /* \s?X+ */
        if (rx_space(cp[i], x->info[i]) && i + 1 < end && rx_class(st, x, i + 1)) j = i + 1;
        /* fallthrough */
    default: /* X+ */
        if (!rx_class(st, x, j)) return 0;
        while (j < end && rx_class(st, x, j)) j++;
        return j - i;
    }
}

static inline uint32_t lower_ascii(uint32_t c)
{
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}
static inline bool is_crlf(uint32_t c)
{
    return c == '\r' || c == '\n';
}
static inline bool f_other(uint8_t f) /* [^\s\p{L}\p{N}] */
{
    return !f_ws(f) && !f_l(f) && !f_n(f);
}

/* First position from p on in [.., b) whose class flags fail in_class. */
static inline size_t skip_while(const struct pre *x, size_t p, size_t b, bool (*in_class)(uint8_t))
{
    while (p < b && in_class(x->info[p])) p++;
    return p;
}

/* llama.cpp's hand-written splitters for the gpt2, llama3 and qwen2 expressions: each alternative
 * gives the end of its match at pos (< b), or 0 if it does not match there. */

/* 's|'t|'re|'ve|'m|'ll|'d (llama3, qwen2: ASCII case-insensitive) */
static size_t match_contraction(int st, const uint32_t *cp, size_t pos, size_t b)
{
    if (cp[pos] != '\'' || pos + 1 >= b) return 0;
    uint32_t c1 = st == ST_GPT2 ? cp[pos + 1] : lower_ascii(cp[pos + 1]);
    if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return pos + 2;
    if (pos + 2 >= b) return 0;
    uint32_t c2 = st == ST_GPT2 ? cp[pos + 2] : lower_ascii(cp[pos + 2]);
    if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l'))
        return pos + 3;
    return 0;
}

/* gpt2: ` ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+` */
static size_t match_gpt2_word(const struct pre *x, size_t pos, size_t b)
{
    size_t q = pos + (x->cp[pos] == ' ');
    if (q >= b) return 0;
    uint8_t f = x->info[q];
    if (f_l(f)) return skip_while(x, q, b, f_l);
    if (f_n(f)) return skip_while(x, q, b, f_n);
    if (f_other(f)) return skip_while(x, q, b, f_other);
    return 0;
}

/* llama3: `[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*`; qwen2: \p{N} */
static size_t match_llama3_word(int st, const struct pre *x, size_t pos, size_t b)
{
    uint32_t c = x->cp[pos];
    uint8_t f = x->info[pos];
    if (!is_crlf(c) && !f_n(f) && (f_l(f) || (pos + 1 < b && f_l(x->info[pos + 1]))))
        return skip_while(x, pos + 1, b, f_l);
    if (f_n(f)) {
        size_t e = pos + 1, max = st == ST_QWEN2 ? 1 : 3;
        while (e < b && e - pos < max && f_n(x->info[e])) e++;
        return e;
    }
    size_t q = pos + (c == ' ');
    if (q < b && !f_other(x->info[q])) return 0;
    q = skip_while(x, q, b, f_other);
    while (q < b && is_crlf(x->cp[q])) q++;
    return q;
}

/* White space: `\s*[\r\n]+` (not gpt2), `\s+(?!\S)`, `\s+`; anything else: one code point. */
static size_t match_space(int st, const struct pre *x, size_t pos, size_t b)
{
    size_t e = pos, last_crlf = 0;
    for (; e < b && f_ws(x->info[e]); e++)
        if (st != ST_GPT2 && is_crlf(x->cp[e])) last_crlf = e + 1;
    if (last_crlf > 0) return last_crlf;
    if (e - pos > 1 && e < b) return e - 1; /* leave the last space to the next word */
    return e > pos ? e : pos + 1;
}

/* Split [a, b) with splitter st (ST_GPT2, ST_LLAMA3 or ST_QWEN2): the first alternative that
 * matches at each position ends a word. */
static int split_custom(int st, const struct pre *x, size_t a, size_t b, struct segs *o)
{
    for (size_t pos = a; pos < b;) {
        size_t e = match_contraction(st, x->cp, pos, b);
        if (!e) e = st == ST_GPT2 ? match_gpt2_word(x, pos, b) : match_llama3_word(st, x, pos, b);
        if (!e) e = match_space(st, x, pos, b);
        if (seg_push(o, e)) return BT_ENOMEM;
        pos = e;
    }
    return 0;
}

/* A std::regex_iterator pass: matches and the text between them become segments. */
static int split_regex(int st, const struct pre *x, size_t a, size_t b, struct segs *o)
{
    size_t gap = a, pos = a;
    while (pos < b) {
        size_t m = rx_match(st, x, pos, b);
        if (m == 0) {
            pos++;
            continue;
        }
        if (pos > gap && seg_push(o, pos)) return BT_ENOMEM;
        pos += m;
        if (seg_push(o, pos)) return BT_ENOMEM;
        gap = pos;
    }
    if (gap < b && seg_push(o, b)) return BT_ENOMEM;
    return 0;
}

/* Split cp[0..n) into words with the stages of pre-tokenizer `pre`; result in *out. */
static int pre_split(int pre, const struct pre *x, size_t n, struct segs *cur, struct segs *tmp)
{
    cur->n = 0;
    if (n == 0) return 0;
    if (seg_push(cur, n)) return BT_ENOMEM;
    for (int k = 0; k < 7 && pre_stages[pre][k] != ST_END; k++) {
        int st = pre_stages[pre][k];
        tmp->n = 0;
        size_t a = 0;
        for (size_t i = 0; i < cur->n; i++) {
            size_t b = cur->end[i];
            int rc = st == ST_GPT2 || st == ST_LLAMA3 || st == ST_QWEN2
                         ? split_custom(st, x, a, b, tmp)
                         : split_regex(st, x, a, b, tmp);
            if (rc) return rc;
            a = b;
        }
        struct segs sw = *cur;
        *cur = *tmp;
        *tmp = sw;
    }
    return 0;
}

/* ---- byte-level BPE ---- */

static int scratch_cps(struct scratch *s, size_t n)
{
    size_t c1 = s->cp_cap, c2 = s->cp_cap;
    if (grow((void **)&s->cp, &c1, n, sizeof(uint32_t))) return BT_ENOMEM;
    if (grow((void **)&s->info, &c2, n, 1)) return BT_ENOMEM;
    s->cp_cap = c1 < c2 ? c1 : c2;
    return 0;
}

static size_t decode_cps(struct scratch *s, const char *text, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        uint32_t c = uni_decode_lenient(text, len, &i);
        s->cp[n] = c;
        /* code points past Unicode are "undefined" but, unlike a position past the end, still
         * count as characters of the text: give them the P class's behaviour (not L/N/space) */
        uint8_t f = uni_info(c);
        s->info[n] = f ? f : UNI_C;
        n++;
    }
    return n;
}

static int bpe_encode(const struct tok *t, struct scratch *s, const char *text, size_t len,
                      struct emit *e)
{
    if (scratch_cps(s, len)) return BT_ENOMEM;
    size_t n = decode_cps(s, text, len);
    struct pre x = {s->cp, s->info};
    int rc = pre_split(t->pre, &x, n, &s->seg, &s->seg2);
    if (rc) return rc;
    const struct segs cur = s->seg;
    size_t a = 0;
    for (size_t w = 0; w < cur.n; w++) {
        size_t b = cur.end[w];
        /* re-encode the code points, then map each byte to its stand-in code point */
        if (grow((void **)&s->buf, &s->buf_cap, 8 * (b - a) + 1, 1)) return BT_ENOMEM;
        size_t m = 0;
        for (size_t i = a; i < b; i++) {
            char u[4];
            int k = uni_encode(s->cp[i], u);
            for (int j = 0; j < k; j++) {
                uint8_t by = (uint8_t)u[j];
                memcpy(s->buf + m, t->benc[by], t->benc_len[by]);
                m += t->benc_len[by];
            }
        }
        int32_t id = t->ignore_merges ? lookup(t, s->buf, m) : -1; /* whole word first */
        if (id >= 0)
            emit_tok(e, id);
        else if ((rc = merge_encode(t, s, m, e)))
            return rc;
        a = b;
    }
    return 0;
}

/* ---- special-token partition ---- */

struct frag {
    int32_t id; /* -1: raw text */
    size_t off, len;
};

struct frags {
    struct frag *v;
    size_t n, cap;
};

static int frag_push(struct frags *f, int32_t id, size_t off, size_t len)
{
    if (f->n == f->cap) {
        size_t cap = f->cap ? 2 * f->cap : 16;
        void *p = realloc(f->v, cap * sizeof(struct frag));
        if (!p) return BT_ENOMEM;
        f->v = p;
        f->cap = cap;
    }
    f->v[f->n++] = (struct frag){id, off, len};
    return 0;
}

/* Bit set of the hashed 4-byte windows of a text: a token text with a window not in the set does
 * not occur in the text (false positives only cost a search). */
struct grams {
    uint64_t *bits;
    uint32_t mask;
};

static inline uint32_t gram_hash(const char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return (v * 2654435761u) >> 7;
}

static int grams_build(struct grams *g, const char *text, size_t len)
{
    size_t nbits = 1024;
    while (nbits < 8 * len && nbits < (1u << 24)) nbits <<= 1;
    g->mask = (uint32_t)nbits - 1;
    g->bits = calloc(nbits / 64, sizeof(uint64_t));
    if (!g->bits) return BT_ENOMEM;
    for (size_t i = 0; i + 4 <= len; i++) {
        uint32_t h = gram_hash(text + i) & g->mask;
        g->bits[h >> 6] |= 1ull << (h & 63);
    }
    return 0;
}

static bool grams_may_contain(const struct grams *g, const char *s, size_t n)
{
    for (size_t i = 0; i + 4 <= n; i++) {
        uint32_t h = gram_hash(s + i) & g->mask;
        if (!(g->bits[h >> 6] & (1ull << (h & 63)))) return false;
    }
    return true;
}

/* Split every raw fragment of cur at each occurrence of special token id (into nxt). */
static int split_at_special(const struct tok *t, const char *text, int32_t id,
                            const struct frags *cur, struct frags *nxt)
{
    unsigned a = t->attr[id];
    const char *st = ttext(t, id);
    size_t sl = t->text_len[id];
    nxt->n = 0;
    for (size_t i = 0; i < cur->n; i++) {
        struct frag f = cur->v[i];
        if (f.id >= 0) {
            if (frag_push(nxt, f.id, 0, 0)) return BT_ENOMEM;
            continue;
        }
        size_t base = f.off, blen = f.len;
        for (;;) {
            const char *m = blen >= sl ? memmem(text + base, blen, st, sl) : NULL;
            if (!m) {
                if (blen > 0 && frag_push(nxt, -1, base, blen)) return BT_ENOMEM;
                break;
            }
            size_t mpos = (size_t)(m - text);
            size_t llen = mpos - base;
            if (a & A_LSTRIP)
                while (llen > 0 && c_isspace(text[base + llen - 1])) llen--;
            if (llen > 0 && frag_push(nxt, -1, base, llen)) return BT_ENOMEM;
            if (frag_push(nxt, id, 0, 0)) return BT_ENOMEM;
            size_t roff = mpos + sl, rlen = base + blen - roff;
            if (rlen == 0) break;
            if (a & A_RSTRIP)
                while (rlen > 0 && c_isspace(text[roff])) roff++, rlen--;
            base = roff;
            blen = rlen; /* search on in what is left */
        }
    }
    return 0;
}

/* llama.cpp's tokenizer_st_partition: each special token in turn (longest first) splits every
 * raw fragment at each of its occurrences; left/right whitespace is dropped for lstrip/rstrip
 * tokens. Control and unknown tokens take part only with parse_special. */
static int partition(const struct tok *t, const char *text, size_t len, bool parse_special,
                     struct frags *cur, struct frags *nxt)
{
    struct grams g = {0};
    int rc = 0;
    cur->n = 0;
    if (len == 0) return 0;
    if (frag_push(cur, -1, 0, len)) return BT_ENOMEM;
    if (t->n_special > 16 && grams_build(&g, text, len)) return BT_ENOMEM;
    for (int k = 0; k < t->n_special; k++) {
        int32_t id = t->special[k];
        if (!parse_special && (t->attr[id] & (A_CONTROL | A_UNKNOWN))) continue;
        const char *st = ttext(t, id);
        size_t sl = t->text_len[id];
        if (sl > len || (g.bits && !grams_may_contain(&g, st, sl)) || !memmem(text, len, st, sl))
            continue;
        if ((rc = split_at_special(t, text, id, cur, nxt))) break;
        struct frags sw = *cur;
        *cur = *nxt;
        *nxt = sw;
    }
    free(g.bits);
    return rc;
}

int tok_encode(const struct tok *t, const char *text, size_t len, bool add_special,
               bool parse_special, int32_t *out, int cap)
{
    if (!t || (!text && len) || cap < 0 || (cap > 0 && !out)) return BT_EINVAL;
    if (len > TOK_MAX_INPUT) return BT_EINVAL;
    struct emit e = {out, cap, 0};
    struct frags cur = {0}, nxt = {0};
    struct scratch s = {0};
    int rc = partition(t, text, len, parse_special, &cur, &nxt);
    if (rc) goto done;
    if (add_special && t->add_bos) emit_tok(&e, t->bos);
    bool prev_special = true; /* SPM: a space prefix for the first text and after specials */
    for (size_t i = 0; i < cur.n; i++) {
        struct frag f = cur.v[i];
        if (f.id >= 0) {
            emit_tok(&e, f.id);
            prev_special = true;
            continue;
        }
        if (t->type == TOK_TYPE_SPM) {
            rc = spm_encode(t, &s, text + f.off, f.len, t->add_space_prefix && prev_special, &e);
            prev_special = false;
        } else {
            rc = bpe_encode(t, &s, text + f.off, f.len, &e);
        }
        if (rc) goto done;
    }
    if (add_special && t->add_eos) emit_tok(&e, t->eos);
    rc = e.n;
done:
    free(cur.v);
    free(nxt.v);
    scratch_free(&s);
    return rc;
}

int tok_pre_split_test(const char *pre_name, const char *text, size_t len, uint32_t *ends, int cap)
{
    int k = find_pre((struct gguf_str){pre_name, strlen(pre_name)});
    if (k < 0) return BT_EINVAL;
    int pre = pre_names[k].pre;
    struct scratch s = {0};
    struct segs cur = {0}, tmp = {0};
    int rc = scratch_cps(&s, len);
    if (rc) goto done;
    size_t n = decode_cps(&s, text, len);
    struct pre x = {s.cp, s.info};
    if ((rc = pre_split(pre, &x, n, &cur, &tmp))) goto done;
    for (size_t i = 0; i < cur.n && (int)i < cap; i++) ends[i] = cur.end[i];
    rc = (int)cur.n;
done:
    free(cur.end);
    free(tmp.end);
    scratch_free(&s);
    return rc;
}

/* ---- decoding ---- */

static const char *piece_of(const struct tok *t, int32_t id, bool special, uint32_t *n)
{
    if (!special && (t->attr[id] & (A_UNKNOWN | A_CONTROL))) {
        *n = 0;
        return "";
    }
    *n = t->piece_len[id];
    return t->piece + t->piece_off[id];
}

int tok_piece(const struct tok *t, int32_t id, bool special, char *buf, int cap)
{
    if (!t || id < 0 || id >= t->n || cap < 0) return BT_EINVAL;
    uint32_t n;
    const char *p = piece_of(t, id, special, &n);
    if ((int)n <= cap && n) memcpy(buf, p, n);
    return (int)n;
}

/* llama.cpp's clean-up of detokenized BPE text (in place; returns the new length). The passes
 * read characters already rewritten by earlier steps exactly as the original does. */
static int clean_spaces(char *text, int total)
{
    int t1 = total;
    total = total ? 1 : 0;
    for (int i = 1; i < t1; i++) {
        char x = text[i];
        if (text[i - 1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ',')) total--;
        text[total++] = x;
    }
    int t2 = total;
    total = total ? 1 : 0;
    for (int i = 1; i < t2; i++) {
        char x = text[i];
        if (x == '\'' && i + 1 < t2 && text[i - 1] == ' ' && text[i + 1] == ' ') {
            total--;
            text[++i] = '\0';
        }
        text[total++] = x;
    }
    int t3 = total;
    total = total ? 1 : 0;
    for (int i = 1; i < t3; i++) {
        char x = text[i];
        if (text[i - 1] == ' ' && x == '\'' && i + 1 < t3) {
            char x1 = text[i + 1];
            if (x1 == 's' || x1 == 'm')
                total--;
            else if (i + 2 < t3 && ((x1 == 'r' || x1 == 'v') && text[i + 2] == 'e'))
                total--;
        }
        text[total++] = x;
    }
    return total;
}

int tok_decode(const struct tok *t, const int32_t *ids, int n, bool special, char *buf, int cap)
{
    if (!t || n < 0 || cap < 0 || (n > 0 && !ids)) return BT_EINVAL;
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n) return BT_EINVAL;
        uint32_t k;
        const char *p = piece_of(t, ids[i], special, &k);
        if (i == 0 && t->add_space_prefix && k > 0 && p[0] == ' ') k--; /* leading space */
        total += k;
        if (total > INT_MAX) return BT_EINVAL;
    }
    if (total > cap) return (int)total;
    int64_t w = 0;
    for (int i = 0; i < n; i++) {
        uint32_t k;
        const char *p = piece_of(t, ids[i], special, &k);
        if (i == 0 && t->add_space_prefix && k > 0 && p[0] == ' ') p++, k--;
        if (k) memcpy(buf + w, p, k);
        w += k;
    }
    return t->clean_spaces ? clean_spaces(buf, (int)total) : (int)total;
}

/* ---- incremental decoding ---- */

void tok_stream_init(struct tok_stream *s, const struct tok *t)
{
    memset(s, 0, sizeof(*s));
    s->t = t;
}

static const char REPL[3] = {'\xEF', '\xBF', '\xBD'};

int tok_stream_push(struct tok_stream *s, int32_t id, char *out, int cap)
{
    const struct tok *t = s->t;
    if (!t || id < 0 || id >= t->n || cap < 0) return BT_EINVAL;
    uint32_t k;
    const char *p = piece_of(t, id, s->special, &k);
    /* view over held bytes + the piece, without copying */
    size_t total = s->n_pend + k, i = 0;
    int w = 0;
    uint8_t win[4];
    while (i < total) {
        size_t avail = total - i < 4 ? total - i : 4;
        for (size_t j = 0; j < avail; j++) {
            size_t q = i + j;
            win[j] = q < s->n_pend ? s->pend[q] : (uint8_t)p[q - s->n_pend];
        }
        int r = uni_utf8_check(win, avail);
        if (r == 0) break; /* unfinished character: hold it */
        if (r > 0) {
            if (w + r > cap) return BT_EFULL;
            memcpy(out + w, win, (size_t)r);
            w += r;
            i += (size_t)r;
        } else {
            if (w + 3 > cap) return BT_EFULL;
            memcpy(out + w, REPL, 3);
            w += 3;
            i += (size_t)-r;
        }
    }
    /* hold the rest (a proper prefix of a character: at most 3 bytes) */
    uint8_t rest[4];
    size_t nr = total - i;
    for (size_t j = 0; j < nr; j++) {
        size_t q = i + j;
        rest[j] = q < s->n_pend ? s->pend[q] : (uint8_t)p[q - s->n_pend];
    }
    memcpy(s->pend, rest, nr);
    s->n_pend = (uint8_t)nr;
    return w;
}

int tok_stream_flush(struct tok_stream *s, char *out, int cap)
{
    if (s->n_pend == 0) return 0;
    if (cap < 3) return BT_EFULL;
    memcpy(out, REPL, 3);
    s->n_pend = 0;
    return 3;
}
