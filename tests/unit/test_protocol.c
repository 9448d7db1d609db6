/* protocol: round trips of every payload, and every way a hostile peer can break a message. */
#include "log.h"
#include "protocol.h"
#include "t.h"
#include "version.h"

#include <unistd.h>

static char err[512];
static const struct proto_route route = {.sender = 2, .epoch = 7, .step = 123456789012ull};

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* After patching a message, make its sizes and checksums right again, so that the payload
 * validation (not the checksum) is what rejects it. */
static void refix(uint8_t *m, size_t len)
{
    put32(m + 12, (uint32_t)(len - PROTO_HDR_SIZE));
    put32(m + 32, proto_crc32c(0, m + PROTO_HDR_SIZE, len - PROTO_HDR_SIZE));
    put32(m + 36, proto_crc32c(0, m, 36));
}

/* Bitwise CRC-32C, the reference for both implementations. */
static uint32_t crc_ref(const uint8_t *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82f63b78u & (0u - (c & 1)));
    }
    return ~c;
}

/* Decode msg[len] into m; 0 or the status. */
static int dec(const uint8_t *msg, size_t len, struct proto_msg *m)
{
    err[0] = 0;
    return proto_decode(msg, len, m, err, sizeof(err));
}

/* Decoding a copy with one payload u32 replaced must fail with BT_EFORMAT and text containing
 * `want`. */
static void expect_bad_u32(const struct proto_buf *b, size_t off, uint32_t v, const char *want,
                           int line)
{
    struct proto_msg m = {0};
    uint8_t *c = malloc(b->len);
    memcpy(c, b->data, b->len);
    put32(c + PROTO_HDR_SIZE + off, v);
    refix(c, b->len);
    int rc = dec(c, b->len, &m);
    if (rc != BT_EFORMAT || !strstr(err, want))
        fprintf(stderr, "line %d: rc %d err '%s', wanted '%s'\n", line, rc, err, want);
    CHECK_INT(rc, BT_EFORMAT);
    CHECK(strstr(err, want) != NULL);
    free(c);
    proto_msg_free(&m);
}
#define BAD32(b, off, v, want) expect_bad_u32(b, off, v, want, __LINE__)

/* Re-encoding what was decoded must give the same bytes. */
static void check_reencode(const struct proto_buf *orig, const struct proto_msg *m)
{
    struct proto_buf b = {0};
    int rc = BT_ERR;
    struct proto_route r = {m->hdr.sender, m->hdr.epoch, m->hdr.step};
    switch (m->hdr.opcode) {
    case PROTO_OP_HANDSHAKE:
        rc = proto_encode_handshake(&b, &r, &m->handshake, err, sizeof(err));
        break;
    case PROTO_OP_HEARTBEAT:
    case PROTO_OP_HEARTBEAT_REPLY:
        rc = proto_encode_heartbeat(&b, &r, m->hdr.opcode, &m->heartbeat, err, sizeof(err));
        break;
    case PROTO_OP_STATS_REQUEST:
        rc = proto_encode_stats_request(&b, &r, err, sizeof(err));
        break;
    case PROTO_OP_STATS:
        rc = proto_encode_stats(&b, &r, &m->stats, err, sizeof(err));
        break;
    case PROTO_OP_SHUTDOWN:
        rc = proto_encode_shutdown(&b, &r, &m->shutdown, err, sizeof(err));
        break;
    case PROTO_OP_FORWARD:
        rc = proto_encode_forward(&b, &r, &m->forward, err, sizeof(err));
        break;
    case PROTO_OP_TOKENS:
        rc = proto_encode_tokens(&b, &r, &m->tokens, err, sizeof(err));
        break;
    case PROTO_OP_ERROR:
        rc = proto_encode_error(&b, &r, &m->error, err, sizeof(err));
        break;
    case PROTO_OP_RESET:
        rc = proto_encode_reset(&b, &r, &m->reset, err, sizeof(err));
        break;
    }
    CHECK_INT(rc, 0);
    CHECK_INT(b.len, orig->len);
    CHECK(b.len == orig->len && memcmp(b.data, orig->data, b.len) == 0);
    proto_buf_free(&b);
}

static void test_crc(void)
{
    CHECK_INT(proto_crc32c(0, "123456789", 9), 0xe3069283u);
    CHECK_INT(proto_crc32c(0, "", 0), 0);
    uint8_t buf[1031];
    for (size_t i = 0; i < sizeof(buf); i++) buf[i] = (uint8_t)(i * 131 + 7);
    for (size_t n = 0; n < sizeof(buf); n += 37) {
        CHECK_INT(proto_crc32c(0, buf, n), crc_ref(buf, n));
        /* unaligned start, and continuing a running CRC */
        CHECK_INT(proto_crc32c(0, buf + 3, n / 2), crc_ref(buf + 3, n / 2));
        CHECK_INT(proto_crc32c(proto_crc32c(0, buf, n / 3), buf + n / 3, n - n / 3),
                  crc_ref(buf, n));
    }
}

static void test_header(void)
{
    struct proto_buf b = {0};
    struct proto_msg m = {0};
    struct proto_heartbeat hb = {.nonce = 0x1122334455667788ull, .state = 1, .progress = 1.0f};
    CHECK_INT(proto_encode_heartbeat(&b, &route, PROTO_OP_HEARTBEAT, &hb, err, sizeof(err)), 0);
    CHECK_INT(b.len, PROTO_HDR_SIZE + 16);
    /* the documented layout */
    CHECK(memcmp(b.data, "BATN", 4) == 0);
    CHECK_INT(b.data[4] | b.data[5] << 8, PROTO_VERSION);
    CHECK_INT(b.data[6], PROTO_OP_HEARTBEAT);
    CHECK_INT(b.data[7], 0);
    CHECK_INT(get32(b.data + 8), 2);
    CHECK_INT(get32(b.data + 12), 16);
    CHECK_INT(get32(b.data + 16), 7);
    CHECK_INT(get32(b.data + 24), (uint32_t)123456789012ull);
    CHECK_INT(get32(b.data + 28), (uint32_t)(123456789012ull >> 32));
    CHECK_INT(get32(b.data + 36), proto_crc32c(0, b.data, 36));
    CHECK_INT(b.data[40], 0x88); /* nonce little-endian */

    CHECK_INT(dec(b.data, b.len, &m), 0);
    CHECK_INT(m.hdr.opcode, PROTO_OP_HEARTBEAT);
    CHECK_INT(m.hdr.sender, 2);
    CHECK_INT(m.hdr.epoch, 7);
    CHECK(m.hdr.step == 123456789012ull);
    CHECK(m.heartbeat.nonce == 0x1122334455667788ull);

    uint8_t c[PROTO_HDR_SIZE + 16];
    /* short buffers */
    CHECK_INT(dec(b.data, 0, &m), BT_EFORMAT);
    CHECK(strstr(err, "shorter than") != NULL);
    CHECK_INT(dec(b.data, PROTO_HDR_SIZE - 1, &m), BT_EFORMAT);
    /* truncated payload / extra bytes: the header's payload size disagrees */
    CHECK_INT(dec(b.data, b.len - 1, &m), BT_EFORMAT);
    CHECK(strstr(err, "payload bytes") != NULL);
    uint8_t longer[PROTO_HDR_SIZE + 17];
    memcpy(longer, b.data, b.len);
    longer[b.len] = 0;
    CHECK_INT(dec(longer, sizeof(longer), &m), BT_EFORMAT);
    /* bad magic */
    memcpy(c, b.data, sizeof(c));
    c[0] = 'X';
    CHECK_INT(dec(c, sizeof(c), &m), BT_EFORMAT);
    CHECK(strstr(err, "bad magic") != NULL);
    /* another protocol version: a clear message, even with valid checksums */
    memcpy(c, b.data, sizeof(c));
    c[4] = PROTO_VERSION + 1;
    refix(c, sizeof(c));
    CHECK_INT(dec(c, sizeof(c), &m), BT_EFORMAT);
    char vers[32];
    snprintf(vers, sizeof(vers), "protocol version %d", PROTO_VERSION + 1);
    CHECK(strstr(err, vers) != NULL);
    /* header checksum */
    memcpy(c, b.data, sizeof(c));
    c[20] ^= 1; /* epoch */
    CHECK_INT(dec(c, sizeof(c), &m), BT_EFORMAT);
    CHECK(strstr(err, "header checksum") != NULL);
    /* payload checksum */
    memcpy(c, b.data, sizeof(c));
    c[PROTO_HDR_SIZE + 3] ^= 0x40;
    CHECK_INT(dec(c, sizeof(c), &m), BT_EFORMAT);
    CHECK(strstr(err, "payload checksum") != NULL);
    /* unknown opcodes, flags, sender, sizes (checksums fixed, so the field is what fails) */
    const struct {
        size_t off;
        int width;
        uint32_t v;
        const char *want;
    } hcases[] = {
        {6, 1, 0, "unknown opcode"},
        {6, 1, PROTO_OP_COUNT, "unknown opcode"},
        {6, 1, 255, "unknown opcode"},
        {7, 1, 1, "header flags"},
        {8, 4, PROTO_MAX_RANKS, "sender rank"},
        {8, 4, 0xffffffffu, "sender rank"},
        {12, 4, PROTO_MAX_PAYLOAD + 1, "exceeds the cap"},
        {12, 4, 0xffffffffu, "exceeds the cap"},
        {12, 4, 15, "payload bytes"},
    };
    for (size_t i = 0; i < sizeof(hcases) / sizeof(hcases[0]); i++) {
        memcpy(c, b.data, sizeof(c));
        if (hcases[i].width == 1)
            c[hcases[i].off] = (uint8_t)hcases[i].v;
        else
            put32(c + hcases[i].off, hcases[i].v);
        put32(c + 36, proto_crc32c(0, c, 36));
        CHECK_INT(dec(c, sizeof(c), &m), BT_EFORMAT);
        if (!strstr(err, hcases[i].want)) fprintf(stderr, "case %zu: '%s'\n", i, err);
        CHECK(strstr(err, hcases[i].want) != NULL);
    }
    /* a heartbeat payload under another opcode: STATS wants 80 bytes */
    memcpy(c, b.data, sizeof(c));
    c[6] = PROTO_OP_STATS;
    refix(c, sizeof(c));
    CHECK_INT(dec(c, sizeof(c), &m), BT_EFORMAT);
    CHECK(strstr(err, "STATS payload") != NULL);
    /* STATS_REQUEST must be empty */
    c[6] = PROTO_OP_STATS_REQUEST;
    refix(c, sizeof(c));
    CHECK_INT(dec(c, sizeof(c), &m), BT_EFORMAT);
    /* error text is one line */
    CHECK(strchr(err, '\n') == NULL);
    proto_buf_free(&b);
    proto_buf_free(NULL);
    proto_msg_free(&m);
    proto_msg_free(NULL);
}

static void test_handshake(void)
{
    struct proto_buf b = {0};
    struct proto_msg m = {0};
    struct proto_handshake h;
    proto_handshake_local(&h);
    CHECK_INT(h.proto_version, PROTO_VERSION);
    CHECK_STR(h.build_id, BATON_BUILD_ID);
    CHECK(h.hostname[0] != 0);
    CHECK_INT(h.pid, getpid());
    h.state = PROTO_STATE_READY;
    h.progress = 0.75f;
    h.model_id = 0xdeadbeefcafef00dull;
    h.model_size = 5ull << 32;
    h.layer_begin = 8;
    h.layer_end = 16;
    h.n_layers = 22;
    h.sizes = (struct proto_sizes){
        .n_seq = 4, .n_ctx = 2048, .max_batch = 260, .kv_type = 1, .n_blocks = 512};
    snprintf(h.backend, sizeof(h.backend), "cpu avx2 2 threads");
    CHECK_INT(proto_encode_handshake(&b, &route, &h, err, sizeof(err)), 0);
    CHECK_INT(dec(b.data, b.len, &m), 0);
    CHECK_INT(m.hdr.opcode, PROTO_OP_HANDSHAKE);
    CHECK_STR(m.handshake.build_id, h.build_id);
    CHECK_STR(m.handshake.backend, "cpu avx2 2 threads");
    CHECK_STR(m.handshake.hostname, h.hostname);
    CHECK(m.handshake.model_id == h.model_id && m.handshake.model_size == h.model_size);
    CHECK_INT(m.handshake.layer_begin, 8);
    CHECK_INT(m.handshake.layer_end, 16);
    CHECK_INT(m.handshake.n_layers, 22);
    CHECK_INT(m.handshake.state, PROTO_STATE_READY);
    CHECK_NEAR(m.handshake.progress, 0.75, 0);
    CHECK_INT(m.handshake.pid, h.pid);
    CHECK(!memcmp(&m.handshake.sizes, &h.sizes, sizeof(h.sizes)));
    check_reencode(&b, &m);

    /* payload offsets: 0 version, 4 state, 8 progress, 12 pid, 16 id, 24 size, 32 begin,
     * 36 end, 40 n_layers, 44 n_seq, 48 n_ctx, 52 max_batch, 56 kv type, 60 n_blocks, 64 build id
     * length */
    BAD32(&b, 4, 3, "unknown state");
    BAD32(&b, 8, 0x7fc00000u, "load progress"); /* NaN */
    BAD32(&b, 8, 0x3fc00000u, "load progress"); /* 1.5 */
    BAD32(&b, 32, 17, "layer range");
    BAD32(&b, 36, 23, "layer range");
    BAD32(&b, 40, PROTO_MAX_LAYERS + 1, "n_layers");
    BAD32(&b, 44, PROTO_MAX_SEQS + 1, "sizes");
    BAD32(&b, 48, PROTO_MAX_POS + 1, "sizes");
    BAD32(&b, 52, PROTO_MAX_TOKENS + 1, "sizes");
    BAD32(&b, 56, 256, "sizes");
    BAD32(&b, 60, PROTO_MAX_BLOCKS + 1, "KV blocks");
    size_t bl = strlen(h.build_id);
    uint32_t w = get32(b.data + PROTO_HDR_SIZE + 64);
    BAD32(&b, 64, (w & 0xffff0000u) | (PROTO_BUILD_ID_MAX + 1), "build id");
    BAD32(&b, 64, (w & 0xffff0000u) | 0xffff, "build id");
    /* backend length runs past the payload */
    size_t boff = 64 + 2 + bl;
    uint32_t w2 = get32(b.data + PROTO_HDR_SIZE + boff);
    BAD32(&b, boff, (w2 & 0xffff0000u) | PROTO_BACKEND_MAX, "backend");
    /* a control byte in the backend string */
    BAD32(&b, boff, (w2 & 0xff00ffffu) | 0x000a0000u, "control bytes");
    /* cut off inside the strings, and a trailing byte */
    {
        uint8_t *c = malloc(b.len + 1);
        memcpy(c, b.data, b.len);
        refix(c, b.len - 3);
        CHECK_INT(dec(c, b.len - 3, &m), BT_EFORMAT);
        refix(c, PROTO_HDR_SIZE + 10);
        CHECK_INT(dec(c, PROTO_HDR_SIZE + 10, &m), BT_EFORMAT);
        CHECK(strstr(err, "at least") != NULL);
        memcpy(c, b.data, b.len);
        c[b.len] = 'x';
        refix(c, b.len + 1);
        CHECK_INT(dec(c, b.len + 1, &m), BT_EFORMAT);
        CHECK(strstr(err, "left over") != NULL);
        free(c);
    }
    /* the encoder refuses what the decoder would */
    struct proto_handshake bad = h;
    snprintf(bad.hostname, sizeof(bad.hostname), "host\nname");
    CHECK_INT(proto_encode_handshake(&b, &route, &bad, err, sizeof(err)), BT_EINVAL);
    bad = h;
    bad.layer_end = 99;
    CHECK_INT(proto_encode_handshake(&b, &route, &bad, err, sizeof(err)), BT_EINVAL);
    struct proto_route r2 = route;
    r2.sender = PROTO_MAX_RANKS;
    CHECK_INT(proto_encode_handshake(&b, &r2, &h, err, sizeof(err)), BT_EINVAL);
    proto_buf_free(&b);
    proto_msg_free(&m);
}

static void test_small(void)
{
    struct proto_buf b = {0};
    struct proto_msg m = {0};
    /* HEARTBEAT_REPLY */
    struct proto_heartbeat hb = {.nonce = 99, .state = PROTO_STATE_LOADING, .progress = 0.5f};
    CHECK_INT(proto_encode_heartbeat(&b, &route, PROTO_OP_HEARTBEAT_REPLY, &hb, err, sizeof(err)),
              0);
    CHECK_INT(dec(b.data, b.len, &m), 0);
    CHECK_INT(m.hdr.opcode, PROTO_OP_HEARTBEAT_REPLY);
    CHECK_INT(m.heartbeat.nonce, 99);
    CHECK_INT(m.heartbeat.state, PROTO_STATE_LOADING);
    CHECK_NEAR(m.heartbeat.progress, 0.5, 0);
    check_reencode(&b, &m);
    BAD32(&b, 8, 9, "unknown state");
    BAD32(&b, 12, 0xff800000u, "load progress"); /* -inf */
    CHECK_INT(proto_encode_heartbeat(&b, &route, PROTO_OP_STATS, &hb, err, sizeof(err)), BT_EINVAL);

    /* STATS_REQUEST and STATS */
    CHECK_INT(proto_encode_stats_request(&b, &route, err, sizeof(err)), 0);
    CHECK_INT(b.len, PROTO_HDR_SIZE);
    CHECK_INT(dec(b.data, b.len, &m), 0);
    CHECK_INT(m.hdr.opcode, PROTO_OP_STATS_REQUEST);
    check_reencode(&b, &m);
    struct proto_stats s = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    CHECK_INT(proto_encode_stats(&b, &route, &s, err, sizeof(err)), 0);
    CHECK_INT(dec(b.data, b.len, &m), 0);
    CHECK_INT(m.stats.last_step_ns, 1);
    CHECK_INT(m.stats.n_dropped, 5);
    CHECK_INT(m.stats.kv_used, 8);
    CHECK_INT(m.stats.rss_bytes, 10);
    check_reencode(&b, &m);
    BAD32(&b, 56, 100, "kv_used"); /* kv_used 100 > kv_size 9 */
    s.kv_used = 11;
    CHECK_INT(proto_encode_stats(&b, &route, &s, err, sizeof(err)), BT_EINVAL);

    /* SHUTDOWN */
    struct proto_shutdown sd = {PROTO_SHUTDOWN_RESTART};
    CHECK_INT(proto_encode_shutdown(&b, &route, &sd, err, sizeof(err)), 0);
    CHECK_INT(dec(b.data, b.len, &m), 0);
    CHECK_INT(m.shutdown.reason, PROTO_SHUTDOWN_RESTART);
    check_reencode(&b, &m);
    BAD32(&b, 0, 2, "shutdown reason");

    /* ERROR */
    struct proto_error e = {.seq_id = 3, .code = BT_EFULL};
    snprintf(e.message, sizeof(e.message), "KV cache full (seq 3)");
    CHECK_INT(proto_encode_error(&b, &route, &e, err, sizeof(err)), 0);
    CHECK_INT(dec(b.data, b.len, &m), 0);
    CHECK_INT(m.error.seq_id, 3);
    CHECK_INT(m.error.code, BT_EFULL);
    CHECK_STR(m.error.message, "KV cache full (seq 3)");
    check_reencode(&b, &m);
    BAD32(&b, 4, 0, "not a negative status");
    BAD32(&b, 4, 5, "not a negative status");
    BAD32(&b, 4, (uint32_t)-5000, "not a negative status");
    BAD32(&b, 8, 0x4141ffffu, "message"); /* length 65535 past the payload */
    BAD32(&b, 8, 0x41410000u | (PROTO_ERRMSG_MAX + 1), "message");
    BAD32(&b, 8, 0x411b0000u | 21, "control bytes"); /* ESC in the text */
    /* the encoder cleans local text: newlines become spaces, long text is cut at the cap */
    e.seq_id = PROTO_SEQ_NONE;
    memset(e.message, 'a', sizeof(e.message) - 1);
    e.message[sizeof(e.message) - 1] = 0;
    e.message[5] = '\n';
    CHECK_INT(proto_encode_error(&b, &route, &e, err, sizeof(err)), 0);
    CHECK_INT(dec(b.data, b.len, &m), 0);
    CHECK_INT(strlen(m.error.message), PROTO_ERRMSG_MAX);
    CHECK_INT(m.error.message[5], ' ');
    CHECK_INT(m.error.seq_id, PROTO_SEQ_NONE);
    e.code = 1;
    CHECK_INT(proto_encode_error(&b, &route, &e, err, sizeof(err)), BT_EINVAL);

    /* RESET */
    struct proto_reset_item items[3] = {{1, PROTO_RESET_CLEAR_KV},
                                        {7, PROTO_RESET_CANCEL | PROTO_RESET_CLEAR_KV},
                                        {4000000000u, PROTO_RESET_CANCEL}};
    struct proto_reset rs = {.n = 3, .items = items};
    CHECK_INT(proto_encode_reset(&b, &route, &rs, err, sizeof(err)), 0);
    CHECK_INT(dec(b.data, b.len, &m), 0);
    CHECK_INT(m.reset.n, 3);
    CHECK_INT(m.reset.items[1].seq_id, 7);
    CHECK_INT(m.reset.items[1].flags, 3);
    CHECK_INT(m.reset.items[2].seq_id, 4000000000u);
    check_reencode(&b, &m);
    BAD32(&b, 0, 0, "items outside");
    BAD32(&b, 0, 4, "need");
    BAD32(&b, 0, 0xffffffffu, "items outside");
    BAD32(&b, 8, 0, "flags");
    BAD32(&b, 8, 4, "flags");
    BAD32(&b, 4, PROTO_SEQ_NONE, "reserved seq id");
    rs.n = 0;
    CHECK_INT(proto_encode_reset(&b, &route, &rs, err, sizeof(err)), BT_EINVAL);
    proto_buf_free(&b);
    proto_msg_free(&m);
}

static struct proto_sampling sampling(void)
{
    struct proto_sampling s = {.temperature = 0.8f,
                               .top_k = 40,
                               .top_p = 0.95f,
                               .min_p = 0.05f,
                               .repeat_penalty = 1.1f,
                               .repeat_last_n = 64,
                               .presence_penalty = 0.5f,
                               .frequency_penalty = -0.25f,
                               .seed = 0xfeedfacecafebeefull,
                               .n_logprobs = 5};
    return s;
}

/* A batch of 5 tokens in 2 sequences: seq 11 prompt tokens (ids), seq 4 activation rows. */
static void make_forward(struct proto_forward *f, struct proto_token *tok, struct proto_seq *seq,
                         float *rows, uint32_t n_embd)
{
    memset(f, 0, sizeof(*f));
    for (uint32_t i = 0; i < 5; i++) {
        tok[i].seq_id = i < 3 ? 11 : 4;
        tok[i].pos = i < 3 ? 100 + i : i;
        tok[i].token = i < 3 ? (int32_t)(1000 + i) : (i == 3 ? -1 : 42);
        tok[i].flags = (i >= 3 ? PROTO_TOK_ROW : 0) | (i == 2 || i == 4 ? PROTO_TOK_LOGITS : 0) |
                       (i < 3 ? PROTO_TOK_PROMPT : 0);
    }
    seq[0].seq_id = 4;
    seq[0].flags = PROTO_SEQ_RESET;
    seq[0].sampling = sampling();
    seq[1].seq_id = 11;
    seq[1].flags = PROTO_SEQ_CLEAR_KV;
    seq[1].sampling = sampling();
    seq[1].sampling.temperature = 0;
    static const struct proto_bias bias[2] = {{7, -INFINITY}, {3, 1.5f}};
    seq[1].sampling.n_bias = 2;
    seq[1].sampling.bias = bias;
    for (uint32_t i = 0; i < 2 * n_embd; i++) rows[i] = (float)i * 0.5f - 3.25f;
    static const struct proto_kv_op ops[2] = {
        {.kind = PROTO_KV_RESET, .seq = 4, .n = 3},
        {.kind = PROTO_KV_COPY, .block = 9, .src = 2, .n = 5}};
    f->n_ops = 2;
    f->ops = ops;
    f->n_tokens = 5;
    f->n_seqs = 2;
    f->n_embd = n_embd;
    f->n_rows = 2;
    f->tokens = tok;
    f->seqs = seq;
    f->rows = rows;
}

static void test_forward(void)
{
    enum { NE = 8 };
    struct proto_buf b = {0};
    struct proto_msg m = {0};
    struct proto_token tok[5];
    struct proto_seq seq[2];
    float rows[2 * NE];
    struct proto_forward f;
    make_forward(&f, tok, seq, rows, NE);
    CHECK_INT(proto_encode_forward(&b, &route, &f, err, sizeof(err)), 0);
    CHECK_INT(b.len, PROTO_HDR_SIZE + 20 + 5 * 16 + 2 * 24 + 2 * 56 + 2 * 8 + 2 * NE * 4);
    CHECK_INT(dec(b.data, b.len, &m), 0);
    struct proto_forward *d = &m.forward;
    CHECK_INT(d->n_tokens, 5);
    CHECK_INT(d->n_seqs, 2);
    CHECK_INT(d->n_embd, NE);
    CHECK_INT(d->n_rows, 2);
    CHECK_INT(d->n_ops, 2);
    CHECK(!memcmp(d->ops, f.ops, 2 * sizeof(*d->ops)));
    for (int i = 0; i < 5; i++) {
        CHECK_INT(d->tokens[i].seq_id, tok[i].seq_id);
        CHECK_INT(d->tokens[i].pos, tok[i].pos);
        CHECK_INT(d->tokens[i].token, tok[i].token);
        CHECK_INT(d->tokens[i].flags, tok[i].flags);
        CHECK_INT(d->seqs[d->tokens[i].seq_idx].seq_id, tok[i].seq_id);
    }
    CHECK_INT(d->seqs[0].flags, PROTO_SEQ_RESET);
    CHECK_INT(d->seqs[1].flags, PROTO_SEQ_CLEAR_KV);
    CHECK(d->seqs[0].sampling.temperature == 0.8f);
    CHECK_NEAR(d->seqs[1].sampling.temperature, 0, 0);
    CHECK_INT(d->seqs[0].sampling.top_k, 40);
    CHECK_NEAR(d->seqs[0].sampling.frequency_penalty, -0.25, 0);
    CHECK(d->seqs[0].sampling.seed == 0xfeedfacecafebeefull);
    CHECK_INT(d->seqs[0].sampling.n_logprobs, 5);
    CHECK_INT(d->seqs[0].sampling.repeat_last_n, 64);
    CHECK_INT(d->seqs[0].sampling.n_bias, 0);
    CHECK_INT(d->seqs[1].sampling.n_bias, 2);
    CHECK_INT(d->seqs[1].sampling.bias[0].token, 7);
    CHECK(isinf(d->seqs[1].sampling.bias[0].bias) && d->seqs[1].sampling.bias[0].bias < 0);
    CHECK_INT(d->seqs[1].sampling.bias[1].token, 3);
    CHECK(d->seqs[1].sampling.bias[1].bias == 1.5f);
    CHECK(memcmp(d->rows, rows, sizeof(rows)) == 0);
    /* rows are borrowed from the (aligned) message bytes */
    CHECK((const uint8_t *)d->rows >= b.data && (const uint8_t *)d->rows < b.data + b.len);
    check_reencode(&b, &m);
    /* misaligned message bytes: rows are copied, values equal */
    {
        uint8_t *c = malloc(b.len + 1);
        memcpy(c + 1, b.data, b.len);
        CHECK_INT(dec(c + 1, b.len, &m), 0);
        CHECK((const uint8_t *)d->rows < c || (const uint8_t *)d->rows >= c + b.len + 1);
        CHECK(memcmp(d->rows, rows, sizeof(rows)) == 0);
        free(c);
    }

    /* payload offsets: 0 n_tokens, 4 n_seqs, 8 n_embd, 12 n_rows, 16 n_ops; token i at 20 + 16 i
     * (seq, pos, token, flags); KV operations at 100 and 124 (kind, seq, index, block, src, n);
     * seq 0 at 148, seq 1 at 204 (id, flags, temperature, top_k, top_p, min_p, repeat_penalty,
     * repeat_last_n, presence, frequency, seed(8), n_logprobs, n_bias), seq 1's two bias entries
     * (token, bias) at 260 and 268 */
    BAD32(&b, 0, 0, "n_tokens");
    BAD32(&b, 0, 0xffffffffu, "n_tokens");
    BAD32(&b, 0, PROTO_MAX_TOKENS + 1, "n_tokens");
    BAD32(&b, 0, 7, "need");         /* counts past the payload */
    BAD32(&b, 0, 6, "KV operation"); /* the operations read as tokens */
    BAD32(&b, 0, 4, "KV operation");
    BAD32(&b, 4, 0, "n_seqs");
    BAD32(&b, 4, 0xffffffffu, "n_seqs");
    BAD32(&b, 4, 6, "n_seqs"); /* more sequences than tokens */
    BAD32(&b, 8, 0xffffffffu, "n_embd");
    BAD32(&b, 8, NE + 1, "logit bias"); /* the bias bytes read as a row */
    BAD32(&b, 12, 6, "n_rows");
    BAD32(&b, 12, 0xffffffffu, "n_rows");
    BAD32(&b, 12, 0, "n_rows 0 with n_embd");
    BAD32(&b, 16, PROTO_MAX_KV_OPS + 1, "KV operations");
    BAD32(&b, 100, 4, "KV operation 0: kind 4");
    BAD32(&b, 100 + 20, PROTO_MAX_POS + 1, "KV operation 0");
    BAD32(&b, 124 + 12, (uint32_t)-2, "KV operation 1");
    BAD32(&b, 124 + 4, 3, "KV operation 1"); /* a COPY names no sequence */
    BAD32(&b, 20, 5, "not in the sequence table");
    BAD32(&b, 24, PROTO_MAX_POS, "position");
    BAD32(&b, 28, (uint32_t)-1, "without an activation row");
    BAD32(&b, 28, (uint32_t)-7, "without an activation row");
    BAD32(&b, 32, 8, "unknown flags");
    BAD32(&b, 32, PROTO_TOK_ROW, "flagged with a row");
    BAD32(&b, 148, 11, "listed twice");
    BAD32(&b, 148, 12, "not in the sequence table"); /* seq 4 no longer listed */
    BAD32(&b, 148, PROTO_SEQ_NONE, "reserved seq id");
    BAD32(&b, 152, 4, "unknown flags");
    BAD32(&b, 156, 0x7fc00000u, "temperature"); /* NaN */
    BAD32(&b, 156, 0xbf800000u, "temperature"); /* -1 */
    BAD32(&b, 160, (uint32_t)-1, "top_k");
    BAD32(&b, 164, 0x40000000u, "top_p"); /* 2 */
    BAD32(&b, 168, 0x7f800000u, "min_p"); /* inf */
    BAD32(&b, 172, 0, "repeat_penalty");
    BAD32(&b, 176, PROTO_MAX_POS + 1, "repeat_last_n");
    BAD32(&b, 180, 0x7fc00000u, "presence_penalty");
    BAD32(&b, 184, 0xc3480000u, "frequency_penalty"); /* -200 */
    BAD32(&b, 196, PROTO_MAX_LOGPROBS + 1, "n_logprobs");
    BAD32(&b, 200, 0xffffffffu, "logit bias entries");
    BAD32(&b, 256, 3, "logit bias entries"); /* more than the bytes left */
    BAD32(&b, 256, 1, "used");               /* fewer: bytes left over */
    BAD32(&b, 260, (uint32_t)-5, "token id");
    BAD32(&b, 264, 0x7fc00000u, "logit bias 0: value"); /* NaN */
    BAD32(&b, 272, 0x7f800000u, "logit bias 1: value"); /* +inf */
    /* huge counts whose product would overflow 32 bits: the size check catches them */
    {
        uint8_t *c = malloc(b.len);
        memcpy(c, b.data, b.len);
        put32(c + PROTO_HDR_SIZE + 0, PROTO_MAX_TOKENS);
        put32(c + PROTO_HDR_SIZE + 4, PROTO_MAX_SEQS);
        put32(c + PROTO_HDR_SIZE + 8, PROTO_MAX_EMBD);
        put32(c + PROTO_HDR_SIZE + 12, PROTO_MAX_TOKENS);
        refix(c, b.len);
        CHECK_INT(dec(c, b.len, &m), BT_EFORMAT);
        CHECK(strstr(err, "need") != NULL);
        /* a failed decode leaves an empty batch, never stale pointers */
        CHECK_INT(m.forward.n_tokens, 0);
        CHECK(m.forward.rows == NULL);
        free(c);
    }
    /* the seq "has no token" rule: add a third, unused sequence */
    {
        struct proto_seq s3[3] = {seq[0], seq[1], seq[1]};
        s3[2].seq_id = 77;
        struct proto_forward g = f;
        g.seqs = s3;
        g.n_seqs = 3;
        CHECK_INT(proto_encode_forward(&b, &route, &g, err, sizeof(err)), BT_EINVAL);
        CHECK(strstr(err, "has no token") != NULL);
    }
    /* encoder refusals */
    {
        struct proto_forward g = f;
        struct proto_seq s2[2] = {seq[0], seq[0]};
        g.seqs = s2;
        CHECK_INT(proto_encode_forward(&b, &route, &g, err, sizeof(err)), BT_EINVAL);
        CHECK(strstr(err, "twice") != NULL);
        g = f;
        g.n_rows = 1;
        CHECK_INT(proto_encode_forward(&b, &route, &g, err, sizeof(err)), BT_EINVAL);
        g = f;
        g.n_tokens = 0;
        CHECK_INT(proto_encode_forward(&b, &route, &g, err, sizeof(err)), BT_EINVAL);
        struct proto_seq s1[2] = {seq[0], seq[1]};
        s1[1].sampling.top_p = -0.5f;
        g = f;
        g.seqs = s1;
        CHECK_INT(proto_encode_forward(&b, &route, &g, err, sizeof(err)), BT_EINVAL);
        CHECK(strstr(err, "top_p") != NULL);
    }
    /* token ids only (first stage input), and reuse of the decoded struct with bigger batches */
    {
        enum { N = 300 };
        struct proto_token *t = calloc(N, sizeof(*t));
        struct proto_seq s1 = {.seq_id = 0, .sampling = sampling()};
        for (int i = 0; i < N; i++) t[i] = (struct proto_token){0, (uint32_t)i, i, 0, 0};
        t[N - 1].flags = PROTO_TOK_LOGITS;
        struct proto_forward g = {.n_tokens = N, .n_seqs = 1, .tokens = t, .seqs = &s1};
        CHECK_INT(proto_encode_forward(&b, &route, &g, err, sizeof(err)), 0);
        CHECK_INT(dec(b.data, b.len, &m), 0);
        CHECK_INT(m.forward.n_tokens, N);
        CHECK_INT(m.forward.n_rows, 0);
        CHECK(m.forward.rows == NULL);
        CHECK_INT(m.forward.tokens[N - 1].token, N - 1);
        CHECK_INT(m.forward.tokens[N - 1].flags, PROTO_TOK_LOGITS);
        check_reencode(&b, &m);
        free(t);
    }
    proto_buf_free(&b);
    proto_msg_free(&m);
}

static void test_tokens(void)
{
    struct proto_buf b = {0};
    struct proto_msg m = {0};
    struct proto_top top[3] = {{5, -0.1f}, {9, -2.5f}, {1, -7.0f}};
    struct proto_sampled it[3] = {
        {.seq_id = 4, .token = 5, .logprob = -0.1f, .n_top = 3, .top = top},
        {.seq_id = 11, .token = -1, .error = BT_EFULL},
        {.seq_id = 2, .token = 0, .logprob = 0.0f},
    };
    struct proto_tokens t = {.n = 3, .items = it};
    CHECK_INT(proto_encode_tokens(&b, &route, &t, err, sizeof(err)), 0);
    CHECK_INT(b.len, PROTO_HDR_SIZE + 4 + 3 * 20 + 3 * 8);
    CHECK_INT(dec(b.data, b.len, &m), 0);
    CHECK_INT(m.tokens.n, 3);
    CHECK_INT(m.tokens.items[0].seq_id, 4);
    CHECK_INT(m.tokens.items[0].token, 5);
    CHECK(m.tokens.items[0].logprob == -0.1f);
    CHECK_INT(m.tokens.items[0].n_top, 3);
    CHECK_INT(m.tokens.items[0].top[1].id, 9);
    CHECK_NEAR(m.tokens.items[0].top[2].logprob, -7.0, 0);
    CHECK_INT(m.tokens.items[1].error, BT_EFULL);
    CHECK_INT(m.tokens.items[1].token, -1);
    CHECK_INT(m.tokens.items[2].n_top, 0);
    check_reencode(&b, &m);
    /* payload offsets: 0 n; item 0 at 4 (seq, token, logprob, error, n_top), its tops at 24;
     * item 1 at 48; item 2 at 68 */
    BAD32(&b, 0, 0xffffffffu, "cap");
    BAD32(&b, 0, PROTO_MAX_SEQS + 1, "cap");
    BAD32(&b, 0, 4, "cut off");
    BAD32(&b, 0, 5, "need at least");
    BAD32(&b, 0, 2, "left over");
    BAD32(&b, 4 + 16, PROTO_MAX_LOGPROBS + 1, "cap");
    BAD32(&b, 4 + 16, 0xffffffffu, "cap");
    BAD32(&b, 4 + 16, 4, "top");              /* one pair more than present */
    BAD32(&b, 4 + 8, 0x3f800000u, "logprob"); /* +1 */
    BAD32(&b, 4 + 8, 0x7fc00000u, "logprob"); /* NaN */
    BAD32(&b, 4 + 4, (uint32_t)-3, "token id");
    BAD32(&b, 24, (uint32_t)-2, "top 0");
    BAD32(&b, 48 + 4, 17, "error"); /* an error item with a token */
    BAD32(&b, 48 + 12, 3, "error"); /* positive error code */
    BAD32(&b, 4, PROTO_SEQ_NONE, "reserved seq id");
    /* an empty acknowledgement is valid */
    t.n = 0;
    CHECK_INT(proto_encode_tokens(&b, &route, &t, err, sizeof(err)), 0);
    CHECK_INT(dec(b.data, b.len, &m), 0);
    CHECK_INT(m.tokens.n, 0);
    /* encoder refusals */
    t.n = 3;
    it[0].n_top = PROTO_MAX_LOGPROBS + 1;
    CHECK_INT(proto_encode_tokens(&b, &route, &t, err, sizeof(err)), BT_EINVAL);
    it[0].n_top = 3;
    it[1].token = 3;
    CHECK_INT(proto_encode_tokens(&b, &route, &t, err, sizeof(err)), BT_EINVAL);
    proto_buf_free(&b);
    proto_msg_free(&m);
}

/* Random corruption of valid messages (checksums fixed afterwards, so the payload parsers see
 * it): never a crash (ASan/UBSan), always 0 or BT_EFORMAT. */
static void test_mutations(void)
{
    enum { NE = 4 };
    struct proto_buf msgs[4] = {{0}};
    struct proto_msg m = {0};
    struct proto_token tok[5];
    struct proto_seq seq[2];
    float rows[2 * NE];
    struct proto_forward f;
    make_forward(&f, tok, seq, rows, NE);
    CHECK_INT(proto_encode_forward(&msgs[0], &route, &f, err, sizeof(err)), 0);
    struct proto_handshake h;
    proto_handshake_local(&h);
    CHECK_INT(proto_encode_handshake(&msgs[1], &route, &h, err, sizeof(err)), 0);
    struct proto_top top[2] = {{5, -0.1f}, {9, -2.5f}};
    struct proto_sampled it[2] = {{.seq_id = 4, .token = 5, .n_top = 2, .top = top},
                                  {.seq_id = 1, .token = 7}};
    struct proto_tokens t = {.n = 2, .items = it};
    CHECK_INT(proto_encode_tokens(&msgs[2], &route, &t, err, sizeof(err)), 0);
    struct proto_error e = {.seq_id = 1, .code = BT_EINVAL, .message = "bad"};
    CHECK_INT(proto_encode_error(&msgs[3], &route, &e, err, sizeof(err)), 0);
    uint32_t seed = 12345;
    int ok = 0, bad = 0, other = 0;
    uint8_t c[1024];
    for (int iter = 0; iter < 4000; iter++) {
        struct proto_buf *b = &msgs[iter % 4];
        size_t len = b->len;
        memcpy(c, b->data, len);
        int flips = 1 + iter % 3;
        for (int k = 0; k < flips; k++) {
            seed = seed * 1103515245u + 12345u;
            size_t pos = PROTO_HDR_SIZE + (seed >> 8) % (len - PROTO_HDR_SIZE);
            seed = seed * 1103515245u + 12345u;
            c[pos] = (iter & 4) ? (uint8_t)(seed >> 16) : (uint8_t)(c[pos] ^ (1u << (seed % 8)));
        }
        if (iter % 7 == 0) len -= (seed >> 4) % (len - PROTO_HDR_SIZE) + 1; /* truncate */
        refix(c, len);
        int rc = dec(c, len, &m);
        if (rc == 0)
            ok++;
        else if (rc == BT_EFORMAT)
            bad++;
        else
            other++;
    }
    CHECK_INT(other, 0);
    CHECK(bad > 2000); /* most corruptions are caught */
    CHECK(ok + bad == 4000);
    for (int i = 0; i < 4; i++) proto_buf_free(&msgs[i]);
    proto_msg_free(&m);
}

/* proto_max_size is exact: the largest message of each kind, built here, has that size. */
static void test_max_size(void)
{
    const struct proto_sizes z = {
        .n_seq = 4, .n_ctx = 512, .max_batch = 40, .kv_type = 1, .n_blocks = 128};
    const uint32_t n_embd = 24;
    enum { MAXOPS = 37 };
    struct proto_kv_op ops[MAXOPS];
    for (int i = 0; i < MAXOPS; i++)
        ops[i] =
            (struct proto_kv_op){.kind = PROTO_KV_MAP, .seq = 1, .index = (uint32_t)i, .block = i};
    struct proto_buf b = {0};
    struct proto_token *tok = calloc(z.max_batch, sizeof(*tok));
    struct proto_seq *seqs = calloc(z.n_seq, sizeof(*seqs));
    struct proto_bias *bias = calloc((size_t)z.n_seq * PROTO_MAX_BIAS, sizeof(*bias));
    float *rows = calloc((size_t)z.max_batch * n_embd, sizeof(*rows));
    for (uint32_t i = 0; i < z.n_seq; i++) {
        seqs[i].seq_id = i;
        seqs[i].flags = PROTO_SEQ_RESET;
        seqs[i].sampling = (struct proto_sampling){.top_p = 1,
                                                   .repeat_penalty = 1,
                                                   .n_bias = PROTO_MAX_BIAS,
                                                   .bias = bias + (size_t)i * PROTO_MAX_BIAS};
    }
    for (uint32_t i = 0; i < z.max_batch; i++)
        tok[i] = (struct proto_token){
            .seq_id = i % z.n_seq, .pos = i, .token = 1, .flags = PROTO_TOK_ROW | PROTO_TOK_LOGITS};
    struct proto_forward fw = {.n_tokens = z.max_batch,
                               .n_seqs = z.n_seq,
                               .n_embd = n_embd,
                               .n_rows = z.max_batch,
                               .n_ops = MAXOPS,
                               .ops = ops,
                               .tokens = tok,
                               .seqs = seqs,
                               .rows = rows};
    CHECK_INT(proto_encode_forward(&b, &route, &fw, err, sizeof(err)), 0);
    CHECK_INT(b.len, proto_max_size(PROTO_OP_FORWARD, &z, n_embd, MAXOPS));
    /* the bias entries count: the cap of version 2 left them out */
    CHECK(proto_max_size(PROTO_OP_FORWARD, &z, n_embd, MAXOPS) >
          PROTO_HDR_SIZE + (size_t)z.n_seq * PROTO_MAX_BIAS * 8);

    struct proto_sampled items[4];
    struct proto_top top[PROTO_MAX_LOGPROBS] = {{0}};
    for (uint32_t i = 0; i < z.n_seq; i++)
        items[i] = (struct proto_sampled){
            .seq_id = i, .token = 1, .logprob = -1, .n_top = PROTO_MAX_LOGPROBS, .top = top};
    struct proto_tokens t = {.n = z.n_seq, .items = items};
    CHECK_INT(proto_encode_tokens(&b, &route, &t, err, sizeof(err)), 0);
    CHECK_INT(b.len, proto_max_size(PROTO_OP_TOKENS, &z, n_embd, MAXOPS));

    struct proto_error e = {.seq_id = 1, .code = BT_EINVAL};
    memset(e.message, 'x', PROTO_ERRMSG_MAX);
    CHECK_INT(proto_encode_error(&b, &route, &e, err, sizeof(err)), 0);
    CHECK_INT(b.len, proto_max_size(PROTO_OP_ERROR, &z, n_embd, MAXOPS));

    struct proto_handshake h;
    proto_handshake_local(&h);
    memset(h.build_id, 'b', PROTO_BUILD_ID_MAX);
    memset(h.backend, 'c', PROTO_BACKEND_MAX);
    memset(h.hostname, 'h', PROTO_HOST_MAX);
    h.build_id[PROTO_BUILD_ID_MAX] = h.backend[PROTO_BACKEND_MAX] = h.hostname[PROTO_HOST_MAX] = 0;
    CHECK_INT(proto_encode_handshake(&b, &route, &h, err, sizeof(err)), 0);
    CHECK_INT(b.len, proto_max_size(PROTO_OP_HANDSHAKE, &z, n_embd, MAXOPS));

    struct proto_heartbeat hb = {.nonce = 1, .state = PROTO_STATE_READY, .progress = 1};
    CHECK_INT(proto_encode_heartbeat(&b, &route, PROTO_OP_HEARTBEAT, &hb, err, sizeof(err)), 0);
    CHECK_INT(b.len, proto_max_size(PROTO_OP_HEARTBEAT, &z, n_embd, MAXOPS));
    struct proto_stats st = {0};
    CHECK_INT(proto_encode_stats(&b, &route, &st, err, sizeof(err)), 0);
    CHECK_INT(b.len, proto_max_size(PROTO_OP_STATS, &z, n_embd, MAXOPS));
    struct proto_shutdown sd = {PROTO_SHUTDOWN_NORMAL};
    CHECK_INT(proto_encode_shutdown(&b, &route, &sd, err, sizeof(err)), 0);
    CHECK_INT(b.len, proto_max_size(PROTO_OP_SHUTDOWN, &z, n_embd, MAXOPS));
    CHECK_INT(proto_max_size(0, &z, n_embd, MAXOPS), 0);
    CHECK_INT(proto_max_size(PROTO_OP_COUNT, &z, n_embd, MAXOPS), 0);
    CHECK_INT(proto_max_msg(&z, n_embd, MAXOPS),
              proto_max_size(PROTO_OP_FORWARD, &z, n_embd, MAXOPS));
    free(tok);
    free(seqs);
    free(bias);
    free(rows);
    proto_buf_free(&b);
}

int main(void)
{
    test_crc();
    test_max_size();
    test_header();
    test_handshake();
    test_small();
    test_forward();
    test_tokens();
    test_mutations();
    CHECK_STR(proto_op_name(PROTO_OP_FORWARD), "FORWARD");
    CHECK_STR(proto_op_name(0), "unknown");
    CHECK_STR(proto_op_name(200), "unknown");
    return t_done();
}
