/* sampler: choose the next token from a row of logits.
 *
 * The chain, in llama.cpp's default order: logit bias -> repetition / presence / frequency
 * penalties over the last N accepted tokens -> top-k -> top-p -> min-p -> temperature -> draw.
 * temp <= 0 is greedy (the highest logit after bias and penalties; ties: the lowest id).
 * The random generator is the sampler's own (xoshiro256**, seeded by splitmix64): the same seed,
 * logits and accepted tokens give the same choices on every machine.
 *
 * Log-probabilities are those of the model's own distribution, log_softmax(logits) before bias,
 * penalties and truncation (as vLLM reports by default): of the chosen token and of the n most
 * likely tokens.
 *
 * Ownership and threads: a struct smp copies its parameters (bias list included); it belongs to
 * one sequence and one thread. smp_sample never allocates. */
#ifndef BATON_SAMPLER_H
#define BATON_SAMPLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SMP_MAX_LOGPROBS 20
#define SMP_MAX_BIAS     1024  /* logit bias entries of one sampler */
#define SMP_MAX_LAST_N   65536 /* tokens the penalties can look back over */

struct smp_bias {
    int32_t token;
    float bias; /* added to the logit; -INFINITY bans the token */
};

struct smp_params {
    float temp;              /* <= 0: greedy */
    int top_k;               /* <= 0: off */
    float top_p;             /* >= 1: off */
    float min_p;             /* <= 0: off */
    float repeat_penalty;    /* 1: off; > 1 discourages repeats (llama.cpp's rule) */
    float presence_penalty;  /* 0: off; subtracted once from seen tokens */
    float frequency_penalty; /* 0: off; subtracted per occurrence */
    int penalty_last_n;      /* tokens the penalties look back over; 0: off; -1: the context */
    uint64_t seed;
    int n_logprobs;              /* top alternatives to report, 0..SMP_MAX_LOGPROBS */
    const struct smp_bias *bias; /* (n_bias), copied by smp_new */
    int n_bias;
};

/* Defaults: temp 0.8, top_k 40, top_p 0.95, min_p 0.05, repeat 1.0, last_n 64, seed 0, no
 * logprobs, no bias (llama.cpp's defaults). */
void smp_params_default(struct smp_params *p);

/* The one sampling-parameter policy, the same for every engine (one process, and a pipeline's
 * rank 0 before it sends the parameters and its last stage after it received them): out is in
 * with every value made one the sampler accepts, so a request samples alike wherever it runs.
 *   NaN: temp 0 (greedy), top_p 1, min_p 0, repeat_penalty 1, presence and frequency 0 (off);
 *   clamped: temp [0, 100], top_k >= 0, top_p and min_p [0, 1], repeat_penalty [1e-6, 100]
 *   (<= 0: 1), presence and frequency [-100, 100], n_logprobs [0, SMP_MAX_LOGPROBS];
 *   penalty_last_n: < 0 is the whole context, then at most min(n_ctx, SMP_MAX_LAST_N);
 *   bias: at most SMP_MAX_BIAS entries; a NaN bias is dropped, <= -100 bans (-INFINITY), more
 *   than 100 is 100 (token ids are checked by smp_new against the vocabulary).
 * bias_store has room for SMP_MAX_BIAS entries; out->bias points into it. Applying it twice
 * changes nothing. */
void smp_params_policy(const struct smp_params *in, int n_ctx, struct smp_params *out,
                       struct smp_bias *bias_store);

struct smp_logprob {
    int32_t token;
    float logprob;
};

struct smp_result {
    int32_t token;                            /* the choice */
    float logprob;                            /* its log-probability (see above) */
    int n_top;                                /* = params.n_logprobs */
    struct smp_logprob top[SMP_MAX_LOGPROBS]; /* most likely first */
};

struct smp;

/* Check params (ranges, bias token ids < n_vocab) and allocate scratch for n_vocab logits. */
int smp_new(const struct smp_params *p, int n_vocab, struct smp **out, char *err, size_t errsz);
void smp_free(struct smp *s); /* NULL is fine */

/* Forget accepted tokens and restart the generator from the seed. */
void smp_reset(struct smp *s);
/* Record a token for the penalties (prompt tokens too, if they should count). */
void smp_accept(struct smp *s, int32_t token);

/* Choose a token from logits (n_vocab) and accept it. res may be NULL. Returns the token id, or
 * BT_EINVAL if every token is excluded (all banned by the bias). */
int smp_sample(struct smp *s, const float *logits, struct smp_result *res);

/* The generator, exposed for tests: next 64 random bits / a double in [0, 1). */
uint64_t smp_rand_u64(struct smp *s);
double smp_rand_unit(struct smp *s);

#endif
