/* make_protocol_corpus DIR: write the seed corpus of fuzz_protocol: one valid message of every
 * opcode, as msg_NAME (selector byte 0, then the whole message) and payload_NAME (selector byte
 * = opcode, then the payload alone). Run it again after a change of the wire format:
 *     build/tests/make_protocol_corpus tests/fuzz/corpus/protocol
 * The bad_* seeds are kept by hand. */
#include "protocol.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static int put(const char *dir, const char *name, uint8_t sel, const uint8_t *p, size_t n)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fputc(sel, f) == EOF || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
        perror(path);
        return 1;
    }
    return 0;
}

static int save(const char *dir, const char *name, uint8_t op, const struct proto_buf *b)
{
    char m[128], p[128];
    snprintf(m, sizeof(m), "msg_%s", name);
    snprintf(p, sizeof(p), "payload_%s", name);
    return put(dir, m, 0, b->data, b->len) |
           put(dir, p, op, b->data + PROTO_HDR_SIZE, b->len - PROTO_HDR_SIZE);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    struct proto_buf b = {0};
    struct proto_route r = {.sender = 1, .epoch = 3, .step = 42};
    char err[256];
    int bad = 0;

    struct proto_handshake hs;
    proto_handshake_local(&hs);
    hs.layer_begin = 0;
    hs.layer_end = 4;
    hs.n_layers = 8;
    hs.sizes = (struct proto_sizes){
        .n_seq = 4, .n_ctx = 256, .max_batch = 260, .kv_type = 1, .n_blocks = 64};
    hs.pid = 4242; /* fixed, so that the seeds do not change from run to run */
    snprintf(hs.hostname, sizeof(hs.hostname), "host1");
    snprintf(hs.build_id, sizeof(hs.build_id), "baton-seed");
    bad |= proto_encode_handshake(&b, &r, &hs, err, sizeof(err)) ||
           save(dir, "handshake", PROTO_OP_HANDSHAKE, &b);

    struct proto_heartbeat hb = {.nonce = 7, .state = 1, .progress = 0.5f};
    bad |= proto_encode_heartbeat(&b, &r, PROTO_OP_HEARTBEAT, &hb, err, sizeof(err)) ||
           save(dir, "heartbeat", PROTO_OP_HEARTBEAT, &b);
    bad |= proto_encode_heartbeat(&b, &r, PROTO_OP_HEARTBEAT_REPLY, &hb, err, sizeof(err)) ||
           save(dir, "heartbeat_reply", PROTO_OP_HEARTBEAT_REPLY, &b);
    bad |= proto_encode_stats_request(&b, &r, err, sizeof(err)) ||
           save(dir, "stats_request", PROTO_OP_STATS_REQUEST, &b);

    struct proto_stats st = {.n_steps = 3, .n_tokens = 9, .kv_used = 9, .kv_size = 512};
    bad |=
        proto_encode_stats(&b, &r, &st, err, sizeof(err)) || save(dir, "stats", PROTO_OP_STATS, &b);

    struct proto_shutdown sd = {.reason = PROTO_SHUTDOWN_NORMAL};
    bad |= proto_encode_shutdown(&b, &r, &sd, err, sizeof(err)) ||
           save(dir, "shutdown", PROTO_OP_SHUTDOWN, &b);

    /* 3 tokens of two sequences; the second is new, with sampling parameters and a bias */
    static const struct proto_bias bias[2] = {{7, -INFINITY}, {3, 1.5f}};
    struct proto_token tok[3] = {
        {.seq_id = 0, .pos = 5, .token = 10, .flags = PROTO_TOK_ROW},
        {.seq_id = 1, .pos = 0, .token = 1, .flags = PROTO_TOK_ROW},
        {.seq_id = 1, .pos = 1, .token = 20, .flags = PROTO_TOK_ROW | PROTO_TOK_LOGITS}};
    struct proto_seq seq[2] = {{.seq_id = 0, .sampling = {.top_p = 1, .repeat_penalty = 1}},
                               {.seq_id = 1,
                                .flags = PROTO_SEQ_RESET,
                                .sampling = {.temperature = 0.8f,
                                             .top_k = 40,
                                             .top_p = 0.95f,
                                             .min_p = 0.05f,
                                             .repeat_penalty = 1.1f,
                                             .repeat_last_n = 64,
                                             .seed = 1234,
                                             .n_logprobs = 2,
                                             .n_bias = 2,
                                             .bias = bias}}};
    float rows[3 * 4];
    for (int i = 0; i < 12; i++) rows[i] = (float)i * 0.25f - 1.0f;
    static const struct proto_kv_op kvops[3] = {
        {.kind = PROTO_KV_RESET, .seq = 0, .n = 16},
        {.kind = PROTO_KV_MAP, .seq = 0, .index = 0, .block = 5},
        {.kind = PROTO_KV_COPY, .block = 6, .src = 5, .n = 4}};
    struct proto_forward fw = {.n_ops = 3,
                               .ops = kvops,
                               .n_tokens = 3,
                               .n_seqs = 2,
                               .n_embd = 4,
                               .n_rows = 3,
                               .tokens = tok,
                               .seqs = seq,
                               .rows = rows};
    bad |= proto_encode_forward(&b, &r, &fw, err, sizeof(err)) ||
           save(dir, "forward", PROTO_OP_FORWARD, &b);

    struct proto_top top[2] = {{20, -0.1f}, {21, -2.5f}};
    struct proto_sampled smp = {.seq_id = 1, .token = 20, .logprob = -0.1f, .n_top = 2, .top = top};
    struct proto_tokens tk = {.n = 1, .items = &smp};
    bad |= proto_encode_tokens(&b, &r, &tk, err, sizeof(err)) ||
           save(dir, "tokens", PROTO_OP_TOKENS, &b);

    struct proto_error er = {.seq_id = 1, .code = -2};
    snprintf(er.message, sizeof(er.message), "sequence id 1 out of range");
    bad |=
        proto_encode_error(&b, &r, &er, err, sizeof(err)) || save(dir, "error", PROTO_OP_ERROR, &b);

    struct proto_reset_item ri = {.seq_id = 1, .flags = PROTO_RESET_CLEAR_KV};
    struct proto_reset rs = {.n = 1, .items = &ri};
    bad |=
        proto_encode_reset(&b, &r, &rs, err, sizeof(err)) || save(dir, "reset", PROTO_OP_RESET, &b);

    proto_buf_free(&b);
    if (bad) fprintf(stderr, "make_protocol_corpus: %s\n", err[0] ? err : "write failed");
    return bad ? 1 : 0;
}
