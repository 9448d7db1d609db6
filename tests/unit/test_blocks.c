/* blocks: the block table and prefix cache. Scenarios (hits of whole blocks, a hit ending inside
 * a block, eviction order, reservations, a too large request), then a random run against a model
 * of every stage's cache: the operations are applied to tables of token ids (kv_op semantics as
 * kv_apply has them), each computed position writes its token, and every position a sequence
 * reads must hold the token the sequence has there. */
#include "blocks.h"
#include "log.h"
#include "t.h"

#define NS   4
#define NCTX 512
#define MAXB (NCTX / KV_BLOCK)

/* A model of a stage's cache: cells hold token ids. */
struct sim {
    int n_blocks;
    int32_t *cell;           /* (n_blocks, KV_BLOCK) */
    int32_t table[NS][MAXB]; /* -1: none */
    int len[NS];
};

static void sim_init(struct sim *m, int n_blocks)
{
    m->n_blocks = n_blocks;
    m->cell = malloc(sizeof(int32_t) * (size_t)n_blocks * KV_BLOCK);
    for (int i = 0; i < n_blocks * KV_BLOCK; i++) m->cell[i] = -7;
    for (int s = 0; s < NS; s++) {
        for (int j = 0; j < MAXB; j++) m->table[s][j] = -1;
        m->len[s] = 0;
    }
}

static void sim_apply(struct sim *m, const struct kv_op *ops, int n)
{
    for (int i = 0; i < n; i++) {
        const struct kv_op *o = &ops[i];
        CHECK(o->kind >= KV_OP_MAP && o->kind <= KV_OP_RESET);
        if (o->kind == KV_OP_MAP) {
            CHECK(o->block >= 0 && o->block < m->n_blocks && o->index < MAXB);
            m->table[o->seq][o->index] = o->block;
        } else if (o->kind == KV_OP_COPY) {
            CHECK(o->n > 0 && o->n <= KV_BLOCK && o->src != o->block);
            memcpy(m->cell + (size_t)o->block * KV_BLOCK, m->cell + (size_t)o->src * KV_BLOCK,
                   sizeof(int32_t) * (size_t)o->n);
        } else {
            for (int j = (o->n + KV_BLOCK - 1) / KV_BLOCK; j < MAXB; j++) m->table[o->seq][j] = -1;
            m->len[o->seq] = o->n;
        }
    }
}

static int32_t *sim_at(struct sim *m, int s, int p)
{
    int b = m->table[s][p / KV_BLOCK];
    CHECK(b >= 0);
    return m->cell + (size_t)(b < 0 ? 0 : b) * KV_BLOCK + p % KV_BLOCK;
}

/* Compute positions [len, len + n) of s: every earlier position must hold its token. */
static void sim_compute(struct sim *m, int s, const int32_t *tok, int n)
{
    for (int p = 0; p < m->len[s]; p++) {
        int32_t *c = sim_at(m, s, p);
        if (*c != tok[p]) {
            fprintf(stderr, "seq %d position %d holds %d, wants %d\n", s, p, *c, tok[p]);
            CHECK(0);
            return;
        }
    }
    for (int i = 0; i < n; i++) *sim_at(m, s, m->len[s] + i) = tok[m->len[s] + i];
    m->len[s] += n;
}

static struct kv_op ops[4096];

static void ok(struct blk_table *t)
{
    char err[256];
    int rc = blk_check(t, err, sizeof(err));
    if (rc < 0) fprintf(stderr, "blk_check: %s\n", err);
    CHECK_INT(rc, 0);
}

/* begin, then grow/compute/commit the whole prompt in one step */
static int run_prompt(struct blk_table *t, struct sim *m, int s, const int32_t *tok, int n,
                      int n_total, bool use_cache)
{
    int n_ops = 0, n_cached = -1;
    int rc = blk_seq_begin(t, s, tok, n, n_total, use_cache, ops, &n_ops, &n_cached);
    if (rc < 0) return rc;
    CHECK(n_ops <= blk_max_ops_begin(t));
    sim_apply(m, ops, n_ops);
    CHECK_INT(m->len[s], n_cached);
    CHECK(n_cached < n);
    int k = n - n_cached;
    n_ops = 0;
    CHECK_INT(blk_seq_grow(t, s, n_cached, tok + n_cached, k, ops, &n_ops), 0);
    CHECK(n_ops <= blk_max_ops_grow(k));
    sim_apply(m, ops, n_ops);
    sim_compute(m, s, tok, k);
    blk_seq_commit(t, s, n);
    ok(t);
    return n_cached;
}

static void test_scenarios(void)
{
    struct blk_table *t;
    struct sim m;
    char err[256];
    int32_t a[64], b[64];
    for (int i = 0; i < 64; i++) a[i] = b[i] = 100 + i;
    b[36] = 7; /* b shares 36 tokens with a */
    CHECK_INT(blk_new(16, NS, NCTX, &t, err, sizeof(err)), 0);
    sim_init(&m, 16);
    CHECK_INT(run_prompt(t, &m, 0, a, 40, 48, true), 0); /* nothing cached yet */
    blk_seq_end(t, 0);
    ok(t);
    struct blk_stats st;
    blk_get_stats(t, &st);
    CHECK_INT(st.cached, 3); /* two whole blocks and the partial tail (8 tokens) */
    CHECK_INT(st.used, 0);
    /* the same 40 tokens and 5 more: two whole blocks shared, the tail's 8 tokens copied */
    int n_ops = 0, n_cached = 0;
    CHECK_INT(blk_seq_begin(t, 1, a, 45, 50, true, ops, &n_ops, &n_cached), 0);
    CHECK_INT(n_cached, 40);
    int copies = 0;
    for (int i = 0; i < n_ops; i++) copies += ops[i].kind == KV_OP_COPY && ops[i].n == 8;
    CHECK_INT(copies, 1);
    CHECK_INT(ops[0].kind, KV_OP_RESET);
    sim_apply(&m, ops, n_ops);
    n_ops = 0;
    CHECK_INT(blk_seq_grow(t, 1, 40, a + 40, 5, ops, &n_ops), 0);
    sim_apply(&m, ops, n_ops);
    sim_compute(&m, 1, a, 5);
    blk_seq_commit(t, 1, 45);
    blk_seq_end(t, 1);
    ok(t);
    /* b: a hit that ends inside the second block (36 = 2 x 16 + 4 of the third) */
    CHECK_INT(run_prompt(t, &m, 2, b, 50, 64, true), 36);
    blk_seq_end(t, 2);
    /* the last prompt token is always computed: a prompt equal to a cached one hits n - 1 */
    CHECK_INT(run_prompt(t, &m, 3, a, 32, 32, true), 31);
    blk_seq_end(t, 3);
    /* without lookup nothing is taken */
    CHECK_INT(run_prompt(t, &m, 0, a, 40, 40, false), 0);
    blk_seq_end(t, 0);
    blk_get_stats(t, &st);
    CHECK(st.hit_tokens == 40 + 36 + 31);
    CHECK_INT(st.lookups, 4);
    ok(t);
    /* reservations: a request larger than the pool never fits; one larger than what is free now
     * waits (BT_EFULL) and changes nothing */
    CHECK_INT(blk_seq_begin(t, 0, a, 10, 17 * KV_BLOCK, true, ops, &n_ops, &n_cached), BT_EINVAL);
    CHECK_INT(run_prompt(t, &m, 0, a, 20, 10 * KV_BLOCK, true) >= 0, 1);
    CHECK_INT(blk_seq_begin(t, 1, b, 10, 8 * KV_BLOCK, true, ops, &n_ops, &n_cached), BT_EFULL);
    ok(t);
    CHECK_INT(run_prompt(t, &m, 1, b, 10, 6 * KV_BLOCK, false), 0);
    /* every block is now used or reserved: growing past a reservation is refused */
    n_ops = 0;
    CHECK_INT(blk_seq_grow(t, 1, 10, b + 10, 6 * KV_BLOCK, ops, &n_ops), BT_EINVAL);
    blk_seq_end(t, 0);
    blk_seq_end(t, 1);
    ok(t);
    blk_get_stats(t, &st);
    CHECK_INT(st.used + st.reserved, 0);
    blk_free(t);
    free(m.cell);
}

/* Eviction takes the least recently used unreferenced leaf; blocks in use are never taken. */
static void test_eviction(void)
{
    struct blk_table *t;
    struct sim m;
    char err[256];
    int32_t p[4][48];
    for (int s = 0; s < 4; s++)
        for (int i = 0; i < 48; i++) p[s][i] = 1000 * (s + 1) + i;
    CHECK_INT(blk_new(6, NS, NCTX, &t, err, sizeof(err)), 0);
    sim_init(&m, 6);
    run_prompt(t, &m, 0, p[0], 33, 33, true); /* 3 blocks: 2 whole + 1 token */
    blk_seq_end(t, 0);
    run_prompt(t, &m, 1, p[1], 32, 32, true); /* 2 blocks */
    /* p[1] holds 2 blocks; 4 cached blocks of p[0] are left... 3 of them: 1 free block */
    run_prompt(t, &m, 2, p[2], 17, 17, true); /* needs 2: the free one and p[0]'s tail (a leaf) */
    ok(t);
    blk_seq_end(t, 2);
    blk_seq_end(t, 1);
    /* p[0]'s whole blocks are still there (only its tail was evicted) */
    CHECK_INT(run_prompt(t, &m, 3, p[0], 33, 33, true), 32);
    blk_seq_end(t, 3);
    ok(t);
    blk_free(t);
    free(m.cell);
}

/* Random sequences with shared prefixes over a small pool, every step checked. */
static void test_random(void)
{
    struct blk_table *t;
    struct sim m;
    char err[256];
    const int NB = 14;
    int32_t tok[NS][NCTX];
    int len[NS] = {0}, total[NS] = {0};
    bool run[NS] = {false};
    uint64_t x = 12345;
    CHECK_INT(blk_new(NB, NS, NCTX, &t, err, sizeof(err)), 0);
    sim_init(&m, NB);
    int hits = 0, waits = 0, fails0 = t_failures;
    for (int step = 0; step < 4000; step++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        int s = (int)((x >> 33) % NS), r = (int)((x >> 40) % 100);
        if (!run[s]) {
            /* a prompt from one of three families, with a random tail */
            int fam = (int)((x >> 20) % 3), n = 1 + (int)((x >> 12) % 60);
            for (int i = 0; i < NCTX; i++)
                tok[s][i] = i < n / 2 + 8 ? fam * 1000 + i : (int)((x >> (i % 30)) % 50);
            total[s] = n + (int)((x >> 5) % 40);
            if (total[s] > NCTX) total[s] = NCTX;
            int n_ops = 0, n_cached = 0;
            int rc = blk_seq_begin(t, s, tok[s], n, total[s], r < 90, ops, &n_ops, &n_cached);
            if (rc == BT_EFULL) {
                waits++;
                continue;
            }
            CHECK_INT(rc, 0);
            sim_apply(&m, ops, n_ops);
            hits += n_cached > 0;
            len[s] = n_cached;
            run[s] = true;
            /* the prompt's rest in one step */
            n_ops = 0;
            CHECK_INT(blk_seq_grow(t, s, len[s], tok[s] + len[s], n - len[s], ops, &n_ops), 0);
            sim_apply(&m, ops, n_ops);
            sim_compute(&m, s, tok[s], n - len[s]);
            len[s] = n;
            blk_seq_commit(t, s, len[s]);
        } else if (r < 15 || len[s] >= total[s]) {
            if (r < 5 && len[s] < total[s]) { /* a failed step: grown, never committed */
                int n_ops = 0;
                blk_seq_grow(t, s, len[s], tok[s] + len[s], 1, ops, &n_ops);
                sim_apply(&m, ops, n_ops);
            }
            blk_seq_end(t, s);
            run[s] = false;
        } else { /* a decode step */
            int n_ops = 0;
            CHECK_INT(blk_seq_grow(t, s, len[s], tok[s] + len[s], 1, ops, &n_ops), 0);
            sim_apply(&m, ops, n_ops);
            sim_compute(&m, s, tok[s], 1);
            len[s]++;
            blk_seq_commit(t, s, len[s]);
        }
        ok(t);
        if (t_failures > fails0) break;
    }
    struct blk_stats st;
    blk_get_stats(t, &st);
    fprintf(stderr, "random: %d hits, %d waits, %llu evictions\n", hits, waits,
            (unsigned long long)st.evictions);
    CHECK(hits > 100 && waits > 0 && st.evictions > 100);
    blk_free(t);
    free(m.cell);
}

int main(void)
{
    test_scenarios();
    test_eviction();
    test_random();
    return t_done();
}
