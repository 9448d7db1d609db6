/* model: hyperparameters and read-only weight views of a `llama` or `qwen2` GGUF, for one pipeline
 * stage: a layer range [l0, l1), plus the token embedding on the first stage (l0 == 0) and the
 * final norm and output head on the last (l1 == n_layer).
 *
 * Weights are never copied: every view points into the gguf's mapping. Loading reads only the
 * tensor index, so the pages of a stage's tensors are the only weight pages it ever touches
 * (model_prefetch asks the kernel to read them ahead).
 *
 * Ownership: a struct model borrows its gguf, which must stay open until model_free. A model is
 * read-only after model_load and may be shared between threads. */
#ifndef BATON_MODEL_H
#define BATON_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gguf;

enum model_arch { MODEL_ARCH_LLAMA = 0, MODEL_ARCH_QWEN2 = 1 };

/* RoPE pairing, as in llama.cpp: NORM rotates pairs (x[2i], x[2i+1]) (llama), NEOX rotates pairs
 * (x[i], x[i + n_rot/2]) (qwen2). */
enum model_rope_type { MODEL_ROPE_NORM = 0, MODEL_ROPE_NEOX = 2 };

#define MODEL_MAX_ROT 1024 /* largest rope.dimension_count accepted */

struct model_hparams {
    int arch;              /* enum model_arch */
    int n_vocab;           /* tokenizer.ggml.tokens count ({arch}.vocab_size if absent) */
    int n_ctx_train;       /* {arch}.context_length */
    int n_embd;            /* {arch}.embedding_length */
    int n_layer;           /* {arch}.block_count */
    int n_ff;              /* {arch}.feed_forward_length */
    int n_head;            /* {arch}.attention.head_count */
    int n_head_kv;         /* {arch}.attention.head_count_kv (default n_head) */
    int head_dim;          /* {arch}.attention.key_length (default n_embd / n_head) */
    int n_rot;             /* {arch}.rope.dimension_count (default head_dim) */
    int rope_type;         /* enum model_rope_type, from the arch */
    float rope_freq_base;  /* {arch}.rope.freq_base (default 10000) */
    float rope_freq_scale; /* 1 / {arch}.rope.scaling.factor for "linear" scaling, else 1 */
    float norm_eps;        /* {arch}.attention.layer_norm_rms_epsilon */
};

/* A weight view: `rows` rows of `cols` elements of `type` (enum bt_type), row r at
 * data + r * bt_row_size(type, cols). A 1-D tensor has rows = 1. data is NULL when an optional
 * tensor is absent. */
struct model_tensor {
    const void *data;
    uint32_t type;
    int64_t rows, cols;
};

struct model_layer {
    struct model_tensor attn_norm; /* (1, n_embd) f32 */
    struct model_tensor wq;        /* (n_head * head_dim, n_embd) */
    struct model_tensor wk;        /* (n_head_kv * head_dim, n_embd) */
    struct model_tensor wv;        /* (n_head_kv * head_dim, n_embd) */
    struct model_tensor wo;        /* (n_embd, n_head * head_dim) */
    struct model_tensor bq;        /* (1, n_head * head_dim) f32; qwen2 (optional for llama) */
    struct model_tensor bk;        /* (1, n_head_kv * head_dim) f32; qwen2 (optional for llama) */
    struct model_tensor bv;        /* (1, n_head_kv * head_dim) f32; qwen2 (optional for llama) */
    struct model_tensor bo;        /* (1, n_embd) f32; optional */
    struct model_tensor ffn_norm;  /* (1, n_embd) f32 */
    struct model_tensor w_gate;    /* (n_ff, n_embd) */
    struct model_tensor w_up;      /* (n_ff, n_embd) */
    struct model_tensor w_down;    /* (n_embd, n_ff) */
};

struct model {
    const struct gguf *g; /* borrowed */
    struct model_hparams hp;
    int l0, l1;                   /* this stage's layers [l0, l1) */
    bool first, last;             /* l0 == 0; l1 == n_layer */
    struct model_tensor tok_embd; /* (n_vocab, n_embd); first stage only */
    struct model_tensor out_norm; /* (1, n_embd) f32; last stage only */
    struct model_tensor output;   /* (n_vocab, n_embd); last stage; token_embd's data when tied */
    bool tied;                    /* output.weight absent: the head is token_embd */
    const float *rope_freqs;      /* (n_rot / 2) llama3 per-dimension frequency factors, or NULL */
    struct model_layer *layers;   /* (l1 - l0): layers[i] is block l0 + i */
    uint64_t n_bytes;             /* bytes of all weights this stage maps */
    uint64_t n_bytes_token;       /* weight bytes read per decoded token (one embedding row) */
};

/* Read and check the hyperparameters of a llama / qwen2 GGUF (no tensor data is read). */
int model_hparams_read(const struct gguf *g, struct model_hparams *hp, char *err, size_t errsz);

/* Bytes of the tensors of block `layer` ("blk.N.*"); 0 for a bad layer. For splitting layers
 * between stages by bytes. */
uint64_t model_layer_bytes(const struct gguf *g, int layer);

/* Views of the stage [l0, l1) (l1 = -1: up to n_layer). Shapes and types are checked against the
 * hyperparameters; a missing, misshapen or unknown tensor of the stage is an error naming it. */
int model_load(const struct gguf *g, int l0, int l1, struct model **out, char *err, size_t errsz);
void model_free(struct model *m); /* NULL is fine */

/* Ask the kernel to read this stage's weight pages ahead (madvise WILLNEED); advisory. */
void model_prefetch(const struct model *m);

const char *model_arch_name(int arch);

/* RoPE in place on one token: the first n_rot dims of each of n_heads heads of x (head_dim
 * floats apart) are rotated to position pos (a negative pos rotates back), with the model's base,
 * linear scale and frequency factors, like llama.cpp.
 * x (n_heads, head_dim) */
void model_rope(const struct model *m, float *x, int n_heads, int pos);
/* The cos/sin pairs model_rope rotates with at position pos: cs (n_rot), cs[2i] = cos and
 * cs[2i+1] = sin of pair i (the CUDA backend gets them from here, so both rotate alike). */
void model_rope_cos_sin(const struct model *m, int pos, float *cs);

#endif
