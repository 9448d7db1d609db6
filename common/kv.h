/* kv: the key/value cache of one pipeline stage (its layers only), one slot per sequence.
 *
 * Sequence s owns n_ctx cells per layer; cell p holds the (RoPE-rotated) key and the value of the
 * token at position p, so a sequence's positions are 0..len-1 with no gaps. Storage is F32 or
 * F16 (rounded on store, read back as float).
 *
 * Ownership and threads: a struct kv borrows its model (for sizes and RoPE), which must outlive
 * it. It is not synchronised: one thread (the one running the forward pass) uses it at a time. */
#ifndef BATON_KV_H
#define BATON_KV_H

#include <stddef.h>
#include <stdint.h>

struct model;

struct kv {
    const struct model *m; /* borrowed */
    int n_layer;           /* the stage's layers (model l1 - l0) */
    int n_seq;
    int n_ctx;     /* cells per sequence */
    int kv_dim;    /* n_head_kv * head_dim */
    uint32_t type; /* BT_F32 or BT_F16 */
    size_t elsize; /* 4 or 2 */
    void *k;       /* (n_layer, n_seq, n_ctx, kv_dim) */
    void *v;       /* (n_layer, n_seq, n_ctx, kv_dim) */
    int32_t *len;  /* (n_seq) cells in use */
    float *tmp;    /* (kv_dim) scratch of kv_seq_shift */
};

/* Allocate a cache for model m's stage: n_seq sequences of n_ctx cells, type BT_F32 or BT_F16. */
int kv_new(const struct model *m, int n_seq, int n_ctx, uint32_t type, struct kv **out, char *err,
           size_t errsz);
void kv_free(struct kv *kv); /* NULL is fine */

size_t kv_bytes(const struct kv *kv); /* memory of the K and V arrays */
/* Free the host K and V arrays (k, v become NULL): the cache lives on a device and only the
 * lengths are kept here (fwd_new_dev). kv_seq_shift then fails with BT_EUNSUP. */
void kv_release_storage(struct kv *kv);

/* Number of positions stored for seq (its next position); -1 for a bad seq. */
int kv_seq_len(const struct kv *kv, int seq);
/* Forget all positions of seq. */
int kv_seq_clear(struct kv *kv, int seq);
/* Keep only the first n positions of seq (n <= len). */
int kv_seq_keep(struct kv *kv, int seq, int n);
/* Context shift, as llama.cpp's: keep the first n_keep positions of seq (a BOS, a system
 * prompt; 0 for none), drop the n_drop after them, and move the rest back: position p >= n_keep +
 * n_drop becomes p - n_drop, its key rotated back by n_drop positions. Needs n_keep + n_drop <=
 * len. */
int kv_seq_shift(struct kv *kv, int seq, int n_keep, int n_drop);

/* Key and value rows of (layer index within the stage, seq, cell): kv_dim elements of
 * kv->type. */
static inline void *kv_k_at(const struct kv *kv, int il, int seq, int cell)
{
    size_t i = (((size_t)il * kv->n_seq + seq) * kv->n_ctx + cell) * kv->kv_dim;
    return (char *)kv->k + i * kv->elsize;
}
static inline void *kv_v_at(const struct kv *kv, int il, int seq, int cell)
{
    size_t i = (((size_t)il * kv->n_seq + seq) * kv->n_ctx + cell) * kv->kv_dim;
    return (char *)kv->v + i * kv->elsize;
}

/* Store / load one row of kv_dim floats in the cache's type. */
void kv_store_row(const struct kv *kv, void *dst, const float *src);
void kv_load_row(const struct kv *kv, float *dst, const void *src);

#endif
