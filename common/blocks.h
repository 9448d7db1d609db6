/* blocks: rank 0's table of the KV cache blocks of every stage, and the prefix cache it makes.
 *
 * The cache of every stage is a pool of n_blocks blocks of KV_BLOCK positions (kv.h); every rank
 * holds the same block ids for its own layers. This table alone decides which block holds what:
 * each decision comes out as block operations (struct kv_op) that the caller applies to its own
 * stage and, in a pipeline, sends with the sequence's next FORWARD, so every rank does the same
 * (DESIGN §10). No other rank decides anything about the cache.
 *
 * What it keeps per block: its state (free; owned: written by one sequence; cached: published,
 * never written again), the tokens it holds and a hash of them and of every token before them
 * (the chain: a block's hash is that of its parent's hash and its own tokens), its references
 * (sequences that map it), its parent and cached children, when it was last used.
 *
 *   blk_seq_begin  a new sequence: the longest cached prefix of its prompt is mapped (whole
 *                  blocks shared read-only; a block matching only in part is copied into a
 *                  fresh one, which the sequence then owns) and blocks for the rest of its
 *                  positions are reserved, so it never runs out later; not enough blocks now:
 *                  BT_EFULL (the caller keeps the request waiting)
 *   blk_seq_grow   positions about to be computed get blocks (from the reservation)
 *   blk_seq_commit positions computed on every stage: whole blocks enter the cache
 *   blk_seq_end    the sequence is done: its blocks are unreferenced, the cached ones stay
 *                  (the tail that was being filled is published as a partial block)
 *
 * Eviction: a new block is a free one, else the least recently used cached block that no
 * sequence maps and that has no cached children (a prefix is never evicted before its
 * continuations). A block a running sequence maps is never evicted; a shared block is never
 * written. After a restart the table is empty: correctness never depends on a hit.
 *
 * Ownership and threads: a struct blk_table is used by one thread (the scheduler thread, through
 * its engine). */
#ifndef BATON_BLOCKS_H
#define BATON_BLOCKS_H

#include "kv.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct blk_table;

struct blk_stats {
    int n_blocks;        /* in the pool */
    int used;            /* mapped by running sequences */
    int cached;          /* cached and mapped by none (evictable) */
    int free;            /* holding nothing */
    int reserved;        /* promised to running sequences, not yet taken */
    uint64_t lookups;    /* sequences begun with a lookup */
    uint64_t hit_tokens; /* prompt positions taken from the cache */
    uint64_t evictions;  /* cached blocks given to new contents */
};

/* A table of n_blocks blocks for n_seq sequences of up to n_ctx positions. */
int blk_new(int n_blocks, int n_seq, int n_ctx, struct blk_table **out, char *err, size_t errsz);
void blk_free(struct blk_table *t); /* NULL is fine */

/* The most operations one blk_seq_begin or one blk_seq_grow of n positions produces. */
int blk_max_ops_begin(const struct blk_table *t);
int blk_max_ops_grow(int n);

/* Begin sequence seq (not running) for a prompt tokens[0..n) that may grow to n_total positions
 * (n <= n_total <= n_ctx). With lookup, the longest cached prefix of tokens[0..n-1) is mapped
 * (the last prompt token is always computed: its logits are needed) and the sequence's blocks
 * enter the cache as they are committed; without, neither. The operations (a reset
 * of the sequence, its maps and a copy) are written to ops (blk_max_ops_begin room), their count
 * to *n_ops, the positions already present to *n_cached. BT_EFULL: not enough blocks can be
 * freed now (nothing changed); BT_EINVAL: n_total needs more blocks than the pool has. */
int blk_seq_begin(struct blk_table *t, int seq, const int32_t *tokens, int n, int n_total,
                  bool lookup, struct kv_op *ops, int *n_ops, int *n_cached);
/* Positions [pos, pos + n) of seq, holding tokens, are about to be computed: blocks for them are
 * mapped (MAP operations appended at ops + *n_ops, blk_max_ops_grow(n) room). BT_EINVAL: not
 * the sequence's next positions, or past its reservation. */
int blk_seq_grow(struct blk_table *t, int seq, int pos, const int32_t *tokens, int n,
                 struct kv_op *ops, int *n_ops);
/* Positions [0, len) of seq are computed on every stage: its whole blocks among them enter the
 * cache (a block already cached under the same tokens stays the one that is found). Only the
 * prompt's positions are ever published: generated tokens were computed by the decode kernels,
 * whose results differ in the last bits from the prompt kernels' (forward.h: fwd_batch.prompt),
 * so a later prompt holding them computes them itself and the cache never changes an answer. */
void blk_seq_commit(struct blk_table *t, int seq, int len);
/* The sequence is done (finished, cancelled or failed): its references are dropped, its
 * committed part stays cached, the rest and its reservation are free again. */
void blk_seq_end(struct blk_table *t, int seq);

void blk_get_stats(const struct blk_table *t, struct blk_stats *out);
/* Check every invariant (reference counts, states, lists, reservations); BT_ERR with text. For
 * tests. */
int blk_check(const struct blk_table *t, char *err, size_t errsz);

#endif
