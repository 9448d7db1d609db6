/* kv: the key/value cache of one pipeline stage (its layers only), in blocks.
 *
 * Storage is a pool of n_blocks blocks of KV_BLOCK cells per layer; a cell holds the
 * (RoPE-rotated) key and the value of one token. Each sequence has a block table: entry j names
 * the block holding its positions [j KV_BLOCK, (j + 1) KV_BLOCK), -1 while none is mapped, so a
 * sequence's positions are 0..len-1 with no gaps, wherever its blocks lie. Several sequences may
 * map the same block (a shared prompt prefix): who maps what is decided elsewhere (blocks.h, on
 * rank 0) and applied here as operations (kv_apply) on every stage alike; this file never
 * decides anything about sharing. Storage is F32 or F16 (rounded on store, read back as float).
 *
 * kv_new gives every sequence its own blocks for n_ctx positions (a fixed identity table: no
 * sharing, nothing to apply); kv_new_blocks a pool of any size with empty tables.
 *
 * Ownership and threads: a struct kv borrows its model (for sizes and RoPE), which must outlive
 * it. It is not synchronised: one thread (the one running the forward pass) uses it at a time. */
#ifndef BATON_KV_H
#define BATON_KV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct model;

#define KV_BLOCK 16 /* cells (token positions) per block */

struct kv {
    const struct model *m; /* borrowed */
    int n_layer;           /* the stage's layers (model l1 - l0) */
    int n_seq;
    int n_ctx;      /* positions per sequence */
    int n_blocks;   /* blocks in the pool */
    int max_blocks; /* table entries per sequence: ceil(n_ctx / KV_BLOCK) */
    int kv_dim;     /* n_head_kv * head_dim */
    uint32_t type;  /* BT_F32 or BT_F16 */
    size_t elsize;  /* 4 or 2 */
    void *k;        /* (n_layer, n_blocks, KV_BLOCK, kv_dim) */
    void *v;        /* (n_layer, n_blocks, KV_BLOCK, kv_dim) */
    int32_t *table; /* (n_seq, max_blocks) block of each block of positions, -1 none */
    int32_t *len;   /* (n_seq) cells in use */
    float *tmp;     /* (kv_dim) scratch of kv_seq_shift */
};

/* One change of the block tables, as rank 0 decides them (blocks.h). */
enum kv_op_kind {
    KV_OP_MAP = 1,   /* seq's table entry `index` := block (its cells are what the block holds) */
    KV_OP_COPY = 2,  /* the first n cells of block src, every layer, into block dst */
    KV_OP_RESET = 3, /* seq restarts: its length := n (positions in the blocks mapped for it),
                      * every table entry past them unmapped */
};

struct kv_op {
    uint8_t kind;  /* enum kv_op_kind */
    int32_t seq;   /* MAP, RESET */
    int32_t index; /* MAP: table entry */
    int32_t block; /* MAP: block id; COPY: dst */
    int32_t src;   /* COPY */
    int32_t n;     /* COPY: cells; RESET: positions */
};

/* A cache with its own blocks per sequence: n_seq sequences of n_ctx cells, BT_F32 or BT_F16. */
int kv_new(const struct model *m, int n_seq, int n_ctx, uint32_t type, struct kv **out, char *err,
           size_t errsz);
/* A pool of n_blocks blocks and n_seq empty tables of n_ctx positions (kv_apply maps them). */
int kv_new_blocks(const struct model *m, int n_seq, int n_ctx, int n_blocks, uint32_t type,
                  struct kv **out, char *err, size_t errsz);
void kv_free(struct kv *kv); /* NULL is fine */

size_t kv_bytes(const struct kv *kv); /* memory of the K and V arrays */
/* Free the host K and V arrays (k, v become NULL): the cache lives on a device and only the
 * tables and lengths are kept here (fwd_new_dev). kv_seq_shift then fails with BT_EUNSUP; a
 * COPY is the device's to do (kv_apply leaves it to the caller). */
void kv_release_storage(struct kv *kv);

/* Apply ops in order; every value is checked first (a bad op changes nothing: BT_EINVAL). A
 * MAP of -1 unmaps. COPY runs on the host storage when there is one. */
int kv_apply(struct kv *kv, const struct kv_op *ops, int n, char *err, size_t errsz);

/* Number of positions stored for seq (its next position); -1 for a bad seq. */
int kv_seq_len(const struct kv *kv, int seq);
/* Forget all positions of seq (its table stays as it is: rank 0 remaps it). */
int kv_seq_clear(struct kv *kv, int seq);
/* Keep only the first n positions of seq (n <= len). */
int kv_seq_keep(struct kv *kv, int seq, int n);
/* Is a block mapped for position pos of seq? */
bool kv_has_cell(const struct kv *kv, int seq, int pos);
/* Context shift, as llama.cpp's: keep the first n_keep positions of seq (a BOS, a system
 * prompt; 0 for none), drop the n_drop after them, and move the rest back: position p >= n_keep +
 * n_drop becomes p - n_drop, its key rotated back by n_drop positions. Needs n_keep + n_drop <=
 * len, and blocks of its own (it rewrites them). */
int kv_seq_shift(struct kv *kv, int seq, int n_keep, int n_drop);

/* The first cell of block b in layer il (KV_BLOCK rows of kv_dim elements of kv->type). */
static inline void *kv_k_block(const struct kv *kv, int il, int b)
{
    return (char *)kv->k + ((size_t)il * kv->n_blocks + b) * KV_BLOCK * kv->kv_dim * kv->elsize;
}
static inline void *kv_v_block(const struct kv *kv, int il, int b)
{
    return (char *)kv->v + ((size_t)il * kv->n_blocks + b) * KV_BLOCK * kv->kv_dim * kv->elsize;
}
/* The block of position pos of seq (mapped: the caller checked). */
static inline int kv_block_of(const struct kv *kv, int seq, int pos)
{
    return kv->table[(size_t)seq * kv->max_blocks + pos / KV_BLOCK];
}
/* Key and value rows of (layer index within the stage, seq, position). */
static inline void *kv_k_at(const struct kv *kv, int il, int seq, int pos)
{
    return (char *)kv_k_block(kv, il, kv_block_of(kv, seq, pos)) +
           (size_t)(pos % KV_BLOCK) * kv->kv_dim * kv->elsize;
}
static inline void *kv_v_at(const struct kv *kv, int il, int seq, int pos)
{
    return (char *)kv_v_block(kv, il, kv_block_of(kv, seq, pos)) +
           (size_t)(pos % KV_BLOCK) * kv->kv_dim * kv->elsize;
}

/* Store / load one row of kv_dim floats in the cache's type. */
void kv_store_row(const struct kv *kv, void *dst, const float *src);
void kv_load_row(const struct kv *kv, float *dst, const void *src);

#endif
