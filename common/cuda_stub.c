/* cuda_stub: the CUDA backend's interface in a build without CUDA (see cuda.h). Every entry
 * fails with BT_EUNSUP and says how to build the real one. */
#include "cuda.h"

#include "log.h"

#define NOT_BUILT                                                                                  \
    "this baton was built without the CUDA backend (configure with "                               \
    "-Dcuda=enabled on a machine with nvcc and cuBLAS)"

bool cuda_built(void)
{
    return false;
}

int cuda_probe(int device, char *name, size_t namesz, double *peak_bw, char *err, size_t errsz)
{
    if (name && namesz) name[0] = '\0';
    if (peak_bw) *peak_bw = 0;
    return bt_errf(err, errsz, BT_EUNSUP, "no CUDA device: cuda:%d: " NOT_BUILT, device);
}

int cuda_fwd_new(const struct model *m, const struct kv *kv, int device, int max_batch, int max_out,
                 struct cuda_fwd **out, char *err, size_t errsz)
{
    *out = NULL;
    return bt_errf(err, errsz, BT_EUNSUP, "no CUDA device: cuda:%d: " NOT_BUILT, device);
}

void cuda_fwd_free(struct cuda_fwd *c) {}

uint64_t cuda_fwd_bytes(const struct cuda_fwd *c)
{
    return 0;
}

int cuda_fwd_copy(struct cuda_fwd *c, int dst, int src, int n_cells, char *err, size_t errsz)
{
    return bt_errf(err, errsz, BT_EUNSUP, "no CUDA device: " NOT_BUILT);
}

int cuda_fwd_eval(struct cuda_fwd *c, int n, const float *x, const int32_t *pos, const int32_t *seq,
                  const int32_t *table, const float *rope, const int32_t *rows, int n_out,
                  float *out, char *err, size_t errsz)
{
    return bt_errf(err, errsz, BT_EUNSUP, "no CUDA device: " NOT_BUILT);
}
