/* threadpool: see threadpool.h.
 *
 * Synchronisation: three futex words, each on its own cache line.
 *  - gen: bumped by the caller to start a job; workers spin on it, then sleep on it. n_sleep
 *    counts sleeping workers so that the caller only pays for FUTEX_WAKE when one sleeps.
 *  - pending: workers still running the job; the last one to finish wakes the caller if the
 *    caller went to sleep (main_sleep).
 *  - bar_gen/bar_count: a counting barrier for use inside a job.
 * Every "publish then check for sleepers" / "announce sleep then re-check" pair uses sequentially
 * consistent atomics, so a wake-up cannot be lost; futex_wait re-checks the word in the kernel. */
#include "threadpool.h"

#include "log.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define POOL_MAX_THREADS     256
#define POOL_SPIN_US_DEFAULT 100
/* after spinning this long, yield the CPU between checks (helps when threads outnumber cores) */
#define POOL_YIELD_NS 20000

struct pool_worker {
    struct bt_pool *pool;
    int ith;
    pthread_t tid;
};

struct bt_pool {
    int n;
    int spin_ns;
    struct pool_worker *workers; /* [n - 1] */
    bt_pool_fn fn;               /* written by the caller before gen is bumped */
    void *ctx;
    alignas(64) _Atomic uint32_t gen;
    _Atomic int n_sleep;
    _Atomic int stop;
    alignas(64) _Atomic uint32_t pending;
    _Atomic int main_sleep;
    alignas(64) _Atomic uint32_t bar_gen;
    _Atomic uint32_t bar_count;
    _Atomic int bar_sleep;
};

static void futex_wait(_Atomic uint32_t *word, uint32_t val)
{
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake_all(_Atomic uint32_t *word)
{
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

/* Wait until *word != old: spin for spin_ns, then sleep. Returns the new value. */
static uint32_t wait_change(_Atomic uint32_t *word, uint32_t old, _Atomic int *sleepers,
                            int spin_ns)
{
    uint32_t v = atomic_load_explicit(word, memory_order_acquire);
    if (v != old) return v;
    uint64_t t0 = bt_now_ns();
    for (unsigned i = 1;; i++) {
        cpu_relax();
        v = atomic_load_explicit(word, memory_order_acquire);
        if (v != old) return v;
        if ((i & 63) == 0) {
            uint64_t dt = bt_now_ns() - t0;
            if (dt > (uint64_t)spin_ns) break;
            if (dt > POOL_YIELD_NS) sched_yield(); /* oversubscribed: let others run */
        }
    }
    atomic_fetch_add(sleepers, 1);
    while ((v = atomic_load(word)) == old) futex_wait(word, old);
    atomic_fetch_sub(sleepers, 1);
    return v;
}

static void *worker_main(void *arg)
{
    struct pool_worker *w = arg;
    struct bt_pool *p = w->pool;
    uint32_t seen = 0;
    char name[16];
    snprintf(name, sizeof(name), "baton-pool-%d", w->ith);
    pthread_setname_np(pthread_self(), name);
    for (;;) {
        seen = wait_change(&p->gen, seen, &p->n_sleep, p->spin_ns);
        if (atomic_load_explicit(&p->stop, memory_order_acquire)) break;
        p->fn(p->ctx, w->ith, p->n);
        if (atomic_fetch_sub(&p->pending, 1) == 1 && atomic_load(&p->main_sleep))
            futex_wake_all(&p->pending);
    }
    return NULL;
}

struct bt_pool *bt_pool_new(int n_threads)
{
    if (n_threads < 1) n_threads = 1;
    if (n_threads > POOL_MAX_THREADS) n_threads = POOL_MAX_THREADS;
    struct bt_pool *p = aligned_alloc(64, (sizeof(*p) + 63) & ~(size_t)63);
    if (!p) {
        bt_error("threadpool: out of memory");
        return NULL;
    }
    memset(p, 0, sizeof(*p));
    p->n = n_threads;
    p->spin_ns = POOL_SPIN_US_DEFAULT * 1000;
    const char *e = getenv("BATON_POOL_SPIN_US");
    if (e && *e) {
        long us = strtol(e, NULL, 10);
        if (us >= 0 && us <= 1000000) p->spin_ns = (int)us * 1000;
    }
    if (n_threads == 1) return p;
    p->workers = calloc((size_t)n_threads - 1, sizeof(*p->workers));
    if (!p->workers) {
        bt_error("threadpool: out of memory");
        free(p);
        return NULL;
    }
    for (int i = 1; i < n_threads; i++) {
        struct pool_worker *w = &p->workers[i - 1];
        w->pool = p;
        w->ith = i;
        int rc = pthread_create(&w->tid, NULL, worker_main, w);
        if (rc != 0) {
            bt_error("threadpool: cannot start thread %d of %d: %s", i, n_threads, strerror(rc));
            p->n = i; /* join the ones already started */
            bt_pool_free(p);
            return NULL;
        }
    }
    return p;
}

void bt_pool_free(struct bt_pool *p)
{
    if (!p) return;
    if (p->n > 1) {
        atomic_store(&p->stop, 1);
        atomic_fetch_add(&p->gen, 1);
        futex_wake_all(&p->gen);
        for (int i = 1; i < p->n; i++) pthread_join(p->workers[i - 1].tid, NULL);
    }
    free(p->workers);
    free(p);
}

int bt_pool_size(const struct bt_pool *p)
{
    return p ? p->n : 1;
}

void bt_pool_run(struct bt_pool *p, bt_pool_fn fn, void *ctx)
{
    if (!p || p->n == 1) {
        fn(ctx, 0, 1);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store_explicit(&p->pending, (uint32_t)(p->n - 1), memory_order_relaxed);
    atomic_fetch_add(&p->gen, 1); /* seq_cst: publishes fn, ctx and pending */
    if (atomic_load(&p->n_sleep) > 0) futex_wake_all(&p->gen);
    fn(ctx, 0, p->n);
    /* wait for the workers: spin, then sleep */
    if (atomic_load_explicit(&p->pending, memory_order_acquire) == 0) return;
    uint64_t t0 = bt_now_ns();
    for (unsigned i = 1;; i++) {
        cpu_relax();
        if (atomic_load_explicit(&p->pending, memory_order_acquire) == 0) return;
        if ((i & 63) == 0) {
            uint64_t dt = bt_now_ns() - t0;
            if (dt > (uint64_t)p->spin_ns) break;
            if (dt > POOL_YIELD_NS) sched_yield();
        }
    }
    atomic_store(&p->main_sleep, 1);
    uint32_t v;
    while ((v = atomic_load(&p->pending)) != 0) futex_wait(&p->pending, v);
    atomic_store(&p->main_sleep, 0);
}

void bt_pool_barrier(struct bt_pool *p)
{
    if (!p || p->n == 1) return;
    uint32_t g = atomic_load(&p->bar_gen);
    if (atomic_fetch_add(&p->bar_count, 1) == (uint32_t)p->n - 1) {
        atomic_store(&p->bar_count, 0);
        atomic_fetch_add(&p->bar_gen, 1);
        if (atomic_load(&p->bar_sleep) > 0) futex_wake_all(&p->bar_gen);
        return;
    }
    wait_change(&p->bar_gen, g, &p->bar_sleep, p->spin_ns);
}
