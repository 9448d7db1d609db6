/* seqsmp: the samplers of a set of sequences (slots), for whoever holds the last pipeline stage:
 * engine_local on one process, baton-rankd on the last rank of a pipeline.
 *
 * Each sequence gets its sampler (sampler.h) when it is reset with its parameters, and keeps it
 * until the next reset. The penalties must see every token the model was fed for the sequence
 * (the prompt, then each sampled token fed back) exactly once: a sampled token is accepted when
 * it is sampled, so when it comes back as the first fed token of the next step it is skipped.
 *
 * Ownership and threads: a struct seqsmp owns its samplers; one thread uses it at a time
 * (the scheduler thread, or the rank's command loop). */
#ifndef BATON_SEQSMP_H
#define BATON_SEQSMP_H

#include "sampler.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct seqsmp;

/* n_seq sequences of up to n_ctx positions over a vocabulary of n_vocab tokens; no sampler
 * yet. */
int seqsmp_new(int n_seq, int n_vocab, int n_ctx, struct seqsmp **out, char *err, size_t errsz);
void seqsmp_free(struct seqsmp *s); /* NULL is fine */

int seqsmp_n_seq(const struct seqsmp *s);

/* A new sequence in seq: a fresh sampler with p after the sampling policy (smp_params_policy:
 * every engine samples alike), copied, bias list included. BT_EINVAL for a bad seq or what the
 * policy leaves to smp_new (a logit bias token outside the vocabulary). */
int seqsmp_reset(struct seqsmp *s, int seq, const struct smp_params *p, char *err, size_t errsz);
/* The sequence ended: its next fed token will not be one it sampled. */
void seqsmp_release(struct seqsmp *s, int seq);
/* Does seq have a sampler (was it ever reset)? false for a bad seq. */
bool seqsmp_ready(const struct seqsmp *s, int seq);

/* Tokens fed to the model for seq, in order: recorded for the penalties (see above). */
void seqsmp_feed(struct seqsmp *s, int seq, const int32_t *tokens, int n);
/* Choose seq's next token from logits (n_vocab); res may be NULL. Returns the token, BT_EINVAL
 * for a seq without a sampler or when every token is excluded (all banned by the bias). */
int seqsmp_sample(struct seqsmp *s, int seq, const float *logits, struct smp_result *res);

#endif
