/* threadpool: every index runs exactly once per job, back-to-back jobs, pool of 1, NULL pool,
 * barrier ordering, idle sleep and wake-up. */
#include "log.h"
#include "threadpool.h"
#include "t.h"

#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#define MAXT 8

struct count_ctx {
    _Atomic int hits[MAXT];
    _Atomic int bad_nth;
    int expect_nth;
};

static void count_fn(void *ctx, int ith, int nth)
{
    struct count_ctx *c = ctx;
    if (nth != c->expect_nth || ith < 0 || ith >= nth || ith >= MAXT) {
        atomic_fetch_add(&c->bad_nth, 1);
        return;
    }
    atomic_fetch_add(&c->hits[ith], 1);
}

/* each job adds its sequence number to a per-thread slot: checks that a worker never runs a job
 * twice, never skips one, and that the caller only returns after all are done */
struct seq_ctx {
    long sum[MAXT];
    int job;
    _Atomic int done_in_job;
};

static void seq_fn(void *ctx, int ith, int nth)
{
    struct seq_ctx *s = ctx;
    s->sum[ith] += s->job;
    atomic_fetch_add(&s->done_in_job, 1);
    (void)nth;
}

/* barrier: phase 1 writes slot ith, phase 2 reads every slot; repeated several times */
struct bar_ctx {
    int slot[MAXT];
    _Atomic int errors;
    int rounds;
};

static struct bt_pool *bar_pool;

static void bar_fn(void *ctx, int ith, int nth)
{
    struct bar_ctx *b = ctx;
    for (int r = 0; r < b->rounds; r++) {
        b->slot[ith] = r * 100 + ith;
        bt_pool_barrier(bar_pool);
        for (int i = 0; i < nth; i++)
            if (b->slot[i] != r * 100 + i) atomic_fetch_add(&b->errors, 1);
        bt_pool_barrier(bar_pool);
    }
}

static void test_counts(int n)
{
    struct bt_pool *p = bt_pool_new(n);
    CHECK(p != NULL);
    if (!p) return;
    CHECK_INT(bt_pool_size(p), n);
    struct count_ctx c = {.expect_nth = n};
    const int jobs = 1000;
    for (int j = 0; j < jobs; j++) bt_pool_run(p, count_fn, &c);
    CHECK_INT(atomic_load(&c.bad_nth), 0);
    for (int i = 0; i < n; i++) CHECK_INT(atomic_load(&c.hits[i]), jobs);

    /* back to back, checking after every job that all threads were done */
    struct seq_ctx s = {0};
    long expect = 0;
    int incomplete = 0;
    for (int j = 1; j <= 2000; j++) {
        s.job = j;
        atomic_store(&s.done_in_job, 0);
        bt_pool_run(p, seq_fn, &s);
        if (atomic_load(&s.done_in_job) != n) incomplete++;
        expect += j;
    }
    CHECK_INT(incomplete, 0);
    for (int i = 0; i < n; i++) CHECK_INT(s.sum[i], expect);

    /* after a pause long enough for the workers to go to sleep, jobs still run */
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
    struct count_ctx c2 = {.expect_nth = n};
    for (int j = 0; j < 3; j++) {
        bt_pool_run(p, count_fn, &c2);
        nanosleep(&ts, NULL);
    }
    for (int i = 0; i < n; i++) CHECK_INT(atomic_load(&c2.hits[i]), 3);

    /* barrier */
    bar_pool = p;
    struct bar_ctx b = {.rounds = 200};
    for (int j = 0; j < 20; j++) bt_pool_run(p, bar_fn, &b);
    CHECK_INT(atomic_load(&b.errors), 0);
    bt_pool_free(p);
}

int main(void)
{
    /* NULL pool and pool of 1 run inline */
    struct count_ctx c = {.expect_nth = 1};
    bt_pool_run(NULL, count_fn, &c);
    CHECK_INT(atomic_load(&c.hits[0]), 1);
    CHECK_INT(bt_pool_size(NULL), 1);
    bt_pool_barrier(NULL);
    bt_pool_free(NULL);

    test_counts(1);
    test_counts(2);
    test_counts(3);
    test_counts(5);

    /* idle workers sleep: a pool left alone uses (almost) no CPU */
    struct bt_pool *p = bt_pool_new(3);
    CHECK(p != NULL);
    if (p) {
        bt_pool_run(p, count_fn, &(struct count_ctx){.expect_nth = 3});
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL); /* let the spin phase end */
        struct timespec c0, c1, w0, w1;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
        clock_gettime(CLOCK_MONOTONIC, &w0);
        ts.tv_nsec = 200 * 1000 * 1000;
        nanosleep(&ts, NULL);
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
        clock_gettime(CLOCK_MONOTONIC, &w1);
        double cpu = (double)(c1.tv_sec - c0.tv_sec) + (double)(c1.tv_nsec - c0.tv_nsec) * 1e-9;
        double wall = (double)(w1.tv_sec - w0.tv_sec) + (double)(w1.tv_nsec - w0.tv_nsec) * 1e-9;
        fprintf(stderr, "idle: %.4f s cpu over %.3f s wall\n", cpu, wall);
        CHECK(cpu < 0.05 * wall);
        bt_pool_free(p);
    }
    return t_done();
}
