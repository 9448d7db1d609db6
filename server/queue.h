/* queue: the bounded FIFO of requests from the HTTP threads to the scheduler thread.
 *
 * Producers (HTTP threads) push; the one consumer (the scheduler) pops and waits. A full queue
 * refuses at once (the caller answers 429); a closed one refuses everything (shutdown).
 *
 * Ownership: the queue holds one reference of every request in it (taken by queue_push on
 * success, handed to the caller by queue_pop). Threads: all functions are thread-safe. */
#ifndef BATON_QUEUE_H
#define BATON_QUEUE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct req;

struct queue {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* signalled on push, kick and close */
    struct req **items;
    int cap, head, len;
    bool closed;
    bool kicked;
};

/* cap may be 0: every push is refused. BT_ENOMEM, BT_ERR (pthread initialisation failed). */
int queue_init(struct queue *q, int cap);
void queue_destroy(struct queue *q); /* drops the references still queued */

/* BT_OK, BT_EFULL (full) or BT_EUNSUP (closed). Takes a reference to r on success. */
int queue_push(struct queue *q, struct req *r);
/* Oldest request or NULL if empty; the caller owns the reference. */
struct req *queue_pop(struct queue *q);
/* The oldest request, left in the queue (NULL if empty): borrowed, valid until the caller pops
 * it, so only for the one consumer (the scheduler thread, which alone takes requests out). */
struct req *queue_peek(struct queue *q);
int queue_len(struct queue *q);
/* Wait until the queue is non-empty, queue_kick or close was called, or bt_now_ns() reaches
 * deadline_ns (0: no deadline). */
void queue_wait(struct queue *q, uint64_t deadline_ns);
/* A mutex and a condition variable whose timed waits run on CLOCK_MONOTONIC (bt_now_ns), as the
 * queue's own: BT_ERR, with nothing left initialised, when pthreads refuse. */
int queue_sync_init(pthread_mutex_t *mu, pthread_cond_t *cv);
/* Remove (in order) every request for which pred(r, arg) is true, up to cap, into out[]; the
 * caller owns those references. Returns how many. */
int queue_take_if(struct queue *q, bool (*pred)(struct req *r, void *arg), void *arg,
                  struct req **out, int cap);
void queue_kick(struct queue *q);
void queue_close(struct queue *q);

#endif
