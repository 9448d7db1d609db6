/* threadpool: a fixed set of worker threads that run one job at a time on every thread.
 *
 * bt_pool_run(p, fn, ctx) calls fn(ctx, ith, nth) once on each of the nth threads of the pool
 * (the calling thread is ith 0, workers are 1..nth-1) and returns when every call has returned.
 * Jobs are meant to be short and back to back (several per layer per token): between jobs the
 * workers spin on the next job for a short while (BATON_POOL_SPIN_US, default 100 µs) and then
 * sleep on a futex, so an idle process uses no CPU and a job that follows closely starts in well
 * under a microsecond.
 *
 * Ownership and threads: the pool is created and freed by one owner thread; bt_pool_run is called
 * by one thread at a time (not reentrant: fn must not call bt_pool_run on the same pool).
 * bt_pool_barrier is called from inside a job, by all nth threads of that job.
 * A NULL pool and bt_pool_new(1) run jobs inline on the caller (nth == 1). */
#ifndef BATON_THREADPOOL_H
#define BATON_THREADPOOL_H

struct bt_pool;

typedef void (*bt_pool_fn)(void *ctx, int ith, int nth);

/* n_threads: total number of threads including the caller (>= 1; values above 256 are capped).
 * Returns NULL if a thread or the memory could not be had (logged). */
struct bt_pool *bt_pool_new(int n_threads);
/* Joins the workers. NULL is a no-op. No job may be running. */
void bt_pool_free(struct bt_pool *p);
/* Number of threads including the caller; 1 for NULL. */
int bt_pool_size(const struct bt_pool *p);
/* Run fn(ctx, ith, nth) on every thread; returns when all are done. p may be NULL. */
void bt_pool_run(struct bt_pool *p, bt_pool_fn fn, void *ctx);
/* Inside a job: wait until all nth threads of the job have reached the barrier. Memory written
 * before the barrier by any thread is visible after it to all. p may be NULL (no-op). */
void bt_pool_barrier(struct bt_pool *p);

#endif
