/* fuzz_tok: libFuzzer target for the tokenizers.
 *
 * Each input is used twice:
 *  - as a GGUF file (gguf_open_mem): if tok_load accepts its metadata, the input itself and a few
 *    fixed strings are encoded (special tokens parsed or not), decoded, and streamed;
 *  - as text for two small built-in vocabularies (SentencePiece-style and byte-level BPE, made
 *    once with the GGUF writer): encode, decode, incremental decode. Checked: every token id is in
 *    range, the stream emits only valid UTF-8, and for the byte-level vocabulary (no space
 *    clean-up) valid UTF-8 text decodes back to itself.
 * Built as a libFuzzer binary with -Dfuzz=true (clang), and linked with replay.c in every build. */
#include "gguf.h"
#include "gguf_write.h"
#include "log.h"
#include "tokenizer.h"
#include "unicode.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool valid_utf8(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        int r = uni_utf8_check((const uint8_t *)s + i, n - i);
        if (r <= 0) return false;
        i += (size_t)r;
    }
    return true;
}

/* Encode, check, decode, stream. Returns the decoded text (malloc'd) and its length. */
static char *roundtrip(const struct tok *t, const char *text, size_t len, bool special,
                       int *dec_len)
{
    *dec_len = -1;
    int n = tok_encode(t, text, len, special, special, NULL, 0);
    if (n < 0) return NULL;
    int32_t *ids = malloc(sizeof(int32_t) * ((size_t)n + 1));
    if (!ids) return NULL;
    if (tok_encode(t, text, len, special, special, ids, n) != n) abort();
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= tok_n_vocab(t)) abort();
    int k = tok_decode(t, ids, n, special, NULL, 0);
    char *dec = k >= 0 ? malloc((size_t)k + 1) : NULL;
    if (dec) {
        int k2 = tok_decode(t, ids, n, special, dec, k);
        if (k2 < 0 || k2 > k) abort();
        *dec_len = k2;
    }
    struct tok_stream s;
    tok_stream_init(&s, t);
    s.special = special;
    int cap = tok_max_piece(t);
    char *buf = malloc((size_t)cap);
    for (int i = 0; buf && i < n; i++) {
        int w = tok_stream_push(&s, ids[i], buf, cap);
        if (w < 0 || !valid_utf8(buf, (size_t)w)) abort();
    }
    if (buf) {
        int w = tok_stream_flush(&s, buf, cap);
        if (w < 0 || !valid_utf8(buf, (size_t)w)) abort();
    }
    free(buf);
    free(ids);
    return dec;
}

/* ---- built-in vocabularies ---- */

static struct tok *make_vocab(bool bpe)
{
    static const char *const spm_words[] = {"\xE2\x96\x81",
                                            "\xE2\x96\x81t",
                                            "he",
                                            "\xE2\x96\x81the",
                                            "in",
                                            "\xE2\x96\x81"
                                            "a",
                                            "er",
                                            "."};
    static const char *const bpe_words[] = {"\xC4\xA0t",        "he", "\xC4\xA0the",     "in", "er",
                                            "\xC4\xA0\xC4\xA0", "12", "\xC4\x8A\xC4\x8A"};
    static const char *const merges[] = {
        "\xC4\xA0 t",        "h e", "\xC4\xA0t he",     "i n", "e r",
        "\xC4\xA0 \xC4\xA0", "1 2", "\xC4\x8A \xC4\x8A"};
    struct gguf_str toks[300];
    char store[300][8];
    float scores[300];
    int32_t types[300];
    int n = 0;
    if (!bpe) {
        const char *sp[3] = {"<unk>", "<s>", "</s>"};
        for (int i = 0; i < 3; i++) {
            toks[n] = (struct gguf_str){sp[i], strlen(sp[i])};
            types[n] = i ? 3 : 2;
            scores[n++] = 0;
        }
        for (int b = 0; b < 256; b++) {
            snprintf(store[n], sizeof(store[n]), "<0x%02X>", b);
            toks[n] = (struct gguf_str){store[n], 6};
            types[n] = 6;
            scores[n++] = 0;
        }
        for (int i = 0; i < 8; i++) {
            toks[n] = (struct gguf_str){spm_words[i], strlen(spm_words[i])};
            types[n] = 1;
            scores[n] = -(float)i;
            n++;
        }
    } else {
        int k = 0;
        for (int b = 0; b < 256; b++) {
            bool keep = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
            uint32_t cp = keep ? (uint32_t)b : 256u + (uint32_t)k++;
            int l = uni_encode(cp, store[n]);
            toks[n] = (struct gguf_str){store[n], (uint64_t)l};
            types[n] = 1;
            scores[n++] = 0;
        }
        for (int i = 0; i < 8; i++) {
            toks[n] = (struct gguf_str){bpe_words[i], strlen(bpe_words[i])};
            types[n] = 1;
            scores[n++] = 0;
        }
        toks[n] = (struct gguf_str){"<|endoftext|>", 13};
        types[n] = 3;
        scores[n++] = 0;
        toks[n] = (struct gguf_str){"<tool>", 6};
        types[n] = 4;
        scores[n++] = 0;
    }
    struct gguf_writer *w = gguf_writer_new();
    gguf_writer_set_str(w, "tokenizer.ggml.model", bpe ? "gpt2" : "llama");
    if (bpe) {
        gguf_writer_set_str(w, "tokenizer.ggml.pre", "qwen2"); /* no space clean-up */
        struct gguf_str m[8];
        for (int i = 0; i < 8; i++) m[i] = (struct gguf_str){merges[i], strlen(merges[i])};
        gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", m, 8);
        gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)n - 2);
    }
    gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, (uint64_t)n);
    gguf_writer_set_arr(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, scores, (uint64_t)n);
    gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types, (uint64_t)n);
    char path[256], err[256];
    const char *dir = getenv("TMPDIR");
    snprintf(path, sizeof(path), "%s/fuzz_tok_%d_%d.gguf", dir ? dir : "/tmp", (int)getpid(), bpe);
    struct gguf *g = NULL;
    struct tok *t = NULL;
    if (gguf_writer_begin(w, path, err, sizeof(err)) == 0 &&
        gguf_writer_finish(w, err, sizeof(err)) == 0 && gguf_open(path, &g, err, sizeof(err)) == 0)
        tok_load(g, &t, err, sizeof(err));
    gguf_writer_free(w);
    gguf_close(g);
    unlink(path);
    if (!t) {
        fprintf(stderr, "fuzz_tok: built-in vocabulary: %s\n", err);
        abort();
    }
    return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct tok *spm, *bpe;
    if (!spm) {
        bt_log_set_level(BT_LOG_ERROR);
        spm = make_vocab(false);
        bpe = make_vocab(true);
    }
    const char *text = (const char *)data;
    int dl;
    for (int sp = 0; sp < 2; sp++) {
        free(roundtrip(spm, text, size, sp, &dl));
        char *dec = roundtrip(bpe, text, size, sp, &dl);
        /* byte-level BPE is lossless for valid UTF-8 */
        if (dec && valid_utf8(text, size) && (dl != (int)size || memcmp(dec, text, size) != 0))
            abort();
        free(dec);
    }

    /* the input as a GGUF vocabulary */
    struct gguf *g = NULL;
    struct tok *t = NULL;
    char err[256];
    if (gguf_open_mem(data, size, "fuzz", &g, err, sizeof(err)) == 0 &&
        tok_load(g, &t, err, sizeof(err)) == 0) {
        static const char *const probes[] = {"Hello world", " <s>\n\t x", "\xF0\x9F\x98\x80 12345",
                                             "\xFF\xC3("};
        for (int i = 0; i < 4; i++) free(roundtrip(t, probes[i], strlen(probes[i]), i & 1, &dl));
        free(roundtrip(t, text, size, true, &dl));
        for (int32_t id = 0; id < tok_n_vocab(t) && id < 4096; id++) {
            char b[8];
            if (tok_piece(t, id, true, b, sizeof(b)) < 0) abort();
        }
    }
    tok_free(t);
    gguf_close(g);
    return 0;
}
