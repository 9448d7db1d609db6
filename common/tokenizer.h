/* tokenizer: text <-> token ids for the vocabularies stored in GGUF files.
 *
 * Two families, chosen by tokenizer.ggml.model: "llama" (SentencePiece-style: space prefix,
 * U+2581 for spaces, bigram merges by score, <0xXX> byte fallback) and "gpt2" (byte-level BPE:
 * GPT-2 byte<->unicode mapping, merges by rank, a regex-equivalent pre-tokenizer chosen by
 * tokenizer.ggml.pre). Behaviour follows llama.cpp's tokenizers token for token.
 *
 * Ownership: tok_load copies everything it needs out of the gguf (the gguf may be closed after
 * it returns). A struct tok is immutable after tok_load: every function taking a const struct tok
 * may be called from any number of threads at once (tok_encode allocates its scratch per call).
 * A struct tok_stream belongs to one thread (one sequence) and borrows its tok, which must
 * outlive it. */
#ifndef BATON_TOKENIZER_H
#define BATON_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gguf;
struct tok;

enum tok_type { TOK_TYPE_SPM = 1, TOK_TYPE_BPE = 2 };

/* Token attributes (tokenizer.ggml.token_type values of the GGUF). */
enum tok_attr {
    TOK_ATTR_UNDEFINED = 0,
    TOK_ATTR_NORMAL = 1,
    TOK_ATTR_UNKNOWN = 2,
    TOK_ATTR_CONTROL = 3,
    TOK_ATTR_USER_DEFINED = 4,
    TOK_ATTR_UNUSED = 5,
    TOK_ATTR_BYTE = 6,
};

/* Load the vocabulary from GGUF metadata. On failure: negative status, *out = NULL, err holds the
 * reason (e.g. "m.gguf: tokenizer.ggml.scores has 100 entries, tokens has 32000"). */
int tok_load(const struct gguf *g, struct tok **out, char *err, size_t errsz);
void tok_free(struct tok *t); /* NULL is fine */

int tok_type(const struct tok *t); /* enum tok_type */
int tok_n_vocab(const struct tok *t);
int32_t tok_bos(const struct tok *t); /* -1 if the vocabulary has none */
int32_t tok_eos(const struct tok *t); /* -1 if none */
int32_t tok_eot(const struct tok *t); /* -1 if none */
/* End of generation: EOS, EOT, EOM and the other end tokens the vocabulary names. */
bool tok_is_eog(const struct tok *t, int32_t id);
bool tok_is_control(const struct tok *t, int32_t id);
bool tok_add_bos(const struct tok *t); /* tokenizer.ggml.add_bos_token (or the family default) */
bool tok_add_eos(const struct tok *t);
/* Raw text of a token as stored in the vocabulary (NUL-terminated, borrowed; NULL if out of
 * range). */
const char *tok_text(const struct tok *t, int32_t id);
int tok_attr(const struct tok *t, int32_t id); /* enum tok_attr, or -1 if out of range */
/* Token id of an exact vocabulary string, or -1. */
int32_t tok_lookup(const struct tok *t, const char *text, size_t len);
/* Upper bound of bytes one tok_piece / tok_stream_push / tok_stream_flush call can produce. */
int tok_max_piece(const struct tok *t);

/* Encode len bytes of text (any bytes; need not be NUL-terminated or valid UTF-8). add_special:
 * add BOS/EOS as the GGUF flags say. parse_special: control-token texts in the input (<s>,
 * <|im_end|> ...) become those tokens, longest first; without it they are plain text.
 * User-defined tokens are always matched (as llama.cpp does).
 * Returns the number of tokens n (if n > cap only cap were written: call again with a bigger
 * buffer; out may be NULL when cap is 0) or a negative status. */
int tok_encode(const struct tok *t, const char *text, size_t len, bool add_special,
               bool parse_special, int32_t *out, int cap);

/* Bytes of one token: byte tokens give their byte, U+2581 gives a space (SPM), byte-level BPE
 * text is mapped back to bytes; control tokens give nothing unless `special`. Not
 * NUL-terminated. Returns the byte count n (written only if n <= cap) or a negative status for a
 * bad id. */
int tok_piece(const struct tok *t, int32_t id, bool special, char *buf, int cap);

/* Text of a token sequence, as llama.cpp's llama_detokenize(remove_special = false,
 * unparse_special = special): the space prefix (add_space_prefix) is removed from the first
 * token only (so after a leading BOS the text keeps its space), and byte-level BPE vocabularies
 * clean up spaces before punctuation as llama.cpp does.
 * Returns the byte count n (not NUL-terminated) or a negative status; if n > cap nothing useful
 * was written and n is the buffer size to call again with. */
int tok_decode(const struct tok *t, const int32_t *ids, int n, bool special, char *buf, int cap);

/* Incremental decoder for generated tokens: pieces are concatenated (no space stripping) and
 * only complete UTF-8 characters are emitted; bytes of an unfinished character are held until it
 * completes; an ill-formed sequence becomes U+FFFD (one per maximal ill-formed subpart, like
 * Python's errors="replace"). No allocation; copyable; one sequence per stream. */
struct tok_stream {
    const struct tok *t; /* borrowed */
    bool special;        /* render control tokens (default false) */
    uint8_t n_pend;      /* held bytes of an unfinished character */
    uint8_t pend[4];
};
void tok_stream_init(struct tok_stream *s, const struct tok *t);
/* Append token id; writes the newly completed bytes to out. Returns their count, BT_EINVAL for a
 * bad id, or BT_EFULL if cap < tok_max_piece(t) could not hold them (the stream is unchanged). */
int tok_stream_push(struct tok_stream *s, int32_t id, char *out, int cap);
/* End of sequence: held bytes of an unfinished character become U+FFFD. Returns bytes written or
 * BT_EFULL (cap >= 3 always suffices). */
int tok_stream_flush(struct tok_stream *s, char *out, int cap);

/* For tests: the word boundaries (code point end offsets) the pre-tokenizer named `pre` (a
 * tokenizer.ggml.pre value) gives `text`. Returns the word count n (only cap written). */
int tok_pre_split_test(const char *pre, const char *text, size_t len, uint32_t *ends, int cap);

#endif
