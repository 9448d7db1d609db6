/* api: the OpenAI-compatible JSON of baton-server, in and out (the only cJSON user for requests
 * and responses). Pure functions: no HTTP, no threads, no model; the HTTP layer calls them.
 *
 * Parsing treats every byte as hostile: the body must be one JSON object of valid UTF-8 within the
 * caller's size cap, every field is type- and range-checked, counts are capped, and an error names
 * the field (api_error.param) with a message fit to return in a 400. Unknown fields are ignored.
 *
 * Building: every function returns a malloc'd NUL-terminated JSON text in *out (the caller frees
 * it) or BT_ENOMEM. Strings written into JSON are made valid UTF-8 (bad bytes and NUL become
 * U+FFFD).
 *
 * Ownership: struct api_gen owns its strings and arrays (api_gen_free). Threads: any; no shared
 * state. */
#ifndef BATON_API_H
#define BATON_API_H

#include "sampler.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define API_MAX_STOP       4
#define API_MAX_N          16 /* choices of one request (`n`) */
#define API_MAX_TOP        20 /* top_logprobs (chat) / logprobs (completions, OpenAI caps at 5) */
#define API_MAX_BIAS       SMP_MAX_BIAS /* logit_bias entries */
#define API_MAX_MESSAGES   4096
#define API_MAX_PROMPT_IDS (1 << 20)
#define API_MAX_TOKENS     (1 << 24) /* max_tokens accepted before the context check */

enum api_kind { API_COMPLETION = 1, API_CHAT = 2 };

struct api_error {
    char param[64];    /* offending field, "" if none */
    char message[512]; /* human readable */
};

struct api_msg {
    char *role;    /* system, user, assistant, tool, developer */
    char *content; /* text (parts concatenated); "" when null */
};

/* A parsed /v1/completions or /v1/chat/completions body. */
struct api_gen {
    int kind;    /* enum api_kind */
    char *model; /* NULL if absent */
    /* completions: exactly one of prompt / prompt_ids */
    char *prompt;
    int32_t *prompt_ids;
    int n_prompt_ids;
    /* chat */
    struct api_msg *msgs;
    int n_msgs;
    int max_tokens; /* -1 when not given */
    int n;          /* choices, 1..API_MAX_N */
    float temperature, top_p, min_p, repeat_penalty, presence_penalty, frequency_penalty;
    int top_k; /* 0: off */
    bool has_seed;
    uint64_t seed;
    struct smp_bias *bias; /* bias in [-100, 100]; -100 bans the token (the sampling policy) */
    int n_bias;
    int n_logprobs; /* -1: no logprobs; else top alternatives per token (0..API_MAX_TOP) */
    bool stream, include_usage;
    bool ignore_eos;   /* llama-server / vLLM extension: end-of-generation tokens are banned */
    bool cache_prompt; /* llama-server's: look the prompt up in the prefix cache (default true) */
    char *stop[API_MAX_STOP];
    int n_stop;
    char *user;
};

/* Parse body[len] of the given kind. n_vocab bounds token ids (prompt ids, logit_bias keys).
 * BT_EINVAL with e filled on any error (g is then empty and safe to free). */
int api_parse_gen(int kind, const char *body, size_t len, int n_vocab, struct api_gen *g,
                  struct api_error *e);
void api_gen_free(struct api_gen *g); /* NULL is fine */

/* POST /tokenize {"content": str, "add_special": bool, "with_pieces": bool}.
 * *content is malloc'd. */
int api_parse_tokenize(const char *body, size_t len, char **content, bool *add_special,
                       bool *with_pieces, struct api_error *e);
/* POST /detokenize {"tokens": [ids]}; *ids malloc'd (may be NULL when *n == 0). */
int api_parse_detokenize(const char *body, size_t len, int n_vocab, int32_t **ids, int *n,
                         struct api_error *e);

/* Text of a token for logprobs and with_pieces: writes up to cap bytes, returns the length (may
 * exceed cap: then only cap were written) or a negative status. */
typedef int (*api_piece_fn)(void *ctx, int32_t id, char *buf, int cap);

/* One generated token with its log-probability and the top alternatives. */
struct api_lp {
    int32_t token;
    float logprob;
    int32_t n_top;
    int32_t top_id[API_MAX_TOP];
    float top_lp[API_MAX_TOP];
    uint32_t offset; /* byte offset of the token's text in the generated text */
};

/* What a response or a stream chunk says. */
struct api_out {
    int kind;        /* enum api_kind */
    const char *id;  /* "cmpl-..." / "chatcmpl-..." */
    int64_t created; /* unix seconds */
    const char *model;
    const char *text; /* generated text of this response / chunk */
    size_t text_len;
    bool logprobs; /* logprobs were asked for: lp[] is rendered, else "logprobs": null */
    const struct api_lp *lp;
    int n_lp;
    const char *finish; /* "stop", "length" or NULL (a chunk that does not end the stream) */
    int index;          /* the choice (the request's `n`: 0..n-1) */
    int prompt_tokens, completion_tokens;
    int cached_tokens; /* usage.prompt_tokens_details.cached_tokens */
    bool usage_null;   /* stream chunks with include_usage: "usage": null */
    api_piece_fn piece;
    void *piece_ctx;
};

/* The whole non-streamed response of one choice; _n: of o[0..n) (their index, text, logprobs
 * and finish; the rest, usage included, from o[0]). */
int api_gen_response(const struct api_out *o, char **out);
int api_gen_response_n(const struct api_out *o, int n, char **out);

enum api_chunk {
    API_CHUNK_ROLE = 1,    /* chat: the first chunk, delta {"role":"assistant","content":""} */
    API_CHUNK_CONTENT = 2, /* text (+ logprobs); with o->finish set it is also the last */
    API_CHUNK_FINISH = 3,  /* empty delta / text with finish_reason */
    API_CHUNK_USAGE = 4,   /* choices: [] and usage */
};
/* One stream chunk's JSON (the caller frames it as SSE). */
int api_stream_chunk(const struct api_out *o, int what, char **out);

/* {"error":{"message","type","param","code"}}; param and code may be NULL (JSON null). */
int api_error_json(const char *message, const char *type, const char *param, const char *code,
                   char **out);

/* GET /v1/models */
int api_models_json(const char *model, int64_t created, int n_ctx, int n_vocab, char **out);

/* /tokenize reply: {"tokens":[...]} or, with pieces, {"tokens":[{"id":..,"piece":".."}...]}. */
int api_tokenize_json(const int32_t *ids, int n, api_piece_fn piece, void *piece_ctx, char **out);
/* /detokenize reply: {"content": text}. */
int api_detokenize_json(const char *text, size_t len, char **out);

/* GET /health */
struct api_rank {
    int rank;
    const char *host;
    int layer_first, layer_last; /* [first, last) */
    const char *state;           /* "loading", "ready", "failed", "offline" */
    double progress;             /* 0..1 */
    double last_heartbeat_ms;    /* age of the last sign of life; -1 unknown */
    const char *node;            /* the host it runs on as --hosts names it; NULL unknown */
};
/* `baton serve` with --hosts: the hosts (hosts.h's fleet line), each list of n names. */
struct api_hosts {
    const char *const *in_service;
    int n_in_service;
    const char *const *evicted;
    int n_evicted;
    const char *const *spare;
    int n_spare;
    bool resplit; /* the layers were re-split over fewer hosts */
};
/* hosts: NULL leaves "hosts" out. */
int api_health_json(const char *status, const struct api_rank *ranks, int n, const char *message,
                    const struct api_hosts *hosts, char **out);

/* Valid UTF-8 (no NUL)? */
bool api_utf8_valid(const char *s, size_t len);

#endif
