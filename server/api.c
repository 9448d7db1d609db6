#include "api.h"

#include "log.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- UTF-8 ---- */

/* Length of the valid UTF-8 character at s[0..n), or 0 if it is ill-formed (NUL counts as bad). */
static size_t utf8_char(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c == 0) return 0;
    if (c < 0x80) return 1;
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else
        return 0;
    if (n < len) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF) return 0;
    return len;
}

/* Bytes of the maximal ill-formed subpart at s[0..n) (>= 1): a lead byte and the continuation
 * bytes that could still have completed it, as Python's errors="replace" counts them. */
static size_t utf8_bad_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else
        return 1;
    size_t k = 1;
    while (k < len && k < n) {
        if (s[k] < lo || s[k] > hi) break;
        lo = 0x80;
        hi = 0xBF;
        k++;
    }
    return k;
}

bool api_utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        size_t k = utf8_char(p + i, len - i);
        if (!k) return false;
        i += k;
    }
    return true;
}

/* Copy of s[0..n) as a NUL-terminated valid UTF-8 string (bad bytes and NUL -> U+FFFD). */
static char *utf8_clean(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    if (n > SIZE_MAX / 3 - 1) return NULL;
    char *out = malloc(n * 3 + 1), *o = out;
    if (!out) return NULL;
    size_t i = 0;
    while (i < n) {
        size_t k = utf8_char(p + i, n - i);
        if (k) {
            memcpy(o, p + i, k);
            o += k;
            i += k;
        } else {
            memcpy(o, "\xEF\xBF\xBD", 3);
            o += 3;
            i += utf8_bad_len(p + i, n - i);
        }
    }
    *o = 0;
    return out;
}

/* ---- parsing helpers ---- */

static int fail(struct api_error *e, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(struct api_error *e, const char *param, const char *fmt, ...)
{
    va_list ap;
    snprintf(e->param, sizeof(e->param), "%s", param ? param : "");
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof(e->message), fmt, ap);
    va_end(ap);
    return BT_EINVAL;
}

/* Parse body as one JSON object. */
static int parse_object(const char *body, size_t len, cJSON **out, struct api_error *e)
{
    const char *end = NULL;
    *out = NULL;
    if (!api_utf8_valid(body, len))
        return fail(e, NULL, "The request body is not valid UTF-8 (or contains NUL bytes).");
    cJSON *j = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    if (!j)
        return fail(e, NULL,
                    "We could not parse the JSON body of your request: error near byte %zu.",
                    end && end >= body ? (size_t)(end - body) : (size_t)0);
    while (end && end < body + len && (*end == ' ' || *end == '\n' || *end == '\r' || *end == '\t'))
        end++;
    if (end != body + len) {
        cJSON_Delete(j);
        return fail(e, NULL,
                    "We could not parse the JSON body of your request: extra data after "
                    "the JSON value.");
    }
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return fail(e, NULL, "The request body must be a JSON object.");
    }
    *out = j;
    return BT_OK;
}

/* Field or NULL when absent or JSON null. */
static const cJSON *field(const cJSON *o, const char *name)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, name);
    return (f && !cJSON_IsNull(f)) ? f : NULL;
}

static int get_bool(const cJSON *o, const char *name, bool *out, struct api_error *e)
{
    const cJSON *f = field(o, name);
    if (!f) return BT_OK;
    if (!cJSON_IsBool(f)) return fail(e, name, "Invalid type for '%s': expected a boolean.", name);
    *out = cJSON_IsTrue(f);
    return BT_OK;
}

static int get_num(const cJSON *o, const char *name, double lo, double hi, float *out,
                   struct api_error *e)
{
    const cJSON *f = field(o, name);
    if (!f) return BT_OK;
    if (!cJSON_IsNumber(f)) return fail(e, name, "Invalid type for '%s': expected a number.", name);
    double d = f->valuedouble;
    if (!(d >= lo && d <= hi))
        return fail(e, name, "Invalid value for '%s': %g is outside [%g, %g].", name, d, lo, hi);
    *out = (float)d;
    return BT_OK;
}

static int num_to_int(const cJSON *f, const char *name, double lo, double hi, int64_t *out,
                      struct api_error *e)
{
    if (!cJSON_IsNumber(f))
        return fail(e, name, "Invalid type for '%s': expected an integer.", name);
    double d = f->valuedouble;
    if (d != floor(d)) return fail(e, name, "Invalid type for '%s': expected an integer.", name);
    if (!(d >= lo && d <= hi))
        return fail(e, name, "Invalid value for '%s': %.0f is outside [%.0f, %.0f].", name, d, lo,
                    hi);
    *out = (int64_t)d;
    return BT_OK;
}

static int get_int(const cJSON *o, const char *name, double lo, double hi, int64_t *out,
                   bool *present, struct api_error *e)
{
    const cJSON *f = field(o, name);
    if (present) *present = f != NULL;
    if (!f) return BT_OK;
    return num_to_int(f, name, lo, hi, out, e);
}

static int dup_str(const char *s, char **out, struct api_error *e)
{
    *out = strdup(s);
    if (!*out) return fail(e, NULL, "out of memory");
    return BT_OK;
}

static int get_str(const cJSON *o, const char *name, char **out, struct api_error *e)
{
    const cJSON *f = field(o, name);
    if (!f) return BT_OK;
    if (!cJSON_IsString(f)) return fail(e, name, "Invalid type for '%s': expected a string.", name);
    return dup_str(f->valuestring, out, e);
}

/* ---- /v1/completions and /v1/chat/completions ---- */

static int parse_prompt(const cJSON *root, struct api_gen *g, struct api_error *e, int n_vocab)
{
    const cJSON *p = field(root, "prompt");
    if (!p) return fail(e, "prompt", "You must provide a 'prompt'.");
    if (cJSON_IsString(p)) return dup_str(p->valuestring, &g->prompt, e);
    if (!cJSON_IsArray(p))
        return fail(e, "prompt",
                    "Invalid type for 'prompt': expected a string, an array of strings or an "
                    "array of token ids.");
    int n = cJSON_GetArraySize(p);
    if (n == 0) return fail(e, "prompt", "Invalid value for 'prompt': the array is empty.");
    const cJSON *first = cJSON_GetArrayItem(p, 0);
    if (cJSON_IsString(first) || cJSON_IsArray(first)) {
        if (n > 1)
            return fail(e, "prompt",
                        "Only one prompt per request is supported: 'prompt' has %d entries.", n);
        if (cJSON_IsString(first)) return dup_str(first->valuestring, &g->prompt, e);
        p = first; /* [[ids]] */
        n = cJSON_GetArraySize(p);
        if (n == 0) return fail(e, "prompt", "Invalid value for 'prompt': the array is empty.");
    }
    if (n > API_MAX_PROMPT_IDS)
        return fail(e, "prompt", "Invalid value for 'prompt': more than %d token ids.",
                    API_MAX_PROMPT_IDS);
    g->prompt_ids = malloc(sizeof(int32_t) * (size_t)n);
    if (!g->prompt_ids) return fail(e, NULL, "out of memory");
    const cJSON *it;
    int i = 0;
    cJSON_ArrayForEach(it, p)
    {
        int64_t v = 0;
        if (!cJSON_IsNumber(it))
            return fail(e, "prompt",
                        "Invalid type for 'prompt': an array must hold only strings or only "
                        "token ids.");
        int rc = num_to_int(it, "prompt", 0, n_vocab - 1, &v, e);
        if (rc < 0) return rc;
        g->prompt_ids[i++] = (int32_t)v;
    }
    g->n_prompt_ids = i;
    return BT_OK;
}

static int parse_messages(const cJSON *root, struct api_gen *g, struct api_error *e)
{
    static const char *roles[] = {"system", "user", "assistant", "tool", "developer"};
    const cJSON *m = field(root, "messages");
    if (!m) return fail(e, "messages", "You must provide 'messages'.");
    if (!cJSON_IsArray(m))
        return fail(e, "messages", "Invalid type for 'messages': expected an array.");
    int n = cJSON_GetArraySize(m);
    if (n == 0) return fail(e, "messages", "Invalid value for 'messages': the array is empty.");
    if (n > API_MAX_MESSAGES)
        return fail(e, "messages", "Invalid value for 'messages': more than %d messages.",
                    API_MAX_MESSAGES);
    g->msgs = calloc((size_t)n, sizeof(*g->msgs));
    if (!g->msgs) return fail(e, NULL, "out of memory");
    const cJSON *it;
    cJSON_ArrayForEach(it, m)
    {
        int i = g->n_msgs;
        char param[64];
        struct api_msg *msg = &g->msgs[i];
        g->n_msgs++;
        snprintf(param, sizeof(param), "messages[%d]", i);
        if (!cJSON_IsObject(it))
            return fail(e, param, "Invalid type for '%s': expected an object.", param);
        const cJSON *role = field(it, "role");
        snprintf(param, sizeof(param), "messages[%d].role", i);
        if (!role || !cJSON_IsString(role))
            return fail(e, param, "Invalid type for '%s': expected a string.", param);
        bool ok = false;
        for (size_t k = 0; k < sizeof(roles) / sizeof(roles[0]); k++)
            if (!strcmp(role->valuestring, roles[k])) ok = true;
        if (!ok)
            return fail(e, param,
                        "Invalid value for '%s': expected one of system, user, assistant, tool, "
                        "developer.",
                        param);
        if (!strcmp(role->valuestring, "tool"))
            return fail(e, param,
                        "Invalid value for '%s': 'tool' messages are not supported (baton has no "
                        "tool calling).",
                        param);
        /* OpenAI's 'developer' messages are the newer name of 'system' ones */
        const char *as = strcmp(role->valuestring, "developer") ? role->valuestring : "system";
        if (dup_str(as, &msg->role, e) < 0) return BT_EINVAL;
        const cJSON *c = field(it, "content");
        snprintf(param, sizeof(param), "messages[%d].content", i);
        if (!c) {
            if (dup_str("", &msg->content, e) < 0) return BT_EINVAL;
        } else if (cJSON_IsString(c)) {
            if (dup_str(c->valuestring, &msg->content, e) < 0) return BT_EINVAL;
        } else if (cJSON_IsArray(c)) {
            size_t total = 1;
            const cJSON *part;
            cJSON_ArrayForEach(part, c)
            {
                const cJSON *type = cJSON_IsObject(part) ? field(part, "type") : NULL;
                const cJSON *text = cJSON_IsObject(part) ? field(part, "text") : NULL;
                if (!type || !cJSON_IsString(type) || strcmp(type->valuestring, "text") != 0)
                    return fail(e, param,
                                "Invalid value for '%s': only parts of type 'text' are "
                                "supported.",
                                param);
                if (!text || !cJSON_IsString(text))
                    return fail(e, param,
                                "Invalid type for '%s': a text part needs a 'text' "
                                "string.",
                                param);
                total += strlen(text->valuestring);
            }
            msg->content = malloc(total);
            if (!msg->content) return fail(e, NULL, "out of memory");
            msg->content[0] = 0;
            size_t at = 0;
            cJSON_ArrayForEach(part, c)
            {
                const char *t = field(part, "text")->valuestring;
                size_t l = strlen(t);
                memcpy(msg->content + at, t, l + 1);
                at += l;
            }
        } else {
            return fail(e, param, "Invalid type for '%s': expected a string or an array of parts.",
                        param);
        }
    }
    return BT_OK;
}

static int parse_stop(const cJSON *root, struct api_gen *g, struct api_error *e)
{
    const cJSON *s = field(root, "stop");
    if (!s) return BT_OK;
    if (cJSON_IsString(s)) {
        if (!*s->valuestring) return BT_OK;
        g->n_stop = 1;
        return dup_str(s->valuestring, &g->stop[0], e);
    }
    if (!cJSON_IsArray(s))
        return fail(e, "stop",
                    "Invalid type for 'stop': expected a string or an array of strings.");
    int n = cJSON_GetArraySize(s);
    if (n > API_MAX_STOP)
        return fail(e, "stop", "Invalid value for 'stop': at most %d stop sequences, got %d.",
                    API_MAX_STOP, n);
    const cJSON *it;
    cJSON_ArrayForEach(it, s)
    {
        if (!cJSON_IsString(it))
            return fail(e, "stop", "Invalid type for 'stop': expected an array of strings.");
        if (!*it->valuestring) continue;
        if (dup_str(it->valuestring, &g->stop[g->n_stop], e) < 0) return BT_EINVAL;
        g->n_stop++;
    }
    return BT_OK;
}

static int parse_bias(const cJSON *root, struct api_gen *g, int n_vocab, struct api_error *e)
{
    const cJSON *b = field(root, "logit_bias");
    if (!b) return BT_OK;
    if (!cJSON_IsObject(b))
        return fail(e, "logit_bias", "Invalid type for 'logit_bias': expected an object.");
    int n = cJSON_GetArraySize(b);
    if (n > API_MAX_BIAS)
        return fail(e, "logit_bias", "Invalid value for 'logit_bias': more than %d entries.",
                    API_MAX_BIAS);
    if (n == 0) return BT_OK;
    g->bias = calloc((size_t)n, sizeof(*g->bias));
    if (!g->bias) return fail(e, NULL, "out of memory");
    const cJSON *it;
    cJSON_ArrayForEach(it, b)
    {
        char *end;
        const char *k = it->string;
        long id = strtol(k, &end, 10);
        if (!*k || *end || id < 0 || id >= n_vocab)
            return fail(e, "logit_bias",
                        "Invalid key in 'logit_bias': '%.32s' is not a token id in [0, %d).", k,
                        n_vocab);
        if (!cJSON_IsNumber(it))
            return fail(e, "logit_bias", "Invalid type in 'logit_bias': expected numbers.");
        double v = it->valuedouble;
        if (!(v >= -100 && v <= 100))
            return fail(e, "logit_bias",
                        "Invalid value in 'logit_bias': %g is outside [-100, 100].", v);
        g->bias[g->n_bias].token = (int32_t)id;
        g->bias[g->n_bias].bias = (float)v;
        g->n_bias++;
    }
    return BT_OK;
}

static int parse_logprobs(const cJSON *root, struct api_gen *g, struct api_error *e)
{
    int64_t v = 0;
    bool present;
    int rc;
    g->n_logprobs = -1;
    if (g->kind == API_COMPLETION) {
        rc = get_int(root, "logprobs", 0, API_MAX_TOP, &v, &present, e);
        if (rc < 0) return rc;
        if (present) g->n_logprobs = (int)v;
        return BT_OK;
    }
    bool want = false;
    rc = get_bool(root, "logprobs", &want, e);
    if (rc < 0) return rc;
    rc = get_int(root, "top_logprobs", 0, API_MAX_TOP, &v, &present, e);
    if (rc < 0) return rc;
    if (present && !want)
        return fail(e, "top_logprobs",
                    "Invalid value for 'top_logprobs': it requires 'logprobs' to be true.");
    if (want) g->n_logprobs = present ? (int)v : 0;
    return BT_OK;
}

static int parse_unsupported(const cJSON *root, int kind, struct api_error *e)
{
    const cJSON *f;
    if ((f = field(root, "echo")) && !cJSON_IsBool(f))
        return fail(e, "echo", "Invalid type for 'echo': expected a boolean.");
    if (f && cJSON_IsTrue(f)) return fail(e, "echo", "'echo' is not supported.");
    if ((f = field(root, "best_of"))) {
        int64_t v = 0;
        if (num_to_int(f, "best_of", 1, 1, &v, e) < 0)
            return fail(e, "best_of", "Invalid value for 'best_of': only 1 is supported.");
    }
    if ((f = field(root, "suffix")) && !(cJSON_IsString(f) && !*f->valuestring))
        return fail(e, "suffix", "'suffix' is not supported.");
    if (kind == API_CHAT && (f = field(root, "response_format"))) {
        const cJSON *t = cJSON_IsObject(f) ? field(f, "type") : NULL;
        if (!t || !cJSON_IsString(t))
            return fail(e, "response_format",
                        "Invalid type for 'response_format': expected an object with a 'type'.");
        if (strcmp(t->valuestring, "text") != 0)
            return fail(e, "response_format", "'response_format' type '%.32s' is not supported.",
                        t->valuestring);
    }
    return BT_OK;
}

int api_parse_gen(int kind, const char *body, size_t len, int n_vocab, struct api_gen *g,
                  struct api_error *e)
{
    cJSON *root = NULL;
    int64_t v = 0;
    bool present;
    int rc;

    memset(g, 0, sizeof(*g));
    memset(e, 0, sizeof(*e));
    g->kind = kind;
    g->max_tokens = -1;
    g->n = 1;
    g->temperature = 1.0f;
    g->top_p = 1.0f;
    g->repeat_penalty = 1.0f;
    g->n_logprobs = -1;
    g->cache_prompt = true;

    rc = parse_object(body, len, &root, e);
    if (rc < 0) goto fail;
    if ((rc = get_str(root, "model", &g->model, e)) < 0) goto fail;
    if (kind == API_COMPLETION)
        rc = parse_prompt(root, g, e, n_vocab);
    else
        rc = parse_messages(root, g, e);
    if (rc < 0) goto fail;

    rc = get_int(root, "max_tokens", 1, API_MAX_TOKENS, &v, &present, e);
    if (rc < 0) goto fail;
    if (present) g->max_tokens = (int)v;
    rc = get_int(root, "max_completion_tokens", 1, API_MAX_TOKENS, &v, &present, e);
    if (rc < 0) goto fail;
    if (present) g->max_tokens = (int)v;
    if (kind == API_COMPLETION && g->max_tokens < 0) g->max_tokens = 16; /* OpenAI's default */

    if ((rc = get_num(root, "temperature", 0, 2, &g->temperature, e)) < 0) goto fail;
    if ((rc = get_num(root, "top_p", 0, 1, &g->top_p, e)) < 0) goto fail;
    if ((rc = get_num(root, "min_p", 0, 1, &g->min_p, e)) < 0) goto fail;
    if ((rc = get_num(root, "repeat_penalty", 0, 100, &g->repeat_penalty, e)) < 0) goto fail;
    if ((rc = get_num(root, "presence_penalty", -2, 2, &g->presence_penalty, e)) < 0) goto fail;
    if ((rc = get_num(root, "frequency_penalty", -2, 2, &g->frequency_penalty, e)) < 0) goto fail;
    rc = get_int(root, "n", 1, API_MAX_N, &v, &present, e);
    if (rc < 0) goto fail;
    if (present) g->n = (int)v;
    rc = get_int(root, "top_k", 0, 1 << 30, &v, &present, e);
    if (rc < 0) goto fail;
    if (present) g->top_k = (int)v;
    rc = get_int(root, "seed", -9223372036854775808.0, 9223372036854775807.0, &v, &present, e);
    if (rc < 0) goto fail;
    if (present) {
        g->has_seed = true;
        g->seed = (uint64_t)v;
    }
    if ((rc = get_bool(root, "stream", &g->stream, e)) < 0) goto fail;
    if ((rc = get_bool(root, "ignore_eos", &g->ignore_eos, e)) < 0) goto fail;
    if ((rc = get_bool(root, "cache_prompt", &g->cache_prompt, e)) < 0) goto fail;
    const cJSON *so = field(root, "stream_options");
    if (so) {
        if (!cJSON_IsObject(so)) {
            rc =
                fail(e, "stream_options", "Invalid type for 'stream_options': expected an object.");
            goto fail;
        }
        const cJSON *iu = field(so, "include_usage");
        if (iu && !cJSON_IsBool(iu)) {
            rc = fail(e, "stream_options.include_usage",
                      "Invalid type for 'stream_options.include_usage': expected a boolean.");
            goto fail;
        }
        g->include_usage = iu && cJSON_IsTrue(iu);
    }
    if ((rc = parse_stop(root, g, e)) < 0) goto fail;
    if ((rc = parse_bias(root, g, n_vocab, e)) < 0) goto fail;
    if ((rc = parse_logprobs(root, g, e)) < 0) goto fail;
    if ((rc = get_str(root, "user", &g->user, e)) < 0) goto fail;
    if ((rc = parse_unsupported(root, kind, e)) < 0) goto fail;
    cJSON_Delete(root);
    return BT_OK;
fail:
    cJSON_Delete(root);
    api_gen_free(g);
    return rc;
}

void api_gen_free(struct api_gen *g)
{
    if (!g) return;
    free(g->model);
    free(g->prompt);
    free(g->prompt_ids);
    for (int i = 0; i < g->n_msgs; i++) {
        free(g->msgs[i].role);
        free(g->msgs[i].content);
    }
    free(g->msgs);
    free(g->bias);
    for (int i = 0; i < g->n_stop; i++) free(g->stop[i]);
    free(g->user);
    int kind = g->kind;
    memset(g, 0, sizeof(*g));
    g->kind = kind;
}

int api_parse_tokenize(const char *body, size_t len, char **content, bool *add_special,
                       bool *with_pieces, struct api_error *e)
{
    cJSON *root = NULL;
    int rc;
    memset(e, 0, sizeof(*e));
    *content = NULL;
    *add_special = false;
    *with_pieces = false;
    if ((rc = parse_object(body, len, &root, e)) < 0) return rc;
    const cJSON *c = field(root, "content");
    if (!c || !cJSON_IsString(c)) {
        rc = fail(e, "content", "Invalid type for 'content': expected a string.");
        goto fail;
    }
    if ((rc = dup_str(c->valuestring, content, e)) < 0) goto fail;
    if ((rc = get_bool(root, "add_special", add_special, e)) < 0) goto fail;
    if ((rc = get_bool(root, "with_pieces", with_pieces, e)) < 0) goto fail;
    cJSON_Delete(root);
    return BT_OK;
fail:
    cJSON_Delete(root);
    free(*content);
    *content = NULL;
    return rc;
}

int api_parse_detokenize(const char *body, size_t len, int n_vocab, int32_t **ids, int *n,
                         struct api_error *e)
{
    cJSON *root = NULL;
    int rc;
    memset(e, 0, sizeof(*e));
    *ids = NULL;
    *n = 0;
    if ((rc = parse_object(body, len, &root, e)) < 0) return rc;
    const cJSON *t = field(root, "tokens");
    if (!t || !cJSON_IsArray(t)) {
        rc = fail(e, "tokens", "Invalid type for 'tokens': expected an array of token ids.");
        goto fail;
    }
    int cnt = cJSON_GetArraySize(t);
    if (cnt > API_MAX_PROMPT_IDS) {
        rc = fail(e, "tokens", "Invalid value for 'tokens': more than %d ids.", API_MAX_PROMPT_IDS);
        goto fail;
    }
    if (cnt > 0) {
        *ids = malloc(sizeof(int32_t) * (size_t)cnt);
        if (!*ids) {
            rc = fail(e, NULL, "out of memory");
            goto fail;
        }
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, t)
    {
        int64_t v = 0;
        if ((rc = num_to_int(it, "tokens", 0, n_vocab - 1, &v, e)) < 0) goto fail;
        (*ids)[(*n)++] = (int32_t)v;
    }
    cJSON_Delete(root);
    return BT_OK;
fail:
    cJSON_Delete(root);
    free(*ids);
    *ids = NULL;
    *n = 0;
    return rc;
}

/* ---- building ---- */

/* Render the whole tree into *out and free it. */
static int finish_json(cJSON *j, char **out)
{
    *out = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    return *out ? BT_OK : BT_ENOMEM;
}

/* Add a string of n bytes (cleaned to valid UTF-8). Returns false on OOM. */
static bool add_strn(cJSON *o, const char *name, const char *s, size_t n)
{
    char *c = utf8_clean(s ? s : "", s ? n : 0);
    if (!c) return false;
    cJSON *it = cJSON_CreateString(c);
    free(c);
    if (!it) return false;
    if (name) return cJSON_AddItemToObject(o, name, it);
    return cJSON_AddItemToArray(o, it);
}

static bool add_int(cJSON *o, const char *name, double v)
{
    return cJSON_AddNumberToObject(o, name, v) != NULL;
}

static bool add_usage(cJSON *root, const struct api_out *o)
{
    cJSON *u = cJSON_AddObjectToObject(root, "usage"), *d;
    return u && add_int(u, "prompt_tokens", o->prompt_tokens) &&
           add_int(u, "completion_tokens", o->completion_tokens) &&
           add_int(u, "total_tokens", o->prompt_tokens + o->completion_tokens) &&
           (d = cJSON_AddObjectToObject(u, "prompt_tokens_details")) &&
           add_int(d, "cached_tokens", o->cached_tokens);
}

static cJSON *head(const struct api_out *o, const char *object)
{
    cJSON *r = cJSON_CreateObject();
    if (!r) return NULL;
    if (!cJSON_AddStringToObject(r, "id", o->id) || !cJSON_AddStringToObject(r, "object", object) ||
        !add_int(r, "created", (double)o->created) ||
        !cJSON_AddStringToObject(r, "model", o->model ? o->model : "") ||
        !cJSON_AddStringToObject(r, "system_fingerprint", "baton")) {
        cJSON_Delete(r);
        return NULL;
    }
    return r;
}

/* Token text into a malloc'd buffer; *len its length. */
static char *piece_of(const struct api_out *o, int32_t id, int *len)
{
    char small[256];
    int n = o->piece ? o->piece(o->piece_ctx, id, small, (int)sizeof(small)) : 0;
    if (n < 0) n = 0;
    char *buf = malloc((size_t)n + 1);
    if (!buf) return NULL;
    if (n <= (int)sizeof(small))
        memcpy(buf, small, (size_t)n);
    else if (o->piece(o->piece_ctx, id, buf, n) != n)
        n = 0;
    buf[n] = 0;
    *len = n;
    return buf;
}

static bool add_bytes(cJSON *o, const char *s, int n)
{
    cJSON *a = cJSON_AddArrayToObject(o, "bytes");
    if (!a) return false;
    for (int i = 0; i < n; i++) {
        cJSON *b = cJSON_CreateNumber((unsigned char)s[i]);
        if (!b || !cJSON_AddItemToArray(a, b)) {
            cJSON_Delete(b);
            return false;
        }
    }
    return true;
}

/* Chat: {"content": [{"token","logprob","bytes","top_logprobs":[...]}], "refusal": null} */
static cJSON *chat_logprobs(const struct api_out *o)
{
    cJSON *lp = cJSON_CreateObject(), *content = lp ? cJSON_AddArrayToObject(lp, "content") : NULL;
    if (!content || !cJSON_AddNullToObject(lp, "refusal")) goto fail;
    for (int i = 0; i < o->n_lp; i++) {
        const struct api_lp *t = &o->lp[i];
        int len;
        char *p = piece_of(o, t->token, &len);
        cJSON *e = cJSON_CreateObject();
        bool ok = p && e && cJSON_AddItemToArray(content, e);
        if (!ok) cJSON_Delete(e);
        ok = ok && add_strn(e, "token", p, (size_t)len) && add_int(e, "logprob", t->logprob) &&
             add_bytes(e, p, len);
        free(p);
        cJSON *top = ok ? cJSON_AddArrayToObject(e, "top_logprobs") : NULL;
        if (!top) goto fail;
        for (int k = 0; k < t->n_top && k < API_MAX_TOP; k++) {
            cJSON *te = cJSON_CreateObject();
            p = piece_of(o, t->top_id[k], &len);
            ok = p && te && cJSON_AddItemToArray(top, te);
            if (!ok) cJSON_Delete(te);
            ok = ok && add_strn(te, "token", p, (size_t)len) &&
                 add_int(te, "logprob", t->top_lp[k]) && add_bytes(te, p, len);
            free(p);
            if (!ok) goto fail;
        }
    }
    return lp;
fail:
    cJSON_Delete(lp);
    return NULL;
}

/* Completions: {"tokens","token_logprobs","top_logprobs","text_offset"} */
static cJSON *completion_logprobs(const struct api_out *o)
{
    cJSON *lp = cJSON_CreateObject();
    cJSON *toks = lp ? cJSON_AddArrayToObject(lp, "tokens") : NULL;
    cJSON *lps = lp ? cJSON_AddArrayToObject(lp, "token_logprobs") : NULL;
    cJSON *tops = lp ? cJSON_AddArrayToObject(lp, "top_logprobs") : NULL;
    cJSON *offs = lp ? cJSON_AddArrayToObject(lp, "text_offset") : NULL;
    if (!toks || !lps || !tops || !offs) goto fail;
    for (int i = 0; i < o->n_lp; i++) {
        const struct api_lp *t = &o->lp[i];
        int len;
        char *p = piece_of(o, t->token, &len);
        bool ok = p && add_strn(toks, NULL, p, (size_t)len);
        free(p);
        cJSON *num = cJSON_CreateNumber(t->logprob), *off = cJSON_CreateNumber(t->offset);
        cJSON *top = cJSON_CreateObject();
        if (!ok || !num || !off || !top) {
            cJSON_Delete(num);
            cJSON_Delete(off);
            cJSON_Delete(top);
            goto fail;
        }
        cJSON_AddItemToArray(lps, num);
        cJSON_AddItemToArray(offs, off);
        cJSON_AddItemToArray(tops, top);
        for (int k = 0; k < t->n_top && k < API_MAX_TOP; k++) {
            p = piece_of(o, t->top_id[k], &len);
            char *c = p ? utf8_clean(p, (size_t)len) : NULL;
            free(p);
            ok = c && cJSON_AddNumberToObject(top, c, t->top_lp[k]);
            free(c);
            if (!ok) goto fail;
        }
    }
    return lp;
fail:
    cJSON_Delete(lp);
    return NULL;
}

static bool add_logprobs(cJSON *choice, const struct api_out *o)
{
    if (!o->logprobs) return cJSON_AddNullToObject(choice, "logprobs") != NULL;
    cJSON *lp = o->kind == API_CHAT ? chat_logprobs(o) : completion_logprobs(o);
    return lp && cJSON_AddItemToObject(choice, "logprobs", lp);
}

static bool add_finish(cJSON *choice, const char *finish)
{
    if (finish) return cJSON_AddStringToObject(choice, "finish_reason", finish) != NULL;
    return cJSON_AddNullToObject(choice, "finish_reason") != NULL;
}

/* One choice of a whole response into the choices array. */
static bool add_choice(cJSON *choices, const struct api_out *o)
{
    cJSON *c = cJSON_CreateObject();
    bool ok = c && cJSON_AddItemToArray(choices, c);
    if (!ok) cJSON_Delete(c);
    ok = ok && add_int(c, "index", o->index);
    if (ok && o->kind == API_CHAT) {
        cJSON *m = cJSON_AddObjectToObject(c, "message");
        ok = m && cJSON_AddStringToObject(m, "role", "assistant") &&
             add_strn(m, "content", o->text, o->text_len) && cJSON_AddNullToObject(m, "refusal");
    } else if (ok) {
        ok = add_strn(c, "text", o->text, o->text_len);
    }
    return ok && add_logprobs(c, o) && add_finish(c, o->finish ? o->finish : "stop");
}

int api_gen_response_n(const struct api_out *o, int n, char **out)
{
    bool chat = o->kind == API_CHAT;
    cJSON *r = head(o, chat ? "chat.completion" : "text_completion");
    cJSON *choices = r ? cJSON_AddArrayToObject(r, "choices") : NULL;
    bool ok = choices != NULL;
    for (int i = 0; ok && i < n; i++) ok = add_choice(choices, &o[i]);
    ok = ok && add_usage(r, o);
    if (!ok) {
        cJSON_Delete(r);
        r = NULL;
    }
    return finish_json(r, out);
}

int api_gen_response(const struct api_out *o, char **out)
{
    return api_gen_response_n(o, 1, out);
}

int api_stream_chunk(const struct api_out *o, int what, char **out)
{
    bool chat = o->kind == API_CHAT;
    cJSON *r = head(o, chat ? "chat.completion.chunk" : "text_completion");
    cJSON *choices = r ? cJSON_AddArrayToObject(r, "choices") : NULL;
    bool ok = choices != NULL;
    if (ok && what == API_CHUNK_USAGE) {
        ok = add_usage(r, o);
        goto done;
    }
    cJSON *c = ok ? cJSON_CreateObject() : NULL;
    ok = c && cJSON_AddItemToArray(choices, c);
    if (!ok) cJSON_Delete(c);
    ok = ok && add_int(c, "index", o->index);
    const char *finish = what == API_CHUNK_ROLE ? NULL : o->finish;
    if (ok && chat) {
        cJSON *d = cJSON_AddObjectToObject(c, "delta");
        ok = d != NULL;
        if (ok && what == API_CHUNK_ROLE)
            ok = cJSON_AddStringToObject(d, "role", "assistant") &&
                 cJSON_AddStringToObject(d, "content", "");
        else if (ok && what == API_CHUNK_CONTENT)
            ok = add_strn(d, "content", o->text, o->text_len);
    } else if (ok) {
        ok = what == API_CHUNK_CONTENT ? add_strn(c, "text", o->text, o->text_len)
                                       : cJSON_AddStringToObject(c, "text", "") != NULL;
    }
    if (ok && what == API_CHUNK_CONTENT)
        ok = add_logprobs(c, o);
    else if (ok)
        ok = cJSON_AddNullToObject(c, "logprobs") != NULL;
    ok = ok && add_finish(c, finish);
    if (ok && o->usage_null) ok = cJSON_AddNullToObject(r, "usage") != NULL;
done:
    if (!ok) {
        cJSON_Delete(r);
        r = NULL;
    }
    return finish_json(r, out);
}

static bool add_str_or_null(cJSON *o, const char *name, const char *s)
{
    if (s) return add_strn(o, name, s, strlen(s));
    return cJSON_AddNullToObject(o, name) != NULL;
}

int api_error_json(const char *message, const char *type, const char *param, const char *code,
                   char **out)
{
    cJSON *r = cJSON_CreateObject();
    cJSON *e = r ? cJSON_AddObjectToObject(r, "error") : NULL;
    bool ok = e && add_str_or_null(e, "message", message ? message : "") &&
              add_str_or_null(e, "type", type) &&
              add_str_or_null(e, "param", param && *param ? param : NULL) &&
              add_str_or_null(e, "code", code);
    if (!ok) {
        cJSON_Delete(r);
        r = NULL;
    }
    return finish_json(r, out);
}

int api_models_json(const char *model, int64_t created, int n_ctx, int n_vocab, char **out)
{
    cJSON *r = cJSON_CreateObject();
    cJSON *data = r ? cJSON_AddArrayToObject(r, "data") : NULL;
    cJSON *m = cJSON_CreateObject();
    bool ok = data && m && cJSON_AddItemToArray(data, m);
    if (!ok) cJSON_Delete(m);
    ok = ok && cJSON_AddStringToObject(r, "object", "list") &&
         add_strn(m, "id", model, strlen(model)) && cJSON_AddStringToObject(m, "object", "model") &&
         add_int(m, "created", (double)created) && cJSON_AddStringToObject(m, "owned_by", "baton");
    if (ok && n_ctx > 0) {
        cJSON *meta = cJSON_AddObjectToObject(m, "meta");
        ok = meta && add_int(meta, "n_ctx", n_ctx) && add_int(meta, "n_vocab", n_vocab);
    }
    if (!ok) {
        cJSON_Delete(r);
        r = NULL;
    }
    return finish_json(r, out);
}

int api_tokenize_json(const int32_t *ids, int n, api_piece_fn piece, void *piece_ctx, char **out)
{
    cJSON *r = cJSON_CreateObject();
    cJSON *a = r ? cJSON_AddArrayToObject(r, "tokens") : NULL;
    struct api_out po = {.piece = piece, .piece_ctx = piece_ctx};
    bool ok = a != NULL;
    for (int i = 0; ok && i < n; i++) {
        if (!piece) {
            cJSON *v = cJSON_CreateNumber(ids[i]);
            ok = v && cJSON_AddItemToArray(a, v);
            if (!ok) cJSON_Delete(v);
            continue;
        }
        cJSON *t = cJSON_CreateObject();
        ok = t && cJSON_AddItemToArray(a, t);
        if (!ok) {
            cJSON_Delete(t);
            break;
        }
        int len;
        char *p = piece_of(&po, ids[i], &len);
        ok = p && add_int(t, "id", ids[i]) && add_strn(t, "piece", p, (size_t)len);
        free(p);
    }
    if (!ok) {
        cJSON_Delete(r);
        r = NULL;
    }
    return finish_json(r, out);
}

int api_detokenize_json(const char *text, size_t len, char **out)
{
    cJSON *r = cJSON_CreateObject();
    if (r && !add_strn(r, "content", text, len)) {
        cJSON_Delete(r);
        r = NULL;
    }
    return finish_json(r, out);
}

/* "name": [the n strings] */
static bool add_names(cJSON *o, const char *name, const char *const *v, int n)
{
    cJSON *a = cJSON_AddArrayToObject(o, name);
    for (int i = 0; a && i < n; i++) {
        cJSON *x = cJSON_CreateString(v[i]);
        if (!x || !cJSON_AddItemToArray(a, x)) {
            cJSON_Delete(x);
            return false;
        }
    }
    return a != NULL;
}

static bool add_hosts(cJSON *r, const struct api_hosts *h)
{
    cJSON *o = cJSON_AddObjectToObject(r, "hosts");
    return o && add_names(o, "in_service", h->in_service, h->n_in_service) &&
           add_names(o, "evicted", h->evicted, h->n_evicted) &&
           add_names(o, "spares", h->spare, h->n_spare) &&
           cJSON_AddBoolToObject(o, "resplit", h->resplit);
}

int api_health_json(const char *status, const struct api_rank *ranks, int n, const char *message,
                    const struct api_hosts *hosts, char **out)
{
    cJSON *r = cJSON_CreateObject();
    bool ok = r && cJSON_AddStringToObject(r, "status", status);
    if (ok && message) ok = add_strn(r, "message", message, strlen(message));
    cJSON *a = ok ? cJSON_AddArrayToObject(r, "ranks") : NULL;
    ok = a != NULL;
    for (int i = 0; ok && i < n; i++) {
        const struct api_rank *k = &ranks[i];
        cJSON *o = cJSON_CreateObject();
        ok = o && cJSON_AddItemToArray(a, o);
        if (!ok) {
            cJSON_Delete(o);
            break;
        }
        cJSON *layers = cJSON_AddArrayToObject(o, "layers");
        cJSON *l0 = cJSON_CreateNumber(k->layer_first), *l1 = cJSON_CreateNumber(k->layer_last);
        ok = layers && l0 && l1;
        if (!ok) {
            cJSON_Delete(l0);
            cJSON_Delete(l1);
            break;
        }
        cJSON_AddItemToArray(layers, l0);
        cJSON_AddItemToArray(layers, l1);
        ok = add_int(o, "rank", k->rank) && add_strn(o, "host", k->host, strlen(k->host)) &&
             cJSON_AddStringToObject(o, "state", k->state) &&
             add_int(o, "progress", round(k->progress * 1000) / 1000) &&
             add_int(o, "last_heartbeat_ms",
                     k->last_heartbeat_ms < 0 ? -1 : round(k->last_heartbeat_ms));
        if (ok && k->node) ok = add_strn(o, "node", k->node, strlen(k->node));
    }
    if (ok && hosts) ok = add_hosts(r, hosts);
    if (!ok) {
        cJSON_Delete(r);
        r = NULL;
    }
    return finish_json(r, out);
}
