/* test_api: request parsing and validation (every bad field is a 400 naming it) and the shapes of
 * the OpenAI responses, stream chunks and errors. */
#include "api.h"
#include "log.h"
#include "t.h"

#include <cjson/cJSON.h>

#define NV 512 /* vocabulary size for the tests */

static int parse(int kind, const char *body, struct api_gen *g, struct api_error *e)
{
    return api_parse_gen(kind, body, strlen(body), NV, g, e);
}

/* body must be rejected with e.param == param (and the message naming it). */
static void bad(int kind, const char *body, const char *param)
{
    struct api_gen g;
    struct api_error e;
    int rc = parse(kind, body, &g, &e);
    CHECK_INT(rc, BT_EINVAL);
    CHECK_STR(e.param, param);
    if (*param && !strstr(e.message, param)) {
        fprintf(stderr, "message for %s does not name it: %s\n", body, e.message);
        CHECK(0);
    }
    CHECK(e.message[0] != 0);
    api_gen_free(&g);
}

static int piece(void *ctx, int32_t id, char *buf, int cap)
{
    (void)ctx;
    char tmp[32];
    int n;
    if (id == 7)
        n = snprintf(tmp, sizeof(tmp), "\xE2\x82"); /* half a character */
    else
        n = snprintf(tmp, sizeof(tmp), "<%d>", id);
    if (n <= cap) memcpy(buf, tmp, (size_t)n);
    return n;
}

static cJSON *parse_json(const char *s)
{
    cJSON *j = cJSON_Parse(s);
    CHECK(j != NULL);
    return j;
}

static const cJSON *get(const cJSON *o, const char *path)
{
    /* "a.b.0.c" */
    char buf[128], *save, *tok;
    snprintf(buf, sizeof(buf), "%s", path);
    for (tok = strtok_r(buf, ".", &save); tok && o; tok = strtok_r(NULL, ".", &save)) {
        if (*tok >= '0' && *tok <= '9')
            o = cJSON_GetArrayItem(o, atoi(tok));
        else
            o = cJSON_GetObjectItemCaseSensitive(o, tok);
    }
    return o;
}

static const char *gets_(const cJSON *o, const char *path)
{
    const cJSON *j = get(o, path);
    return cJSON_IsString(j) ? j->valuestring : NULL;
}

static double getn(const cJSON *o, const char *path)
{
    const cJSON *j = get(o, path);
    return cJSON_IsNumber(j) ? j->valuedouble : -12345;
}

static void test_parse_ok(void)
{
    struct api_gen g;
    struct api_error e;
    const char *body =
        "{\"model\":\"m\",\"prompt\":\"Once upon\",\"max_tokens\":20,\"temperature\":0.5,"
        "\"top_p\":0.9,\"top_k\":40,\"min_p\":0.1,\"repeat_penalty\":1.1,\"presence_penalty\":"
        "0.5,\"frequency_penalty\":-0.5,\"seed\":42,\"stop\":[\"\\n\",\"END\"],\"stream\":true,"
        "\"stream_options\":{\"include_usage\":true},\"logit_bias\":{\"5\":-100,\"17\":2.5},"
        "\"logprobs\":3,\"user\":\"u1\",\"n\":1,\"echo\":false,\"best_of\":1,\"unknown\":"
        "{\"x\":[1,2]}}";
    CHECK_INT(parse(API_COMPLETION, body, &g, &e), 0);
    CHECK_STR(g.model, "m");
    CHECK_STR(g.prompt, "Once upon");
    CHECK_INT(g.max_tokens, 20);
    CHECK_NEAR(g.temperature, 0.5, 1e-6);
    CHECK_NEAR(g.top_p, 0.9, 1e-6);
    CHECK_INT(g.top_k, 40);
    CHECK_NEAR(g.min_p, 0.1, 1e-6);
    CHECK_NEAR(g.repeat_penalty, 1.1, 1e-6);
    CHECK_NEAR(g.presence_penalty, 0.5, 1e-6);
    CHECK_NEAR(g.frequency_penalty, -0.5, 1e-6);
    CHECK(g.has_seed);
    CHECK_INT(g.seed, 42);
    CHECK_INT(g.n_stop, 2);
    CHECK_STR(g.stop[0], "\n");
    CHECK_STR(g.stop[1], "END");
    CHECK(g.stream && g.include_usage);
    CHECK_INT(g.n_bias, 2);
    CHECK_INT(g.bias[0].token, 5);
    CHECK_NEAR(g.bias[0].bias, -100, 0);
    CHECK_INT(g.bias[1].token, 17);
    CHECK_INT(g.n_logprobs, 3);
    CHECK_STR(g.user, "u1");
    api_gen_free(&g);
    CHECK(g.prompt == NULL);

    /* defaults; JSON nulls count as absent */
    CHECK_INT(parse(API_COMPLETION,
                    "{\"prompt\":\"x\",\"stop\":null,\"max_tokens\":null,"
                    "\"logprobs\":null,\"seed\":null}",
                    &g, &e),
              0);
    CHECK_INT(g.max_tokens, 16); /* OpenAI's default for completions */
    CHECK_NEAR(g.temperature, 1.0, 0);
    CHECK_NEAR(g.top_p, 1.0, 0);
    CHECK_INT(g.top_k, 0);
    CHECK(!g.has_seed);
    CHECK_INT(g.n_stop, 0);
    CHECK_INT(g.n_logprobs, -1);
    CHECK(!g.stream);
    api_gen_free(&g);

    /* prompt forms */
    CHECK_INT(parse(API_COMPLETION, "{\"prompt\":[\"only one\"]}", &g, &e), 0);
    CHECK_STR(g.prompt, "only one");
    api_gen_free(&g);
    CHECK_INT(parse(API_COMPLETION, "{\"prompt\":[1,2,511]}", &g, &e), 0);
    CHECK(g.prompt == NULL);
    CHECK_INT(g.n_prompt_ids, 3);
    CHECK_INT(g.prompt_ids[2], 511);
    api_gen_free(&g);
    CHECK_INT(parse(API_COMPLETION, "{\"prompt\":[[3,4]]}", &g, &e), 0);
    CHECK_INT(g.n_prompt_ids, 2);
    CHECK_INT(g.prompt_ids[0], 3);
    api_gen_free(&g);
    /* stop as a string; max_completion_tokens wins */
    CHECK_INT(parse(API_COMPLETION,
                    "{\"prompt\":\"x\",\"stop\":\"##\",\"max_tokens\":5,"
                    "\"max_completion_tokens\":7}",
                    &g, &e),
              0);
    CHECK_INT(g.n_stop, 1);
    CHECK_STR(g.stop[0], "##");
    CHECK_INT(g.max_tokens, 7);
    api_gen_free(&g);

    /* chat */
    CHECK_INT(parse(API_CHAT,
                    "{\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
                    "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Hi \"},"
                    "{\"type\":\"text\",\"text\":\"there\"}]},{\"role\":\"assistant\","
                    "\"content\":null},{\"role\":\"user\",\"content\":\"\\u00e9\"}],"
                    "\"logprobs\":true,\"top_logprobs\":2,\"max_completion_tokens\":9}",
                    &g, &e),
              0);
    CHECK_INT(g.n_msgs, 4);
    CHECK_STR(g.msgs[0].role, "system");
    CHECK_STR(g.msgs[1].content, "Hi there");
    CHECK_STR(g.msgs[2].content, "");
    CHECK_STR(g.msgs[3].content, "\xC3\xA9");
    CHECK_INT(g.n_logprobs, 2);
    CHECK_INT(g.max_tokens, 9);
    api_gen_free(&g);
    CHECK_INT(parse(API_CHAT,
                    "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                    "\"logprobs\":true}",
                    &g, &e),
              0);
    CHECK_INT(g.n_logprobs, 0);
    CHECK_INT(g.max_tokens, -1); /* chat: until the context is full */
    api_gen_free(&g);
    CHECK_INT(parse(API_CHAT,
                    "{\"messages\":[{\"role\":\"developer\",\"content\":\"d\"},"
                    "{\"role\":\"user\",\"content\":\"x\"}]}",
                    &g, &e),
              0);
    CHECK_STR(g.msgs[0].role, "system"); /* developer is OpenAI's newer name for system */
    api_gen_free(&g);
}

static void test_parse_bad(void)
{
    /* body */
    bad(API_COMPLETION, "", "");
    bad(API_COMPLETION, "{\"prompt\":", "");
    bad(API_COMPLETION, "[1,2]", "");
    bad(API_COMPLETION, "{\"prompt\":\"x\"} trailing", "");
    bad(API_COMPLETION, "{\"prompt\":\"\xff\xfe\"}", "");
    bad(API_COMPLETION, "{\"prompt\":\"\\ud800\"}", ""); /* lone surrogate */
    /* prompt */
    bad(API_COMPLETION, "{}", "prompt");
    bad(API_COMPLETION, "{\"prompt\":5}", "prompt");
    bad(API_COMPLETION, "{\"prompt\":[]}", "prompt");
    bad(API_COMPLETION, "{\"prompt\":[\"a\",\"b\"]}", "prompt");
    bad(API_COMPLETION, "{\"prompt\":[1,\"b\"]}", "prompt");
    bad(API_COMPLETION, "{\"prompt\":[1,512]}", "prompt");
    bad(API_COMPLETION, "{\"prompt\":[1.5]}", "prompt");
    bad(API_COMPLETION, "{\"prompt\":[-1]}", "prompt");
    /* types and ranges, one field at a time */
    bad(API_COMPLETION, "{\"prompt\":\"x\",\"model\":3}", "model");
    bad(API_COMPLETION, "{\"prompt\":\"x\",\"max_tokens\":\"10\"}", "max_tokens");
    bad(API_COMPLETION, "{\"prompt\":\"x\",\"max_tokens\":0}", "max_tokens");
    bad(API_COMPLETION, "{\"prompt\":\"x\",\"max_tokens\":2.5}", "max_tokens");
    bad(API_COMPLETION, "{\"prompt\":\"x\",\"max_completion_tokens\":-3}", "max_completion_tokens");
    bad(API_COMPLETION, "{\"prompt\":\"x\",\"temperature\":\"hot\"}", "temperature");
    bad(API_COMPLETION, "{\"prompt\":\"x\",\"temperature\":2.5}", "temperature");
    bad(API_COMPLETION, "{\"prompt\":\"x\",\"top_p\":1.5}", "top_p");
    bad(API_COMPLETION, "{\"prompt\":\"x\",\"top_k\":-1}", "top_k");
    bad(API_COMPLETION, "{\"prompt\":\"x\",\"min_p\":true}", "min_p");
    bad(API_COMPLETION, "{\"prompt\":\"x\",\"repeat_penalty\":[]}", "repeat_penalty");
    bad(API_COMPLETION, "{\"prompt\":\"x\",\"presence_penalty\":3}", "presence_penalty");
    bad(API_COMPLETION, "{\"prompt\":\"x\",\"frequency_penalty\":\"a\"}", "frequency_penalty");
    bad(API_COMPLETION, "{\"prompt\":\"x\",\"seed\":\"1\"}", "seed");
    bad(API_COMPLETION, "{\"prompt\":\"x\",\"seed\":1.5}", "seed");
    bad(API_COMPLETION, "{\"prompt\":\"x\",\"n\":17}", "n"); /* API_MAX_N is 16 */
    bad(API_COMPLETION, "{\"prompt\":\"x\",\"n\":0}", "n");
    bad(API_COMPLETION, "{\"prompt\":\"x\",\"n\":\"1\"}", "n");
    bad(API_COMPLETION, "{\"prompt\":\"x\",\"stream\":1}", "stream");
    bad(API_COMPLETION, "{\"prompt\":\"x\",\"stream_options\":true}", "stream_options");
    bad(API_COMPLETION, "{\"prompt\":\"x\",\"stream_options\":{\"include_usage\":1}}",
        "stream_options.include_usage");
    bad(API_COMPLETION, "{\"prompt\":\"x\",\"stop\":5}", "stop");
    bad(API_COMPLETION, "{\"prompt\":\"x\",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", "stop");
    bad(API_COMPLETION, "{\"prompt\":\"x\",\"stop\":[\"a\",1]}", "stop");
    bad(API_COMPLETION, "{\"prompt\":\"x\",\"logit_bias\":[1]}", "logit_bias");
    bad(API_COMPLETION, "{\"prompt\":\"x\",\"logit_bias\":{\"abc\":1}}", "logit_bias");
    bad(API_COMPLETION, "{\"prompt\":\"x\",\"logit_bias\":{\"512\":1}}", "logit_bias");
    bad(API_COMPLETION, "{\"prompt\":\"x\",\"logit_bias\":{\"5\":101}}", "logit_bias");
    bad(API_COMPLETION, "{\"prompt\":\"x\",\"logit_bias\":{\"5\":\"1\"}}", "logit_bias");
    bad(API_COMPLETION, "{\"prompt\":\"x\",\"logprobs\":true}", "logprobs");
    bad(API_COMPLETION, "{\"prompt\":\"x\",\"logprobs\":21}", "logprobs");
    bad(API_COMPLETION, "{\"prompt\":\"x\",\"user\":1}", "user");
    bad(API_COMPLETION, "{\"prompt\":\"x\",\"echo\":true}", "echo");
    bad(API_COMPLETION, "{\"prompt\":\"x\",\"best_of\":3}", "best_of");
    bad(API_COMPLETION, "{\"prompt\":\"x\",\"suffix\":\"y\"}", "suffix");
    /* chat */
    bad(API_CHAT, "{}", "messages");
    bad(API_CHAT, "{\"messages\":{}}", "messages");
    bad(API_CHAT, "{\"messages\":[]}", "messages");
    bad(API_CHAT, "{\"messages\":[5]}", "messages[0]");
    bad(API_CHAT, "{\"messages\":[{\"content\":\"x\"}]}", "messages[0].role");
    bad(API_CHAT,
        "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"wizard\","
        "\"content\":\"x\"}]}",
        "messages[1].role");
    bad(API_CHAT,
        "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"tool\","
        "\"content\":\"x\"}]}",
        "messages[1].role");
    bad(API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":7}]}", "messages[0].content");
    bad(API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}",
        "messages[0].content");
    bad(API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":3}",
        "logprobs");
    bad(API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_logprobs\":3}",
        "top_logprobs");
    bad(API_CHAT,
        "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":true,"
        "\"top_logprobs\":21}",
        "top_logprobs");
    bad(API_CHAT,
        "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":"
        "{\"type\":\"json_object\"}}",
        "response_format");
}

static void test_responses(void)
{
    struct api_lp lp[2] = {{.token = 3,
                            .logprob = -0.5f,
                            .n_top = 2,
                            .top_id = {3, 4},
                            .top_lp = {-0.5f, -1.5f},
                            .offset = 0},
                           {.token = 7, .logprob = -0.25f, .n_top = 0, .offset = 3}};
    struct api_out o = {.kind = API_COMPLETION,
                        .id = "cmpl-abc",
                        .created = 1700000000,
                        .model = "stories",
                        .text = "<3>\xE2\x82",
                        .text_len = 5,
                        .logprobs = true,
                        .lp = lp,
                        .n_lp = 2,
                        .finish = "length",
                        .prompt_tokens = 4,
                        .completion_tokens = 2,
                        .piece = piece};
    char *s = NULL;
    CHECK_INT(api_gen_response(&o, &s), 0);
    cJSON *j = parse_json(s);
    CHECK_STR(gets_(j, "id"), "cmpl-abc");
    CHECK_STR(gets_(j, "object"), "text_completion");
    CHECK_NEAR(getn(j, "created"), 1700000000, 0);
    CHECK_STR(gets_(j, "model"), "stories");
    CHECK_STR(gets_(j, "choices.0.text"), "<3>\xEF\xBF\xBD"); /* invalid UTF-8 -> U+FFFD */
    CHECK_NEAR(getn(j, "choices.0.index"), 0, 0);
    CHECK_STR(gets_(j, "choices.0.finish_reason"), "length");
    CHECK_STR(gets_(j, "choices.0.logprobs.tokens.0"), "<3>");
    CHECK_NEAR(getn(j, "choices.0.logprobs.token_logprobs.1"), -0.25, 1e-6);
    CHECK_NEAR(getn(j, "choices.0.logprobs.top_logprobs.0.<4>"), -1.5, 1e-6);
    CHECK_NEAR(getn(j, "choices.0.logprobs.text_offset.1"), 3, 0);
    CHECK_INT(cJSON_GetArraySize(get(j, "choices.0.logprobs.top_logprobs.1")), 0);
    CHECK_NEAR(getn(j, "usage.prompt_tokens"), 4, 0);
    CHECK_NEAR(getn(j, "usage.completion_tokens"), 2, 0);
    CHECK_NEAR(getn(j, "usage.total_tokens"), 6, 0);
    cJSON_Delete(j);
    free(s);

    /* chat, with logprobs */
    o.kind = API_CHAT;
    o.id = "chatcmpl-x";
    o.finish = "stop";
    CHECK_INT(api_gen_response(&o, &s), 0);
    j = parse_json(s);
    CHECK_STR(gets_(j, "object"), "chat.completion");
    CHECK_STR(gets_(j, "choices.0.message.role"), "assistant");
    CHECK_STR(gets_(j, "choices.0.message.content"), "<3>\xEF\xBF\xBD");
    CHECK_STR(gets_(j, "choices.0.finish_reason"), "stop");
    CHECK_STR(gets_(j, "choices.0.logprobs.content.0.token"), "<3>");
    CHECK_NEAR(getn(j, "choices.0.logprobs.content.0.logprob"), -0.5, 1e-6);
    CHECK_NEAR(getn(j, "choices.0.logprobs.content.0.bytes.0"), '<', 0);
    CHECK_STR(gets_(j, "choices.0.logprobs.content.0.top_logprobs.1.token"), "<4>");
    CHECK_NEAR(getn(j, "choices.0.logprobs.content.1.bytes.1"), 0x82, 0); /* raw bytes */
    CHECK_INT(cJSON_GetArraySize(get(j, "choices.0.logprobs.content.1.bytes")), 2);
    cJSON_Delete(j);
    free(s);

    /* no logprobs: null */
    o.logprobs = false;
    CHECK_INT(api_gen_response(&o, &s), 0);
    j = parse_json(s);
    CHECK(cJSON_IsNull(get(j, "choices.0.logprobs")));
    cJSON_Delete(j);
    free(s);

    /* stream chunks (chat) */
    o.usage_null = true;
    o.text = "hi";
    o.text_len = 2;
    o.finish = NULL;
    CHECK_INT(api_stream_chunk(&o, API_CHUNK_ROLE, &s), 0);
    j = parse_json(s);
    CHECK_STR(gets_(j, "object"), "chat.completion.chunk");
    CHECK_STR(gets_(j, "choices.0.delta.role"), "assistant");
    CHECK(cJSON_IsNull(get(j, "choices.0.finish_reason")));
    CHECK(cJSON_IsNull(get(j, "usage")));
    cJSON_Delete(j);
    free(s);
    CHECK_INT(api_stream_chunk(&o, API_CHUNK_CONTENT, &s), 0);
    j = parse_json(s);
    CHECK_STR(gets_(j, "choices.0.delta.content"), "hi");
    CHECK(get(j, "choices.0.delta.role") == NULL);
    cJSON_Delete(j);
    free(s);
    o.finish = "stop";
    CHECK_INT(api_stream_chunk(&o, API_CHUNK_FINISH, &s), 0);
    j = parse_json(s);
    CHECK_INT(cJSON_GetArraySize(get(j, "choices.0.delta")), 0);
    CHECK_STR(gets_(j, "choices.0.finish_reason"), "stop");
    cJSON_Delete(j);
    free(s);
    CHECK_INT(api_stream_chunk(&o, API_CHUNK_USAGE, &s), 0);
    j = parse_json(s);
    CHECK_INT(cJSON_GetArraySize(get(j, "choices")), 0);
    CHECK_NEAR(getn(j, "usage.total_tokens"), 6, 0);
    cJSON_Delete(j);
    free(s);
    /* completions chunk */
    o.kind = API_COMPLETION;
    o.finish = NULL;
    o.usage_null = false;
    CHECK_INT(api_stream_chunk(&o, API_CHUNK_CONTENT, &s), 0);
    j = parse_json(s);
    CHECK_STR(gets_(j, "object"), "text_completion");
    CHECK_STR(gets_(j, "choices.0.text"), "hi");
    CHECK(get(j, "usage") == NULL);
    cJSON_Delete(j);
    free(s);

    /* errors */
    CHECK_INT(api_error_json("bad \"x\"", "invalid_request_error", "temperature", NULL, &s), 0);
    j = parse_json(s);
    CHECK_STR(gets_(j, "error.message"), "bad \"x\"");
    CHECK_STR(gets_(j, "error.type"), "invalid_request_error");
    CHECK_STR(gets_(j, "error.param"), "temperature");
    CHECK(cJSON_IsNull(get(j, "error.code")));
    cJSON_Delete(j);
    free(s);

    /* models, health, tokenize, detokenize */
    CHECK_INT(api_models_json("stories", 1, 256, 512, &s), 0);
    j = parse_json(s);
    CHECK_STR(gets_(j, "object"), "list");
    CHECK_STR(gets_(j, "data.0.id"), "stories");
    CHECK_STR(gets_(j, "data.0.object"), "model");
    cJSON_Delete(j);
    free(s);
    struct api_rank rk = {.rank = 0,
                          .host = "h",
                          .layer_first = 0,
                          .layer_last = 5,
                          .state = "ready",
                          .progress = 1,
                          .last_heartbeat_ms = 12.4};
    CHECK_INT(api_health_json("ok", &rk, 1, NULL, NULL, &s), 0);
    j = parse_json(s);
    CHECK_STR(gets_(j, "status"), "ok");
    CHECK_NEAR(getn(j, "ranks.0.layers.1"), 5, 0);
    CHECK_STR(gets_(j, "ranks.0.state"), "ready");
    CHECK_NEAR(getn(j, "ranks.0.last_heartbeat_ms"), 12, 0);
    CHECK(!cJSON_GetObjectItem(j, "hosts")); /* no fleet: no hosts, no node */
    CHECK(!cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "ranks"), 0), "node"));
    cJSON_Delete(j);
    free(s);
    /* `baton serve` with --hosts: the hosts, and each rank's host as --hosts names it */
    const char *in[] = {"h1", "h3"}, *ev[] = {"h2"};
    struct api_hosts hosts = {.in_service = in,
                              .n_in_service = 2,
                              .evicted = ev,
                              .n_evicted = 1,
                              .spare = NULL,
                              .n_spare = 0,
                              .resplit = true};
    rk.node = "h3";
    CHECK_INT(api_health_json("degraded", &rk, 1, "1 host evicted", &hosts, &s), 0);
    j = parse_json(s);
    CHECK_STR(gets_(j, "status"), "degraded");
    CHECK_STR(gets_(j, "message"), "1 host evicted");
    CHECK_STR(gets_(j, "ranks.0.node"), "h3");
    CHECK_STR(gets_(j, "hosts.in_service.0"), "h1");
    CHECK_STR(gets_(j, "hosts.in_service.1"), "h3");
    CHECK_STR(gets_(j, "hosts.evicted.0"), "h2");
    cJSON *sp = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "hosts"), "spares");
    CHECK(cJSON_IsArray(sp) && cJSON_GetArraySize(sp) == 0);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "hosts"), "resplit")));
    cJSON_Delete(j);
    free(s);
    int32_t ids[3] = {1, 7, 9};
    CHECK_INT(api_tokenize_json(ids, 3, NULL, NULL, &s), 0);
    CHECK_STR(s, "{\"tokens\":[1,7,9]}");
    free(s);
    CHECK_INT(api_tokenize_json(ids, 1, piece, NULL, &s), 0);
    CHECK_STR(s, "{\"tokens\":[{\"id\":1,\"piece\":\"<1>\"}]}");
    free(s);
    CHECK_INT(api_detokenize_json("a\0b", 3, &s), 0);
    CHECK_STR(s, "{\"content\":\"a\xEF\xBF\xBD"
                 "b\"}");
    free(s);

    /* tokenize / detokenize requests */
    char *content;
    bool add, pieces;
    struct api_error e;
    const char *tb = "{\"content\":\"hello\",\"add_special\":true}";
    CHECK_INT(api_parse_tokenize(tb, strlen(tb), &content, &add, &pieces, &e), 0);
    CHECK_STR(content, "hello");
    CHECK(add && !pieces);
    free(content);
    tb = "{\"content\":3}";
    CHECK_INT(api_parse_tokenize(tb, strlen(tb), &content, &add, &pieces, &e), BT_EINVAL);
    CHECK_STR(e.param, "content");
    int32_t *out;
    int n;
    tb = "{\"tokens\":[1,2,3]}";
    CHECK_INT(api_parse_detokenize(tb, strlen(tb), NV, &out, &n, &e), 0);
    CHECK_INT(n, 3);
    CHECK_INT(out[2], 3);
    free(out);
    tb = "{\"tokens\":[1,9999]}";
    CHECK_INT(api_parse_detokenize(tb, strlen(tb), NV, &out, &n, &e), BT_EINVAL);
    CHECK_STR(e.param, "tokens");
    tb = "{\"tokens\":\"1\"}";
    CHECK_INT(api_parse_detokenize(tb, strlen(tb), NV, &out, &n, &e), BT_EINVAL);

    CHECK(api_utf8_valid("caf\xC3\xA9", 5));
    CHECK(!api_utf8_valid("\xC0\xAF", 2));     /* overlong */
    CHECK(!api_utf8_valid("\xED\xA0\x80", 3)); /* surrogate */
    CHECK(!api_utf8_valid("a\0b", 3));
}

int main(void)
{
    test_parse_ok();
    test_parse_bad();
    test_responses();
    return t_done();
}
