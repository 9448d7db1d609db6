#include "kv.h"

#include "log.h"
#include "model.h"
#include "quant.h"

#include <stdlib.h>
#include <string.h>

int kv_new(const struct model *m, int n_seq, int n_ctx, uint32_t type, struct kv **out, char *err,
           size_t errsz)
{
    struct kv *kv = NULL;
    int rc;

    *out = NULL;
    if (type != BT_F32 && type != BT_F16)
        return bt_errf(err, errsz, BT_EINVAL, "kv cache type %s is not supported (f32, f16 are)",
                       bt_type_name(type));
    if (n_seq < 1 || n_seq > 65536 || n_ctx < 1 || n_ctx > (1 << 24))
        return bt_errf(err, errsz, BT_EINVAL, "bad kv cache size: %d sequences of %d cells", n_seq,
                       n_ctx);
    kv = calloc(1, sizeof(*kv));
    if (!kv) return bt_errf(err, errsz, BT_ENOMEM, "out of memory");
    kv->m = m;
    kv->n_layer = m->l1 - m->l0;
    kv->n_seq = n_seq;
    kv->n_ctx = n_ctx;
    kv->kv_dim = m->hp.n_head_kv * m->hp.head_dim;
    kv->type = type;
    kv->elsize = type == BT_F32 ? 4 : 2;

    size_t n = (size_t)kv->n_layer * (size_t)n_seq * (size_t)n_ctx;
    if (n > SIZE_MAX / 2 / kv->elsize / (size_t)kv->kv_dim) {
        rc = bt_errf(err, errsz, BT_ENOMEM, "kv cache of %d x %d cells is too large", n_seq, n_ctx);
        goto fail;
    }
    n *= (size_t)kv->kv_dim;
    /* calloc of a large block maps zero pages lazily: only cells written become resident. */
    kv->k = calloc(n, kv->elsize);
    kv->v = calloc(n, kv->elsize);
    kv->len = calloc((size_t)n_seq, sizeof(*kv->len));
    kv->tmp = calloc((size_t)kv->kv_dim, sizeof(float));
    if (!kv->k || !kv->v || !kv->len || !kv->tmp) {
        rc = bt_errf(err, errsz, BT_ENOMEM, "out of memory for a kv cache of %zu bytes",
                     2 * n * kv->elsize);
        goto fail;
    }
    *out = kv;
    return 0;
fail:
    kv_free(kv);
    return rc;
}

void kv_free(struct kv *kv)
{
    if (!kv) return;
    free(kv->k);
    free(kv->v);
    free(kv->len);
    free(kv->tmp);
    free(kv);
}

size_t kv_bytes(const struct kv *kv)
{
    return 2 * (size_t)kv->n_layer * kv->n_seq * kv->n_ctx * kv->kv_dim * kv->elsize;
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
        for (int p = n_keep; p < n_keep + n_move; p++) {
            kv_load_row(kv, kv->tmp, kv_k_at(kv, il, seq, p + n_drop));
            model_rope(kv->m, kv->tmp, kv->m->hp.n_head_kv, -n_drop);
            kv_store_row(kv, kv_k_at(kv, il, seq, p), kv->tmp);
        }
        if (n_move > 0)
            memmove(kv_v_at(kv, il, seq, n_keep), kv_v_at(kv, il, seq, n_keep + n_drop),
                    (size_t)n_move * row);
    }
    kv->len[seq] = n_keep + n_move;
    return 0;
}
