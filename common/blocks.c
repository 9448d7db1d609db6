/* blocks: the KV block table and prefix cache of rank 0 (see blocks.h). */
#include "blocks.h"

#include "log.h"

#include <stdlib.h>
#include <string.h>

enum { B_FREE = 0, B_OWNED = 1, B_CACHED = 2 };

#define HASH_SEED 0x6a09e667f3bcc909ull

struct blk {
    uint64_t hash;          /* cached: the chain hash (a partial block: of its n_tok tokens) */
    int32_t tok[KV_BLOCK];  /* the tokens it holds (owned: as grown; cached: n_tok of them) */
    int32_t n_tok;          /* cached: tokens held (KV_BLOCK: a whole block) */
    int32_t refs;           /* sequences that map it, or pin it (below) */
    int32_t parent;         /* cached: the block before it in the chain, -1 the first */
    int32_t child, sibling; /* cached children: first one; this one's next sibling */
    int32_t n_children;
    int32_t prev, next; /* cached and unreferenced: the LRU list */
    int32_t hnext;      /* the hash map's chain (whole cached blocks) */
    uint8_t state;
    bool in_map;
};

/* A running sequence. Entry j of its table maps ids[j]; canon[j] is the cached block that stands
 * for positions [j KV_BLOCK, (j + 1) KV_BLOCK) in the chain once they are committed: ids[j]
 * itself, or a block cached earlier with the same tokens, which the sequence then pins (a
 * reference, so no parent is evicted while a child it published is in use). */
struct seqst {
    bool running;
    int n_mapped, len, committed, n_done; /* n_done: entries whose commit was handled */
    int n_prompt; /* positions past the prompt are never published (blk_seq_commit) */
    int reserved;
    int32_t *ids, *canon;
    uint64_t *hash;
    bool *pinned;
    bool publish; /* its blocks may still enter the cache (see commit_entry) */
};

struct blk_table {
    int n_blocks, n_seq, n_ctx, max_blocks;
    struct blk *b;
    struct seqst *s;
    int32_t *free_stack;
    int n_free;
    int32_t lru_head, lru_tail;
    int n_lru;
    int32_t *bucket;
    uint64_t bucket_mask;
    int32_t root_child;
    int reserved; /* sum of the sequences' reservations */
    uint64_t lookups, hit_tokens, evictions;
};

/* ---- hashing and the map ---- */

static uint64_t mix(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    return h ^ (h >> 33);
}

static uint64_t chain_hash(uint64_t parent, const int32_t *tok, int n)
{
    uint64_t h = mix(parent ^ 0x9e3779b97f4a7c15ull);
    for (int i = 0; i < n; i++) h = mix(h ^ (uint32_t)tok[i]) + (uint64_t)i;
    return h;
}

static int32_t *bucket_of(struct blk_table *t, uint64_t h)
{
    return &t->bucket[h & t->bucket_mask];
}

static void map_insert(struct blk_table *t, int32_t id)
{
    int32_t *head = bucket_of(t, t->b[id].hash);
    t->b[id].hnext = *head;
    *head = id;
    t->b[id].in_map = true;
}

static void map_remove(struct blk_table *t, int32_t id)
{
    for (int32_t *p = bucket_of(t, t->b[id].hash); *p >= 0; p = &t->b[*p].hnext)
        if (*p == id) {
            *p = t->b[id].hnext;
            t->b[id].in_map = false;
            return;
        }
}

/* The whole cached block under parent with these tokens, or -1. */
static int32_t map_find(struct blk_table *t, uint64_t h, int32_t parent, const int32_t *tok)
{
    for (int32_t id = *bucket_of(t, h); id >= 0; id = t->b[id].hnext) {
        const struct blk *b = &t->b[id];
        if (b->hash == h && b->parent == parent && !memcmp(b->tok, tok, sizeof(b->tok))) return id;
    }
    return -1;
}

/* ---- lists ---- */

static void lru_remove(struct blk_table *t, int32_t id)
{
    struct blk *b = &t->b[id];
    if (b->prev >= 0)
        t->b[b->prev].next = b->next;
    else
        t->lru_head = b->next;
    if (b->next >= 0)
        t->b[b->next].prev = b->prev;
    else
        t->lru_tail = b->prev;
    b->prev = b->next = -1;
    t->n_lru--;
}

static void lru_append(struct blk_table *t, int32_t id)
{
    struct blk *b = &t->b[id];
    b->prev = t->lru_tail;
    b->next = -1;
    if (t->lru_tail >= 0)
        t->b[t->lru_tail].next = id;
    else
        t->lru_head = id;
    t->lru_tail = id;
    t->n_lru++;
}

static int32_t *children_of(struct blk_table *t, int32_t parent)
{
    return parent < 0 ? &t->root_child : &t->b[parent].child;
}

static void child_add(struct blk_table *t, int32_t parent, int32_t id)
{
    int32_t *head = children_of(t, parent);
    t->b[id].parent = parent;
    t->b[id].sibling = *head;
    *head = id;
    if (parent >= 0) t->b[parent].n_children++;
}

static void child_remove(struct blk_table *t, int32_t id)
{
    int32_t parent = t->b[id].parent;
    for (int32_t *p = children_of(t, parent); *p >= 0; p = &t->b[*p].sibling)
        if (*p == id) {
            *p = t->b[id].sibling;
            if (parent >= 0) t->b[parent].n_children--;
            return;
        }
}

static void ref(struct blk_table *t, int32_t id)
{
    if (t->b[id].refs++ == 0 && t->b[id].state == B_CACHED) lru_remove(t, id);
}

static void free_block(struct blk_table *t, int32_t id)
{
    struct blk *b = &t->b[id];
    b->state = B_FREE;
    b->refs = 0;
    b->n_tok = 0;
    t->free_stack[t->n_free++] = id;
}

static void unref(struct blk_table *t, int32_t id)
{
    struct blk *b = &t->b[id];
    if (--b->refs > 0) return;
    if (b->state == B_CACHED)
        lru_append(t, id);
    else
        free_block(t, id);
}

/* A block for new contents: a free one, else the least recently used unreferenced cached leaf
 * (the reservations guarantee there is one). Owned by the caller, one reference. */
static int32_t take_block(struct blk_table *t)
{
    int32_t id = -1;
    if (t->n_free > 0) {
        id = t->free_stack[--t->n_free];
    } else {
        for (int32_t c = t->lru_head; c >= 0; c = t->b[c].next)
            if (t->b[c].n_children == 0) {
                id = c;
                break;
            }
        if (id < 0) return -1;
        lru_remove(t, id);
        if (t->b[id].in_map) map_remove(t, id);
        child_remove(t, id);
        t->evictions++;
    }
    struct blk *b = &t->b[id];
    b->state = B_OWNED;
    b->refs = 1;
    b->n_tok = 0;
    b->parent = b->child = b->sibling = -1;
    b->n_children = 0;
    return id;
}

/* ---- the table ---- */

int blk_new(int n_blocks, int n_seq, int n_ctx, struct blk_table **out, char *err, size_t errsz)
{
    *out = NULL;
    if (n_blocks < 1 || n_blocks > (1 << 24) || n_seq < 1 || n_seq > 65536 || n_ctx < 1 ||
        n_ctx > (1 << 24))
        return bt_errf(err, errsz, BT_EINVAL, "block table: %d blocks, %d sequences of %d",
                       n_blocks, n_seq, n_ctx);
    struct blk_table *t = calloc(1, sizeof(*t));
    if (!t) return bt_errf(err, errsz, BT_ENOMEM, "out of memory");
    t->n_blocks = n_blocks;
    t->n_seq = n_seq;
    t->n_ctx = n_ctx;
    t->max_blocks = (n_ctx + KV_BLOCK - 1) / KV_BLOCK;
    size_t nb = 1;
    while (nb < (size_t)n_blocks * 2) nb <<= 1;
    t->bucket_mask = nb - 1;
    t->b = calloc((size_t)n_blocks, sizeof(*t->b));
    t->s = calloc((size_t)n_seq, sizeof(*t->s));
    t->free_stack = malloc(sizeof(*t->free_stack) * (size_t)n_blocks);
    t->bucket = malloc(sizeof(*t->bucket) * nb);
    bool ok = t->b && t->s && t->free_stack && t->bucket;
    for (int i = 0; ok && i < n_seq; i++) {
        struct seqst *s = &t->s[i];
        s->ids = malloc(sizeof(*s->ids) * (size_t)t->max_blocks);
        s->canon = malloc(sizeof(*s->canon) * (size_t)t->max_blocks);
        s->hash = malloc(sizeof(*s->hash) * (size_t)t->max_blocks);
        s->pinned = calloc((size_t)t->max_blocks, sizeof(*s->pinned));
        ok = s->ids && s->canon && s->hash && s->pinned;
    }
    if (!ok) {
        blk_free(t);
        return bt_errf(err, errsz, BT_ENOMEM, "out of memory for a table of %d blocks", n_blocks);
    }
    for (size_t i = 0; i < nb; i++) t->bucket[i] = -1;
    t->lru_head = t->lru_tail = t->root_child = -1;
    for (int i = n_blocks - 1; i >= 0; i--) {
        t->b[i].prev = t->b[i].next = t->b[i].hnext = -1;
        t->b[i].parent = t->b[i].child = t->b[i].sibling = -1;
        t->free_stack[t->n_free++] = i;
    }
    *out = t;
    return BT_OK;
}

void blk_free(struct blk_table *t)
{
    if (!t) return;
    for (int i = 0; t->s && i < t->n_seq; i++) {
        free(t->s[i].ids);
        free(t->s[i].canon);
        free(t->s[i].hash);
        free(t->s[i].pinned);
    }
    free(t->s);
    free(t->b);
    free(t->free_stack);
    free(t->bucket);
    free(t);
}

int blk_max_ops_begin(const struct blk_table *t)
{
    return t->max_blocks + 3; /* a reset, a map per entry, a copy */
}

int blk_max_ops_grow(int n)
{
    return n / KV_BLOCK + 2;
}

static void op_map(struct kv_op *ops, int *n_ops, int seq, int index, int32_t block)
{
    ops[(*n_ops)++] = (struct kv_op){.kind = KV_OP_MAP, .seq = seq, .index = index, .block = block};
}

/* ---- beginning a sequence ---- */

/* What a lookup found: whole blocks hits[0..n_hits), then maybe k tokens of block part. */
struct found {
    int n_hits;
    int32_t part;
    int k;
};

static int common_prefix(const int32_t *a, const int32_t *b, int n)
{
    int k = 0;
    while (k < n && a[k] == b[k]) k++;
    return k;
}

static void lookup(struct blk_table *t, const int32_t *tok, int m, int32_t *hits, struct found *f)
{
    uint64_t h = HASH_SEED;
    int32_t parent = -1;
    int i = 0;
    f->n_hits = 0;
    f->part = -1;
    f->k = 0;
    for (; i + KV_BLOCK <= m; i += KV_BLOCK) {
        uint64_t hc = chain_hash(h, tok + i, KV_BLOCK);
        int32_t id = map_find(t, hc, parent, tok + i);
        if (id < 0) break;
        hits[f->n_hits++] = id;
        parent = id;
        h = hc;
    }
    /* the rest: the cached child of the last hit sharing the most tokens with it */
    const int limit = m - i < KV_BLOCK ? m - i : KV_BLOCK;
    for (int32_t c = *children_of(t, parent); c >= 0 && limit > 0; c = t->b[c].sibling) {
        int lim = limit < t->b[c].n_tok ? limit : t->b[c].n_tok;
        int k = common_prefix(t->b[c].tok, tok + i, lim);
        if (k > f->k) {
            f->k = k;
            f->part = c;
        }
    }
}

int blk_seq_begin(struct blk_table *t, int seq, const int32_t *tokens, int n, int n_total,
                  bool use_cache, struct kv_op *ops, int *n_ops, int *n_cached)
{
    if (seq < 0 || seq >= t->n_seq || t->s[seq].running || n < 1 || n_total < n ||
        n_total > t->n_ctx)
        return BT_EINVAL;
    const int need = (n_total + KV_BLOCK - 1) / KV_BLOCK;
    if (need > t->n_blocks) return BT_EINVAL;
    struct seqst *s = &t->s[seq];
    struct found f = {0, -1, 0};
    if (use_cache) lookup(t, tokens, n - 1, s->ids, &f);
    /* blocks this takes out of the evictable pool now and later */
    int taken = 0;
    for (int j = 0; j < f.n_hits; j++) taken += t->b[s->ids[j]].refs == 0;
    if (f.part >= 0 && t->b[f.part].refs == 0) taken++; /* pinned while its copy is made */
    const int fresh = need - f.n_hits;
    if (fresh + taken > t->n_free + t->n_lru - t->reserved) return BT_EFULL;

    *n_ops = 0;
    const int n_present = f.n_hits * KV_BLOCK + f.k;
    ops[(*n_ops)++] = (struct kv_op){.kind = KV_OP_RESET, .seq = seq, .n = n_present};
    s->running = true;
    s->publish = use_cache; /* cache_prompt: false neither looks up nor publishes */
    for (int j = 0; j < f.n_hits; j++) {
        int32_t id = s->ids[j];
        ref(t, id);
        s->canon[j] = id;
        s->hash[j] = t->b[id].hash;
        s->pinned[j] = false;
        op_map(ops, n_ops, seq, j, id);
    }
    s->n_mapped = f.n_hits;
    s->reserved = fresh;
    t->reserved += fresh;
    if (f.part >= 0) {
        ref(t, f.part); /* not evicted for its own copy */
        int32_t id = take_block(t);
        s->reserved--;
        t->reserved--;
        memcpy(t->b[id].tok, t->b[f.part].tok, sizeof(int32_t) * (size_t)f.k);
        ops[(*n_ops)++] = (struct kv_op){.kind = KV_OP_COPY, .block = id, .src = f.part, .n = f.k};
        unref(t, f.part);
        s->ids[f.n_hits] = id;
        s->pinned[f.n_hits] = false;
        op_map(ops, n_ops, seq, f.n_hits, id);
        s->n_mapped++;
    }
    s->len = s->committed = n_present;
    s->n_prompt = n;
    s->n_done = f.n_hits;
    if (use_cache) t->lookups++;
    t->hit_tokens += (uint64_t)n_present;
    *n_cached = n_present;
    return BT_OK;
}

/* ---- growing, committing, ending ---- */

int blk_seq_grow(struct blk_table *t, int seq, int pos, const int32_t *tokens, int n,
                 struct kv_op *ops, int *n_ops)
{
    if (seq < 0 || seq >= t->n_seq || !t->s[seq].running) return BT_EINVAL;
    struct seqst *s = &t->s[seq];
    if (pos != s->len || n < 1 || pos + n > t->n_ctx) return BT_EINVAL;
    const int last = (pos + n - 1) / KV_BLOCK;
    if (last + 1 - s->n_mapped > s->reserved) return BT_EINVAL;
    while (s->n_mapped <= last) {
        int32_t id = take_block(t);
        if (id < 0) return BT_ERR; /* the reservation promised one: cannot happen */
        s->reserved--;
        t->reserved--;
        s->ids[s->n_mapped] = id;
        s->pinned[s->n_mapped] = false;
        op_map(ops, n_ops, seq, s->n_mapped, id);
        s->n_mapped++;
    }
    for (int i = 0; i < n; i++) {
        struct blk *b = &t->b[s->ids[(pos + i) / KV_BLOCK]];
        if (b->state == B_OWNED) b->tok[(pos + i) % KV_BLOCK] = tokens[i];
    }
    s->len += n;
    return BT_OK;
}

/* Entry j of s (whole, committed): its chain hash and the cached block standing for it. A block
 * cached earlier under the same tokens stands for it, pinned by s; pinning an unreferenced one
 * takes it out of what can be freed, so when the reservations leave no room for that, s stops
 * publishing (its blocks are freed when it ends). */
static void commit_entry(struct blk_table *t, struct seqst *s, int j)
{
    const int32_t id = s->ids[j], parent = j ? s->canon[j - 1] : -1;
    const uint64_t ph = j ? s->hash[j - 1] : HASH_SEED;
    struct blk *b = &t->b[id];
    if (b->state == B_CACHED) { /* a shared hit */
        s->canon[j] = id;
        s->hash[j] = b->hash;
        return;
    }
    uint64_t h = chain_hash(ph, b->tok, KV_BLOCK);
    int32_t same = map_find(t, h, parent, b->tok);
    s->hash[j] = h;
    if (same >= 0) { /* cached already (another sequence computed the same tokens) */
        if (t->b[same].refs == 0 && t->n_free + t->n_lru - t->reserved < 1) {
            s->publish = false;
            return;
        }
        ref(t, same);
        s->canon[j] = same;
        s->pinned[j] = true;
        return;
    }
    b->state = B_CACHED;
    b->hash = h;
    b->n_tok = KV_BLOCK;
    child_add(t, parent, id);
    map_insert(t, id);
    s->canon[j] = id;
}

void blk_seq_commit(struct blk_table *t, int seq, int len)
{
    if (seq < 0 || seq >= t->n_seq || !t->s[seq].running) return;
    struct seqst *s = &t->s[seq];
    if (len > s->len) len = s->len;
    if (len > s->n_prompt) len = s->n_prompt;
    if (len > s->committed) s->committed = len;
    while (s->publish && s->n_done < s->committed / KV_BLOCK) commit_entry(t, s, s->n_done++);
}

/* The tail of an ending sequence (k < KV_BLOCK committed tokens in entry j) as a partial cached
 * block, unless a cached child of its parent holds those tokens already. */
static void publish_tail(struct blk_table *t, struct seqst *s, int j, int k)
{
    const int32_t id = s->ids[j], parent = j ? s->canon[j - 1] : -1;
    struct blk *b = &t->b[id];
    if (b->state != B_OWNED) return;
    for (int32_t c = *children_of(t, parent); c >= 0; c = t->b[c].sibling)
        if (t->b[c].n_tok >= k && common_prefix(t->b[c].tok, b->tok, k) == k) return;
    b->state = B_CACHED;
    b->n_tok = k;
    b->hash = chain_hash(j ? s->hash[j - 1] : HASH_SEED, b->tok, k);
    child_add(t, parent, id);
}

void blk_seq_end(struct blk_table *t, int seq)
{
    if (seq < 0 || seq >= t->n_seq || !t->s[seq].running) return;
    struct seqst *s = &t->s[seq];
    const int j = s->committed / KV_BLOCK, k = s->committed % KV_BLOCK;
    if (s->publish && k > 0 && j < s->n_mapped && s->n_done == j) publish_tail(t, s, j, k);
    /* deepest first, so the LRU list holds a chain's continuation before its prefix */
    for (int i = s->n_mapped - 1; i >= 0; i--) {
        if (s->pinned[i]) unref(t, s->canon[i]);
        unref(t, s->ids[i]);
    }
    t->reserved -= s->reserved;
    s->reserved = 0;
    s->n_mapped = s->len = s->committed = s->n_done = 0;
    s->running = false;
}

void blk_get_stats(const struct blk_table *t, struct blk_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->n_blocks = t->n_blocks;
    out->free = t->n_free;
    out->cached = t->n_lru;
    out->used = t->n_blocks - t->n_free - t->n_lru;
    out->reserved = t->reserved;
    out->lookups = t->lookups;
    out->hit_tokens = t->hit_tokens;
    out->evictions = t->evictions;
}

int blk_check(const struct blk_table *t, char *err, size_t errsz)
{
    int32_t *refs = calloc((size_t)t->n_blocks, sizeof(*refs));
    int reserved = 0, n_lru = 0, rc = BT_OK;
    if (!refs) return bt_errf(err, errsz, BT_ENOMEM, "out of memory");
    for (int q = 0; q < t->n_seq; q++) {
        const struct seqst *s = &t->s[q];
        if (!s->running) continue;
        reserved += s->reserved;
        for (int i = 0; i < s->n_mapped; i++) {
            refs[s->ids[i]]++;
            if (s->pinned[i]) refs[s->canon[i]]++;
        }
    }
    for (int i = 0; i < t->n_blocks && rc == BT_OK; i++) {
        const struct blk *b = &t->b[i];
        if (b->refs != refs[i])
            rc = bt_errf(err, errsz, BT_ERR, "block %d: %d references, %d counted", i, b->refs,
                         refs[i]);
        else if (b->state == B_FREE && (b->refs || b->in_map))
            rc = bt_errf(err, errsz, BT_ERR, "free block %d is referenced or mapped", i);
        else if (b->state == B_CACHED && b->refs == 0 && b->prev < 0 && t->lru_head != i)
            rc = bt_errf(err, errsz, BT_ERR, "unreferenced cached block %d is not in the LRU", i);
        else if (b->state == B_CACHED && b->parent >= 0 && b->refs > 0 && t->b[b->parent].refs == 0)
            rc = bt_errf(err, errsz, BT_ERR, "block %d is in use, its parent %d is not", i,
                         b->parent);
    }
    for (int32_t c = t->lru_head; c >= 0 && rc == BT_OK; c = t->b[c].next, n_lru++)
        if (t->b[c].state != B_CACHED || t->b[c].refs)
            rc = bt_errf(err, errsz, BT_ERR, "LRU block %d is not an unreferenced cached block", c);
    if (rc == BT_OK && (n_lru != t->n_lru || reserved != t->reserved))
        rc = bt_errf(err, errsz, BT_ERR, "LRU length %d (kept %d), reserved %d (kept %d)", n_lru,
                     t->n_lru, reserved, t->reserved);
    if (rc == BT_OK && t->n_free + t->n_lru - t->reserved < 0)
        rc = bt_errf(err, errsz, BT_ERR, "reservations (%d) exceed what can be freed (%d)",
                     t->reserved, t->n_free + t->n_lru);
    free(refs);
    return rc;
}
