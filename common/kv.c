#include "kv.h"

#include "log.h"
#include "model.h"
#include "quant.h"

#include <stdlib.h>
#include <string.h>

/* The pool and empty tables. */
static int kv_alloc(const struct model *m, int n_seq, int n_ctx, int n_blocks, uint32_t type,
                    struct kv **out, char *err, size_t errsz)
{
    struct kv *kv = NULL;
    int rc;

    *out = NULL;
    if (type != BT_F32 && type != BT_F16)
        return bt_errf(err, errsz, BT_EINVAL, "kv cache type %s is not supported (f32, f16 are)",
                       bt_type_name(type));
    if (n_seq < 1 || n_seq > 65536 || n_ctx < 1 || n_ctx > (1 << 24) || n_blocks < 1 ||
        n_blocks > (1 << 24))
        return bt_errf(err, errsz, BT_EINVAL,
                       "bad kv cache size: %d sequences of %d cells, %d blocks", n_seq, n_ctx,
                       n_blocks);
    kv = calloc(1, sizeof(*kv));
    if (!kv) return bt_errf(err, errsz, BT_ENOMEM, "out of memory");
    kv->m = m;
    kv->n_layer = m->l1 - m->l0;
    kv->n_seq = n_seq;
    kv->n_ctx = n_ctx;
    kv->n_blocks = n_blocks;
    kv->max_blocks = (n_ctx + KV_BLOCK - 1) / KV_BLOCK;
    kv->kv_dim = m->hp.n_head_kv * m->hp.head_dim;
    kv->type = type;
    kv->elsize = type == BT_F32 ? 4 : 2;

    size_t n = (size_t)kv->n_layer * (size_t)n_blocks * KV_BLOCK;
    if (n > SIZE_MAX / 2 / kv->elsize / (size_t)kv->kv_dim) {
        rc = bt_errf(err, errsz, BT_ENOMEM, "kv cache of %d blocks is too large", n_blocks);
        goto fail;
    }
    n *= (size_t)kv->kv_dim;
    /* calloc of a large block maps zero pages lazily: only cells written become resident. */
    kv->k = calloc(n, kv->elsize);
    kv->v = calloc(n, kv->elsize);
    kv->table = malloc((size_t)n_seq * (size_t)kv->max_blocks * sizeof(*kv->table));
    kv->len = calloc((size_t)n_seq, sizeof(*kv->len));
    kv->tmp = calloc((size_t)kv->kv_dim, sizeof(float));
    if (!kv->k || !kv->v || !kv->table || !kv->len || !kv->tmp) {
        rc = bt_errf(err, errsz, BT_ENOMEM, "out of memory for a kv cache of %zu bytes",
                     2 * n * kv->elsize);
        goto fail;
    }
    for (size_t i = 0; i < (size_t)n_seq * (size_t)kv->max_blocks; i++) kv->table[i] = -1;
    *out = kv;
    return 0;
fail:
    kv_free(kv);
    return rc;
}

int kv_new(const struct model *m, int n_seq, int n_ctx, uint32_t type, struct kv **out, char *err,
           size_t errsz)
{
    const int per = (n_ctx + KV_BLOCK - 1) / KV_BLOCK;
    if (n_ctx >= 1 && n_seq >= 1 && (int64_t)n_seq * per > (1 << 24))
        return bt_errf(err, errsz, BT_EINVAL, "bad kv cache size: %d sequences of %d cells", n_seq,
                       n_ctx);
    int rc = kv_alloc(m, n_seq, n_ctx, n_seq * per, type, out, err, errsz);
    if (rc < 0) return rc;
    for (int s = 0; s < n_seq; s++) /* each sequence its own blocks */
        for (int j = 0; j < per; j++) (*out)->table[(size_t)s * per + j] = s * per + j;
    return BT_OK;
}

int kv_new_blocks(const struct model *m, int n_seq, int n_ctx, int n_blocks, uint32_t type,
                  struct kv **out, char *err, size_t errsz)
{
    return kv_alloc(m, n_seq, n_ctx, n_blocks, type, out, err, errsz);
}

void kv_free(struct kv *kv)
{
    if (!kv) return;
    free(kv->k);
    free(kv->v);
    free(kv->table);
    free(kv->len);
    free(kv->tmp);
    free(kv);
}

size_t kv_bytes(const struct kv *kv)
{
    return 2 * (size_t)kv->n_layer * kv->n_blocks * KV_BLOCK * kv->kv_dim * kv->elsize;
}

void kv_release_storage(struct kv *kv)
{
    free(kv->k);
    free(kv->v);
    kv->k = kv->v = NULL;
}

int kv_seq_len(const struct kv *kv, int seq)
{
    if (seq < 0 || seq >= kv->n_seq) return -1;
    return kv->len[seq];
}

int kv_seq_clear(struct kv *kv, int seq)
{
    return kv_seq_keep(kv, seq, 0);
}

int kv_seq_keep(struct kv *kv, int seq, int n)
{
    if (seq < 0 || seq >= kv->n_seq || n < 0 || n > kv->len[seq]) return BT_EINVAL;
    kv->len[seq] = n;
    return 0;
}

bool kv_has_cell(const struct kv *kv, int seq, int pos)
{
    return seq >= 0 && seq < kv->n_seq && pos >= 0 && pos < kv->n_ctx &&
           kv_block_of(kv, seq, pos) >= 0;
}

static int op_check(const struct kv *kv, const struct kv_op *o, char *err, size_t errsz)
{
    const bool seq_ok = o->seq >= 0 && o->seq < kv->n_seq;
    switch (o->kind) {
    case KV_OP_MAP:
        if (seq_ok && o->index >= 0 && o->index < kv->max_blocks && o->block >= -1 &&
            o->block < kv->n_blocks)
            return BT_OK;
        break;
    case KV_OP_COPY:
        if (o->src >= 0 && o->src < kv->n_blocks && o->block >= 0 && o->block < kv->n_blocks &&
            o->src != o->block && o->n >= 0 && o->n <= KV_BLOCK)
            return BT_OK;
        break;
    case KV_OP_RESET:
        if (seq_ok && o->n >= 0 && o->n <= kv->n_ctx) return BT_OK;
        break;
    default:
        break;
    }
    return bt_errf(err, errsz, BT_EINVAL,
                   "bad KV block operation %d (seq %d, index %d, block %d, src %d, n %d) for %d "
                   "sequences of %d blocks, %d blocks in all",
                   o->kind, o->seq, o->index, o->block, o->src, o->n, kv->n_seq, kv->max_blocks,
                   kv->n_blocks);
}

int kv_apply(struct kv *kv, const struct kv_op *ops, int n, char *err, size_t errsz)
{
    for (int i = 0; i < n; i++) {
        int rc = op_check(kv, &ops[i], err, errsz);
        if (rc < 0) return rc;
    }
    const size_t row = (size_t)kv->kv_dim * kv->elsize;
    for (int i = 0; i < n; i++) {
        const struct kv_op *o = &ops[i];
        if (o->kind == KV_OP_MAP) {
            kv->table[(size_t)o->seq * kv->max_blocks + o->index] = o->block;
        } else if (o->kind == KV_OP_RESET) {
            int32_t *table = kv->table + (size_t)o->seq * kv->max_blocks;
            for (int j = (o->n + KV_BLOCK - 1) / KV_BLOCK; j < kv->max_blocks; j++) table[j] = -1;
            kv->len[o->seq] = o->n;
        } else if (kv->k) {
            for (int il = 0; il < kv->n_layer; il++) {
                memcpy(kv_k_block(kv, il, o->block), kv_k_block(kv, il, o->src), o->n * row);
                memcpy(kv_v_block(kv, il, o->block), kv_v_block(kv, il, o->src), o->n * row);
            }
        }
    }
    return BT_OK;
}

void kv_store_row(const struct kv *kv, void *dst, const float *src)
{
    if (kv->type == BT_F32) {
        memcpy(dst, src, (size_t)kv->kv_dim * sizeof(float));
    } else {
        bt_f32_to_f16_row(src, dst, kv->kv_dim);
    }
}

void kv_load_row(const struct kv *kv, float *dst, const void *src)
{
    if (kv->type == BT_F32) {
        memcpy(dst, src, (size_t)kv->kv_dim * sizeof(float));
    } else {
        bt_f16_to_f32_row(src, dst, kv->kv_dim);
    }
}

int kv_seq_shift(struct kv *kv, int seq, int n_keep, int n_drop)
{
    if (seq < 0 || seq >= kv->n_seq || n_keep < 0 || n_drop < 0 ||
        (int64_t)n_keep + n_drop > kv->len[seq])
        return BT_EINVAL;
    if (n_drop == 0) return 0;
    if (!kv->k) return BT_EUNSUP; /* the cache is on a device */
    const int n_move = kv->len[seq] - n_keep - n_drop;
    const size_t row = (size_t)kv->kv_dim * kv->elsize;
    for (int il = 0; il < kv->n_layer; il++) {
        for (int p = n_keep; p < n_keep + n_move; p++) { /* forward: p + n_drop is not yet moved */
            kv_load_row(kv, kv->tmp, kv_k_at(kv, il, seq, p + n_drop));
            model_rope(kv->m, kv->tmp, kv->m->hp.n_head_kv, -n_drop);
            kv_store_row(kv, kv_k_at(kv, il, seq, p), kv->tmp);
            memcpy(kv_v_at(kv, il, seq, p), kv_v_at(kv, il, seq, p + n_drop), row);
        }
    }
    kv->len[seq] = n_keep + n_move;
    return 0;
}
