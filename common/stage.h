/* stage: which layers each pipeline stage holds, and loading one stage into memory.
 *
 * A model of n_layer blocks is split into n contiguous stages, stage k on rank k. Stage 0 also
 * holds the token embedding (a row lookup per token: cheap, not counted), the last stage holds
 * the final norm and the output head (read whole for every token: counted with its layers). The
 * default split is even by bytes; a spec such as "8,7,7" gives the layer counts instead (any
 * uneven split, every stage at least one layer, summing to n_layer). One stage holds everything.
 *
 * Loading maps the stage's tensors (model_load: a rank maps only its own) and then reads every
 * page of its layers and head once, so its share of the weights is resident before the first
 * request and the load can report progress.
 *
 * Threads: no state; the functions may run on any thread. */
#ifndef BATON_STAGE_H
#define BATON_STAGE_H

#include <stddef.h>
#include <stdint.h>

struct gguf;
struct model;

#define STAGE_MAX 256 /* stages (ranks) in one pipeline */

struct stage_range {
    int l0, l1; /* layers [l0, l1) */
};

/* Bytes of the output head: the final norm and output.weight (token_embd.weight when tied). */
uint64_t stage_head_bytes(const struct gguf *g);

/* Split g's layers into n stages: by spec ("8,7,7"; NULL or "" for even by bytes). Errors name
 * the problem: BT_EINVAL for a bad spec or more stages than layers. out has n entries. */
int stage_split(const struct gguf *g, int n, const char *spec, struct stage_range *out, char *err,
                size_t errsz);

/* The even split itself, on plain numbers (for tests): layer_bytes (n_layer), head on the last
 * stage. Boundaries go where the running byte count is nearest k/n of the total (ties: the
 * earlier stage lighter, since rank 0 also runs the scheduler), then move one layer at a time
 * while that lowers the heavier of the two neighbours. n <= n_layer. */
int stage_split_bytes(const uint64_t *layer_bytes, int n_layer, uint64_t head_bytes, int n,
                      struct stage_range *out);

/* Parse "8,7,7": n counts summing to n_layer, each >= 1. */
int stage_parse_spec(const char *spec, int n_layer, int n, struct stage_range *out, char *err,
                     size_t errsz);

/* Called as a load goes (fraction 0..1); a non-zero return cancels the load (BT_ERR, err says
 * "cancelled"). */
typedef int (*stage_progress_fn)(void *arg, float fraction);

/* Map the stage [l0, l1) of g (model_load) and read its pages in, reporting progress (fn may be
 * NULL). *out is owned by the caller (model_free); g must outlive it. */
int stage_load(const struct gguf *g, int l0, int l1, stage_progress_fn fn, void *arg,
               struct model **out, char *err, size_t errsz);

#endif
