#include "queue.h"

#include "log.h"
#include "request.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

int queue_sync_init(pthread_mutex_t *mu, pthread_cond_t *cv)
{
    pthread_condattr_t ca;
    if (pthread_mutex_init(mu, NULL) != 0) return BT_ERR;
    if (pthread_condattr_init(&ca) != 0) goto fail_mu;
    int rc =
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 && pthread_cond_init(cv, &ca) == 0;
    pthread_condattr_destroy(&ca);
    if (rc) return BT_OK;
fail_mu:
    pthread_mutex_destroy(mu);
    return BT_ERR;
}

int queue_init(struct queue *q, int cap)
{
    q->items = NULL;
    q->cap = cap;
    q->head = q->len = 0;
    q->closed = q->kicked = false;
    if (cap > 0 && !(q->items = calloc((size_t)cap, sizeof(*q->items)))) return BT_ENOMEM;
    if (queue_sync_init(&q->mu, &q->cv) < 0) {
        free(q->items);
        q->items = NULL;
        return BT_ERR;
    }
    return BT_OK;
}

void queue_destroy(struct queue *q)
{
    struct req *r;
    while ((r = queue_pop(q))) req_unref(r);
    free(q->items);
    q->items = NULL;
    pthread_cond_destroy(&q->cv);
    pthread_mutex_destroy(&q->mu);
}

int queue_push(struct queue *q, struct req *r)
{
    int rc = BT_OK;
    pthread_mutex_lock(&q->mu);
    if (q->closed)
        rc = BT_EUNSUP;
    else if (q->len >= q->cap)
        rc = BT_EFULL;
    else {
        req_ref(r);
        q->items[(q->head + q->len) % q->cap] = r;
        q->len++;
        pthread_cond_signal(&q->cv);
    }
    pthread_mutex_unlock(&q->mu);
    return rc;
}

struct req *queue_pop(struct queue *q)
{
    struct req *r = NULL;
    pthread_mutex_lock(&q->mu);
    if (q->len > 0) {
        r = q->items[q->head];
        q->head = (q->head + 1) % q->cap;
        q->len--;
    }
    pthread_mutex_unlock(&q->mu);
    return r;
}

struct req *queue_peek(struct queue *q)
{
    pthread_mutex_lock(&q->mu);
    struct req *r = q->len > 0 ? q->items[q->head] : NULL;
    pthread_mutex_unlock(&q->mu);
    return r;
}

int queue_len(struct queue *q)
{
    pthread_mutex_lock(&q->mu);
    int n = q->len;
    pthread_mutex_unlock(&q->mu);
    return n;
}

void queue_wait(struct queue *q, uint64_t deadline_ns)
{
    pthread_mutex_lock(&q->mu);
    while (q->len == 0 && !q->kicked && !q->closed) {
        if (!deadline_ns) {
            pthread_cond_wait(&q->cv, &q->mu);
            continue;
        }
        if (bt_now_ns() >= deadline_ns) break;
        struct timespec ts = {.tv_sec = (time_t)(deadline_ns / 1000000000u),
                              .tv_nsec = (long)(deadline_ns % 1000000000u)};
        if (pthread_cond_timedwait(&q->cv, &q->mu, &ts) == ETIMEDOUT) break;
    }
    q->kicked = false;
    pthread_mutex_unlock(&q->mu);
}

int queue_take_if(struct queue *q, bool (*pred)(struct req *r, void *arg), void *arg,
                  struct req **out, int cap)
{
    int n = 0, kept = 0;
    pthread_mutex_lock(&q->mu);
    for (int i = 0; i < q->len; i++) {
        struct req *r = q->items[(q->head + i) % q->cap];
        if (n < cap && pred(r, arg))
            out[n++] = r;
        else
            q->items[(q->head + kept++) % q->cap] = r;
    }
    q->len = kept;
    pthread_mutex_unlock(&q->mu);
    return n;
}

void queue_kick(struct queue *q)
{
    pthread_mutex_lock(&q->mu);
    q->kicked = true;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

void queue_close(struct queue *q)
{
    pthread_mutex_lock(&q->mu);
    q->closed = true;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
}
