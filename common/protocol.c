/* protocol: encoders and hostile-input decoders of baton's wire format (see protocol.h and
 * docs/protocol.md). */
#include "protocol.h"

#include "log.h"
#include "version.h"

#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

/* ---- CRC-32C ------------------------------------------------------------------------------ */

/* Reflected polynomial 0x82f63b78, one entry per byte value. */
static const uint32_t crc_table[256] = {
    0x00000000u, 0xf26b8303u, 0xe13b70f7u, 0x1350f3f4u, 0xc79a971fu, 0x35f1141cu, 0x26a1e7e8u,
    0xd4ca64ebu, 0x8ad958cfu, 0x78b2dbccu, 0x6be22838u, 0x9989ab3bu, 0x4d43cfd0u, 0xbf284cd3u,
    0xac78bf27u, 0x5e133c24u, 0x105ec76fu, 0xe235446cu, 0xf165b798u, 0x030e349bu, 0xd7c45070u,
    0x25afd373u, 0x36ff2087u, 0xc494a384u, 0x9a879fa0u, 0x68ec1ca3u, 0x7bbcef57u, 0x89d76c54u,
    0x5d1d08bfu, 0xaf768bbcu, 0xbc267848u, 0x4e4dfb4bu, 0x20bd8edeu, 0xd2d60dddu, 0xc186fe29u,
    0x33ed7d2au, 0xe72719c1u, 0x154c9ac2u, 0x061c6936u, 0xf477ea35u, 0xaa64d611u, 0x580f5512u,
    0x4b5fa6e6u, 0xb93425e5u, 0x6dfe410eu, 0x9f95c20du, 0x8cc531f9u, 0x7eaeb2fau, 0x30e349b1u,
    0xc288cab2u, 0xd1d83946u, 0x23b3ba45u, 0xf779deaeu, 0x05125dadu, 0x1642ae59u, 0xe4292d5au,
    0xba3a117eu, 0x4851927du, 0x5b016189u, 0xa96ae28au, 0x7da08661u, 0x8fcb0562u, 0x9c9bf696u,
    0x6ef07595u, 0x417b1dbcu, 0xb3109ebfu, 0xa0406d4bu, 0x522bee48u, 0x86e18aa3u, 0x748a09a0u,
    0x67dafa54u, 0x95b17957u, 0xcba24573u, 0x39c9c670u, 0x2a993584u, 0xd8f2b687u, 0x0c38d26cu,
    0xfe53516fu, 0xed03a29bu, 0x1f682198u, 0x5125dad3u, 0xa34e59d0u, 0xb01eaa24u, 0x42752927u,
    0x96bf4dccu, 0x64d4cecfu, 0x77843d3bu, 0x85efbe38u, 0xdbfc821cu, 0x2997011fu, 0x3ac7f2ebu,
    0xc8ac71e8u, 0x1c661503u, 0xee0d9600u, 0xfd5d65f4u, 0x0f36e6f7u, 0x61c69362u, 0x93ad1061u,
    0x80fde395u, 0x72966096u, 0xa65c047du, 0x5437877eu, 0x4767748au, 0xb50cf789u, 0xeb1fcbadu,
    0x197448aeu, 0x0a24bb5au, 0xf84f3859u, 0x2c855cb2u, 0xdeeedfb1u, 0xcdbe2c45u, 0x3fd5af46u,
    0x7198540du, 0x83f3d70eu, 0x90a324fau, 0x62c8a7f9u, 0xb602c312u, 0x44694011u, 0x5739b3e5u,
    0xa55230e6u, 0xfb410cc2u, 0x092a8fc1u, 0x1a7a7c35u, 0xe811ff36u, 0x3cdb9bddu, 0xceb018deu,
    0xdde0eb2au, 0x2f8b6829u, 0x82f63b78u, 0x709db87bu, 0x63cd4b8fu, 0x91a6c88cu, 0x456cac67u,
    0xb7072f64u, 0xa457dc90u, 0x563c5f93u, 0x082f63b7u, 0xfa44e0b4u, 0xe9141340u, 0x1b7f9043u,
    0xcfb5f4a8u, 0x3dde77abu, 0x2e8e845fu, 0xdce5075cu, 0x92a8fc17u, 0x60c37f14u, 0x73938ce0u,
    0x81f80fe3u, 0x55326b08u, 0xa759e80bu, 0xb4091bffu, 0x466298fcu, 0x1871a4d8u, 0xea1a27dbu,
    0xf94ad42fu, 0x0b21572cu, 0xdfeb33c7u, 0x2d80b0c4u, 0x3ed04330u, 0xccbbc033u, 0xa24bb5a6u,
    0x502036a5u, 0x4370c551u, 0xb11b4652u, 0x65d122b9u, 0x97baa1bau, 0x84ea524eu, 0x7681d14du,
    0x2892ed69u, 0xdaf96e6au, 0xc9a99d9eu, 0x3bc21e9du, 0xef087a76u, 0x1d63f975u, 0x0e330a81u,
    0xfc588982u, 0xb21572c9u, 0x407ef1cau, 0x532e023eu, 0xa145813du, 0x758fe5d6u, 0x87e466d5u,
    0x94b49521u, 0x66df1622u, 0x38cc2a06u, 0xcaa7a905u, 0xd9f75af1u, 0x2b9cd9f2u, 0xff56bd19u,
    0x0d3d3e1au, 0x1e6dcdeeu, 0xec064eedu, 0xc38d26c4u, 0x31e6a5c7u, 0x22b65633u, 0xd0ddd530u,
    0x0417b1dbu, 0xf67c32d8u, 0xe52cc12cu, 0x1747422fu, 0x49547e0bu, 0xbb3ffd08u, 0xa86f0efcu,
    0x5a048dffu, 0x8ecee914u, 0x7ca56a17u, 0x6ff599e3u, 0x9d9e1ae0u, 0xd3d3e1abu, 0x21b862a8u,
    0x32e8915cu, 0xc083125fu, 0x144976b4u, 0xe622f5b7u, 0xf5720643u, 0x07198540u, 0x590ab964u,
    0xab613a67u, 0xb831c993u, 0x4a5a4a90u, 0x9e902e7bu, 0x6cfbad78u, 0x7fab5e8cu, 0x8dc0dd8fu,
    0xe330a81au, 0x115b2b19u, 0x020bd8edu, 0xf0605beeu, 0x24aa3f05u, 0xd6c1bc06u, 0xc5914ff2u,
    0x37faccf1u, 0x69e9f0d5u, 0x9b8273d6u, 0x88d28022u, 0x7ab90321u, 0xae7367cau, 0x5c18e4c9u,
    0x4f48173du, 0xbd23943eu, 0xf36e6f75u, 0x0105ec76u, 0x12551f82u, 0xe03e9c81u, 0x34f4f86au,
    0xc69f7b69u, 0xd5cf889du, 0x27a40b9eu, 0x79b737bau, 0x8bdcb4b9u, 0x988c474du, 0x6ae7c44eu,
    0xbe2da0a5u, 0x4c4623a6u, 0x5f16d052u, 0xad7d5351u,
};

static uint32_t crc_sw(uint32_t c, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) c = crc_table[(c ^ p[i]) & 0xff] ^ (c >> 8);
    return c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t c, const uint8_t *p, size_t n)
{
    uint64_t c64 = c;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8); /* x86 is little-endian: the same bytes the table loop would see */
        c64 = _mm_crc32_u64(c64, v);
        p += 8;
        n -= 8;
    }
    c = (uint32_t)c64;
    while (n--) c = _mm_crc32_u8(c, *p++);
    return c;
}
#endif

uint32_t proto_crc32c(uint32_t crc, const void *p, size_t n)
{
    uint32_t c = ~crc;
#if defined(__x86_64__)
    if (__builtin_cpu_supports("sse4.2")) return ~crc_hw(c, p, n);
#endif
    return ~crc_sw(c, p, n);
}

/* ---- little-endian bytes ------------------------------------------------------------------ */

static inline uint16_t ld16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (uint16_t)p[1] << 8);
}

static inline uint32_t ld32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t ld64(const uint8_t *p)
{
    return (uint64_t)ld32(p) | (uint64_t)ld32(p + 4) << 32;
}

static inline void st16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static inline void st32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static inline void st64(uint8_t *p, uint64_t v)
{
    st32(p, (uint32_t)v);
    st32(p + 4, (uint32_t)(v >> 32));
}

static inline uint32_t f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Reader over a payload: every read is preceded by rd_has() on the bytes it needs. */
struct rd {
    const uint8_t *p;
    size_t n, off;
};

static inline bool rd_has(const struct rd *r, size_t k)
{
    return k <= r->n - r->off;
}
static inline uint32_t rd32(struct rd *r)
{
    uint32_t v = ld32(r->p + r->off);
    r->off += 4;
    return v;
}
static inline uint64_t rd64(struct rd *r)
{
    uint64_t v = ld64(r->p + r->off);
    r->off += 8;
    return v;
}
static inline float rdf(struct rd *r)
{
    return u2f(rd32(r));
}

/* Writer into a buffer already sized for the whole message. */
struct wr {
    uint8_t *p;
    size_t off;
};

static inline void wr16(struct wr *w, uint16_t v)
{
    st16(w->p + w->off, v);
    w->off += 2;
}
static inline void wr32(struct wr *w, uint32_t v)
{
    st32(w->p + w->off, v);
    w->off += 4;
}
static inline void wr64(struct wr *w, uint64_t v)
{
    st64(w->p + w->off, v);
    w->off += 8;
}
static inline void wrf(struct wr *w, float f)
{
    wr32(w, f2u(f));
}

/* ---- buffers and messages ----------------------------------------------------------------- */

int proto_buf_reserve(struct proto_buf *b, size_t cap)
{
    if (cap <= b->cap) return BT_OK;
    size_t ncap = b->cap ? b->cap : 256;
    while (ncap < cap) ncap = ncap > SIZE_MAX / 2 ? cap : ncap * 2;
    uint8_t *d = realloc(b->data, ncap);
    if (!d) return BT_ENOMEM;
    b->data = d;
    b->cap = ncap;
    return BT_OK;
}

void proto_buf_free(struct proto_buf *b)
{
    if (!b) return;
    free(b->data);
    memset(b, 0, sizeof(*b));
}

const char *proto_op_name(uint32_t op)
{
    static const char *names[PROTO_OP_COUNT] = {
        [PROTO_OP_HANDSHAKE] = "HANDSHAKE",
        [PROTO_OP_HEARTBEAT] = "HEARTBEAT",
        [PROTO_OP_HEARTBEAT_REPLY] = "HEARTBEAT_REPLY",
        [PROTO_OP_STATS_REQUEST] = "STATS_REQUEST",
        [PROTO_OP_STATS] = "STATS",
        [PROTO_OP_SHUTDOWN] = "SHUTDOWN",
        [PROTO_OP_FORWARD] = "FORWARD",
        [PROTO_OP_TOKENS] = "TOKENS",
        [PROTO_OP_ERROR] = "ERROR",
        [PROTO_OP_RESET] = "RESET",
    };
    return op < PROTO_OP_COUNT && names[op] ? names[op] : "unknown";
}

/* Size b for a message with `payload` bytes (plus `extra` spare bytes after it) and return a
 * writer positioned at the payload. */
static int msg_begin(struct proto_buf *b, size_t payload, size_t extra, struct wr *w, char *err,
                     size_t errsz)
{
    if (payload > PROTO_MAX_PAYLOAD)
        return bt_errf(err, errsz, BT_EINVAL, "payload of %zu bytes exceeds the cap of %u", payload,
                       PROTO_MAX_PAYLOAD);
    if (proto_buf_reserve(b, PROTO_HDR_SIZE + payload + extra) < 0)
        return bt_errf(err, errsz, BT_ENOMEM, "no memory for a %zu-byte message",
                       PROTO_HDR_SIZE + payload);
    b->len = PROTO_HDR_SIZE + payload;
    w->p = b->data;
    w->off = PROTO_HDR_SIZE;
    return BT_OK;
}

/* Write the header in front of the payload already in b. */
static void msg_finish(struct proto_buf *b, const struct proto_route *r, uint32_t op)
{
    uint8_t *h = b->data;
    uint32_t psize = (uint32_t)(b->len - PROTO_HDR_SIZE);
    st32(h + 0, PROTO_MAGIC);
    st16(h + 4, PROTO_VERSION);
    h[6] = (uint8_t)op;
    h[7] = 0;
    st32(h + 8, r->sender);
    st32(h + 12, psize);
    st64(h + 16, r->epoch);
    st64(h + 24, r->step);
    st32(h + 32, proto_crc32c(0, h + PROTO_HDR_SIZE, psize));
    st32(h + 36, proto_crc32c(0, h, 36));
}

static int route_check(const struct proto_route *r, char *err, size_t errsz)
{
    if (r->sender >= PROTO_MAX_RANKS)
        return bt_errf(err, errsz, BT_EINVAL, "sender rank %u out of range", r->sender);
    return BT_OK;
}

int proto_hdr_decode(const void *buf, size_t len, struct proto_hdr *h, char *err, size_t errsz)
{
    const uint8_t *p = buf;
    memset(h, 0, sizeof(*h));
    if (len < PROTO_HDR_SIZE)
        return bt_errf(err, errsz, BT_EFORMAT,
                       "message of %zu bytes is shorter than the %d-byte header", len,
                       PROTO_HDR_SIZE);
    h->magic = ld32(p);
    if (h->magic != PROTO_MAGIC)
        return bt_errf(err, errsz, BT_EFORMAT, "bad magic 0x%08x: not a baton message", h->magic);
    /* Magic and version are the two fields every protocol version keeps in place, so a peer
     * from another build gets this message rather than a checksum error. */
    h->version = ld16(p + 4);
    if (h->version != PROTO_VERSION)
        return bt_errf(err, errsz, BT_EFORMAT,
                       "protocol version %u, this build speaks version %d (mixed builds?)",
                       h->version, PROTO_VERSION);
    h->header_crc = ld32(p + 36);
    uint32_t crc = proto_crc32c(0, p, 36);
    if (crc != h->header_crc)
        return bt_errf(err, errsz, BT_EFORMAT, "header checksum 0x%08x, expected 0x%08x",
                       h->header_crc, crc);
    h->opcode = p[6];
    h->flags = p[7];
    h->sender = ld32(p + 8);
    h->payload_size = ld32(p + 12);
    h->epoch = ld64(p + 16);
    h->step = ld64(p + 24);
    h->payload_crc = ld32(p + 32);
    if (h->opcode == 0 || h->opcode >= PROTO_OP_COUNT)
        return bt_errf(err, errsz, BT_EFORMAT, "unknown opcode %u", h->opcode);
    if (h->flags != 0)
        return bt_errf(err, errsz, BT_EFORMAT, "%s: unknown header flags 0x%02x",
                       proto_op_name(h->opcode), h->flags);
    if (h->sender >= PROTO_MAX_RANKS)
        return bt_errf(err, errsz, BT_EFORMAT, "%s: sender rank %u out of range",
                       proto_op_name(h->opcode), h->sender);
    if (h->payload_size > PROTO_MAX_PAYLOAD)
        return bt_errf(err, errsz, BT_EFORMAT, "%s: payload size %u exceeds the cap of %u",
                       proto_op_name(h->opcode), h->payload_size, PROTO_MAX_PAYLOAD);
    if (h->payload_size != len - PROTO_HDR_SIZE)
        return bt_errf(err, errsz, BT_EFORMAT, "%s: header says %u payload bytes, %zu arrived",
                       proto_op_name(h->opcode), h->payload_size, len - PROTO_HDR_SIZE);
    crc = proto_crc32c(0, p + PROTO_HDR_SIZE, h->payload_size);
    if (crc != h->payload_crc)
        return bt_errf(err, errsz, BT_EFORMAT, "%s: payload checksum 0x%08x, expected 0x%08x",
                       proto_op_name(h->opcode), h->payload_crc, crc);
    return BT_OK;
}

/* ---- shared value checks (encoder: BT_EINVAL, decoder: BT_EFORMAT) ------------------------ */

/* Printable text: no control bytes (logs and JSON stay clean); UTF-8 passes through. */
static bool text_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f) return false;
    }
    return true;
}

static bool in_range(float v, float lo, float hi)
{
    return isfinite(v) && v >= lo && v <= hi;
}

static int state_check(uint32_t state, float progress, int st, char *err, size_t errsz)
{
    if (state > PROTO_STATE_FAILED) return bt_errf(err, errsz, st, "unknown state %u", state);
    if (!in_range(progress, 0.0f, 1.0f))
        return bt_errf(err, errsz, st, "load progress %g outside 0..1", (double)progress);
    return BT_OK;
}

/* Write a string field: u16 length + bytes. */
static void wrstr(struct wr *w, const char *s, size_t n)
{
    wr16(w, (uint16_t)n);
    memcpy(w->p + w->off, s, n);
    w->off += n;
}

/* Read a string field of at most max bytes into out[max + 1]. */
static int rdstr(struct rd *r, char *out, size_t max, const char *what, char *err, size_t errsz)
{
    if (!rd_has(r, 2)) return bt_errf(err, errsz, BT_EFORMAT, "%s: length cut off", what);
    size_t n = ld16(r->p + r->off);
    r->off += 2;
    if (n > max)
        return bt_errf(err, errsz, BT_EFORMAT, "%s: %zu bytes, the cap is %zu", what, n, max);
    if (!rd_has(r, n))
        return bt_errf(err, errsz, BT_EFORMAT, "%s: %zu bytes announced, %zu left", what, n,
                       r->n - r->off);
    memcpy(out, r->p + r->off, n);
    out[n] = 0;
    r->off += n;
    if (!text_ok(out, n))
        return bt_errf(err, errsz, BT_EFORMAT, "%s: contains control bytes", what);
    return BT_OK;
}

static int rd_end(const struct rd *r, char *err, size_t errsz)
{
    if (r->off != r->n)
        return bt_errf(err, errsz, BT_EFORMAT, "%zu bytes left over after the payload",
                       r->n - r->off);
    return BT_OK;
}

/* ---- HANDSHAKE ---------------------------------------------------------------------------- */

#define HS_FIXED 64

static int handshake_check(const struct proto_handshake *h, int st, char *err, size_t errsz)
{
    int rc = state_check(h->state, h->progress, st, err, errsz);
    if (rc < 0) return rc;
    if (h->n_layers > PROTO_MAX_LAYERS)
        return bt_errf(err, errsz, st, "n_layers %u exceeds the cap of %d", h->n_layers,
                       PROTO_MAX_LAYERS);
    if (h->layer_begin > h->layer_end || h->layer_end > h->n_layers)
        return bt_errf(err, errsz, st, "layer range [%u, %u) does not fit %u layers",
                       h->layer_begin, h->layer_end, h->n_layers);
    const struct proto_sizes *z = &h->sizes;
    if (z->n_seq > PROTO_MAX_SEQS || z->n_ctx > PROTO_MAX_POS || z->max_batch > PROTO_MAX_TOKENS ||
        z->kv_type > 255 || z->n_blocks > PROTO_MAX_BLOCKS)
        return bt_errf(err, errsz, st,
                       "sizes out of range: %u sequences (at most %d), context %u (at most %u), "
                       "batch %u (at most %d), KV type %u, %u KV blocks (at most %u)",
                       z->n_seq, PROTO_MAX_SEQS, z->n_ctx, PROTO_MAX_POS, z->max_batch,
                       PROTO_MAX_TOKENS, z->kv_type, z->n_blocks, PROTO_MAX_BLOCKS);
    return BT_OK;
}

void proto_handshake_local(struct proto_handshake *h)
{
    memset(h, 0, sizeof(*h));
    h->proto_version = PROTO_VERSION;
    h->state = PROTO_STATE_LOADING;
    h->pid = (uint32_t)getpid();
    snprintf(h->build_id, sizeof(h->build_id), "%s", BATON_BUILD_ID);
    if (gethostname(h->hostname, sizeof(h->hostname)) != 0)
        snprintf(h->hostname, sizeof(h->hostname), "unknown");
    h->hostname[PROTO_HOST_MAX] = 0;
    for (char *c = h->hostname; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f) *c = '?';
    for (char *c = h->build_id; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f) *c = '?';
}

int proto_encode_handshake(struct proto_buf *b, const struct proto_route *r,
                           const struct proto_handshake *p, char *err, size_t errsz)
{
    const struct {
        const char *s;
        size_t max;
        const char *what;
    } strs[3] = {{p->build_id, PROTO_BUILD_ID_MAX, "build id"},
                 {p->backend, PROTO_BACKEND_MAX, "backend"},
                 {p->hostname, PROTO_HOST_MAX, "hostname"}};
    size_t len[3], size = HS_FIXED;
    struct wr w = {NULL, 0};
    int rc = route_check(r, err, errsz);
    if (rc < 0) return rc;
    rc = handshake_check(p, BT_EINVAL, err, errsz);
    if (rc < 0) return rc;
    for (int i = 0; i < 3; i++) {
        len[i] = strnlen(strs[i].s, strs[i].max + 1);
        if (len[i] > strs[i].max || !text_ok(strs[i].s, len[i]))
            return bt_errf(err, errsz, BT_EINVAL, "%s: longer than %zu bytes or not printable",
                           strs[i].what, strs[i].max);
        size += 2 + len[i];
    }
    rc = msg_begin(b, size, 0, &w, err, errsz);
    if (rc < 0) return rc;
    wr32(&w, p->proto_version);
    wr32(&w, p->state);
    wrf(&w, p->progress);
    wr32(&w, p->pid);
    wr64(&w, p->model_id);
    wr64(&w, p->model_size);
    wr32(&w, p->layer_begin);
    wr32(&w, p->layer_end);
    wr32(&w, p->n_layers);
    wr32(&w, p->sizes.n_seq);
    wr32(&w, p->sizes.n_ctx);
    wr32(&w, p->sizes.max_batch);
    wr32(&w, p->sizes.kv_type);
    wr32(&w, p->sizes.n_blocks);
    for (int i = 0; i < 3; i++) wrstr(&w, strs[i].s, len[i]);
    msg_finish(b, r, PROTO_OP_HANDSHAKE);
    return BT_OK;
}

int proto_decode_handshake(const uint8_t *p, size_t n, struct proto_handshake *out, char *err,
                           size_t errsz)
{
    struct rd r = {p, n, 0};
    int rc;
    memset(out, 0, sizeof(*out));
    if (!rd_has(&r, HS_FIXED))
        return bt_errf(err, errsz, BT_EFORMAT, "%zu bytes, at least %d expected", n, HS_FIXED);
    out->proto_version = rd32(&r);
    out->state = rd32(&r);
    out->progress = rdf(&r);
    out->pid = rd32(&r);
    out->model_id = rd64(&r);
    out->model_size = rd64(&r);
    out->layer_begin = rd32(&r);
    out->layer_end = rd32(&r);
    out->n_layers = rd32(&r);
    out->sizes.n_seq = rd32(&r);
    out->sizes.n_ctx = rd32(&r);
    out->sizes.max_batch = rd32(&r);
    out->sizes.kv_type = rd32(&r);
    out->sizes.n_blocks = rd32(&r);
    if ((rc = rdstr(&r, out->build_id, PROTO_BUILD_ID_MAX, "build id", err, errsz)) < 0 ||
        (rc = rdstr(&r, out->backend, PROTO_BACKEND_MAX, "backend", err, errsz)) < 0 ||
        (rc = rdstr(&r, out->hostname, PROTO_HOST_MAX, "hostname", err, errsz)) < 0 ||
        (rc = rd_end(&r, err, errsz)) < 0)
        return rc;
    return handshake_check(out, BT_EFORMAT, err, errsz);
}

/* ---- HEARTBEAT, STATS, SHUTDOWN ----------------------------------------------------------- */

#define HB_SIZE    16
#define STATS_SIZE 80

int proto_encode_heartbeat(struct proto_buf *b, const struct proto_route *r, uint32_t op,
                           const struct proto_heartbeat *p, char *err, size_t errsz)
{
    struct wr w = {NULL, 0};
    int rc = route_check(r, err, errsz);
    if (rc < 0) return rc;
    if (op != PROTO_OP_HEARTBEAT && op != PROTO_OP_HEARTBEAT_REPLY)
        return bt_errf(err, errsz, BT_EINVAL, "opcode %u is not a heartbeat", op);
    if ((rc = state_check(p->state, p->progress, BT_EINVAL, err, errsz)) < 0) return rc;
    if ((rc = msg_begin(b, HB_SIZE, 0, &w, err, errsz)) < 0) return rc;
    wr64(&w, p->nonce);
    wr32(&w, p->state);
    wrf(&w, p->progress);
    msg_finish(b, r, op);
    return BT_OK;
}

int proto_decode_heartbeat(const uint8_t *p, size_t n, struct proto_heartbeat *out, char *err,
                           size_t errsz)
{
    struct rd r = {p, n, 0};
    memset(out, 0, sizeof(*out));
    if (n != HB_SIZE) return bt_errf(err, errsz, BT_EFORMAT, "%zu bytes, %d expected", n, HB_SIZE);
    out->nonce = rd64(&r);
    out->state = rd32(&r);
    out->progress = rdf(&r);
    return state_check(out->state, out->progress, BT_EFORMAT, err, errsz);
}

int proto_encode_stats_request(struct proto_buf *b, const struct proto_route *r, char *err,
                               size_t errsz)
{
    struct wr w = {NULL, 0};
    int rc = route_check(r, err, errsz);
    if (rc < 0) return rc;
    if ((rc = msg_begin(b, 0, 0, &w, err, errsz)) < 0) return rc;
    msg_finish(b, r, PROTO_OP_STATS_REQUEST);
    return BT_OK;
}

static int stats_check(const struct proto_stats *s, int st, char *err, size_t errsz)
{
    if (s->kv_used > s->kv_size)
        return bt_errf(err, errsz, st, "kv_used %" PRIu64 " > kv_size %" PRIu64, s->kv_used,
                       s->kv_size);
    return BT_OK;
}

int proto_encode_stats(struct proto_buf *b, const struct proto_route *r,
                       const struct proto_stats *p, char *err, size_t errsz)
{
    struct wr w = {NULL, 0};
    int rc = route_check(r, err, errsz);
    if (rc < 0) return rc;
    if ((rc = stats_check(p, BT_EINVAL, err, errsz)) < 0) return rc;
    if ((rc = msg_begin(b, STATS_SIZE, 0, &w, err, errsz)) < 0) return rc;
    wr64(&w, p->last_step_ns);
    wr64(&w, p->total_step_ns);
    wr64(&w, p->n_steps);
    wr64(&w, p->n_tokens);
    wr64(&w, p->n_dropped);
    wr64(&w, p->n_bad);
    wr64(&w, p->n_errors);
    wr64(&w, p->kv_used);
    wr64(&w, p->kv_size);
    wr64(&w, p->rss_bytes);
    msg_finish(b, r, PROTO_OP_STATS);
    return BT_OK;
}

int proto_decode_stats(const uint8_t *p, size_t n, struct proto_stats *out, char *err, size_t errsz)
{
    struct rd r = {p, n, 0};
    memset(out, 0, sizeof(*out));
    if (n != STATS_SIZE)
        return bt_errf(err, errsz, BT_EFORMAT, "%zu bytes, %d expected", n, STATS_SIZE);
    out->last_step_ns = rd64(&r);
    out->total_step_ns = rd64(&r);
    out->n_steps = rd64(&r);
    out->n_tokens = rd64(&r);
    out->n_dropped = rd64(&r);
    out->n_bad = rd64(&r);
    out->n_errors = rd64(&r);
    out->kv_used = rd64(&r);
    out->kv_size = rd64(&r);
    out->rss_bytes = rd64(&r);
    return stats_check(out, BT_EFORMAT, err, errsz);
}

int proto_encode_shutdown(struct proto_buf *b, const struct proto_route *r,
                          const struct proto_shutdown *p, char *err, size_t errsz)
{
    struct wr w = {NULL, 0};
    int rc = route_check(r, err, errsz);
    if (rc < 0) return rc;
    if (p->reason > PROTO_SHUTDOWN_RESTART)
        return bt_errf(err, errsz, BT_EINVAL, "unknown shutdown reason %u", p->reason);
    if ((rc = msg_begin(b, 4, 0, &w, err, errsz)) < 0) return rc;
    wr32(&w, p->reason);
    msg_finish(b, r, PROTO_OP_SHUTDOWN);
    return BT_OK;
}

int proto_decode_shutdown(const uint8_t *p, size_t n, struct proto_shutdown *out, char *err,
                          size_t errsz)
{
    memset(out, 0, sizeof(*out));
    if (n != 4) return bt_errf(err, errsz, BT_EFORMAT, "%zu bytes, 4 expected", n);
    out->reason = ld32(p);
    if (out->reason > PROTO_SHUTDOWN_RESTART)
        return bt_errf(err, errsz, BT_EFORMAT, "unknown shutdown reason %u", out->reason);
    return BT_OK;
}

/* ---- FORWARD ------------------------------------------------------------------------------ */

#define FWD_FIXED 20
#define FWD_TOK   16
#define FWD_OP    24
#define FWD_SEQ   56 /* fixed part; then n_bias (token, bias) pairs of 8 bytes */
#define FWD_BIAS  8

static int sampling_check(const struct proto_sampling *s, int st, char *err, size_t errsz)
{
    if (!in_range(s->temperature, 0.0f, 100.0f))
        return bt_errf(err, errsz, st, "temperature %g outside [0, 100]", (double)s->temperature);
    if (s->top_k < 0) return bt_errf(err, errsz, st, "top_k %d is negative", s->top_k);
    if (!in_range(s->top_p, 0.0f, 1.0f))
        return bt_errf(err, errsz, st, "top_p %g outside [0, 1]", (double)s->top_p);
    if (!in_range(s->min_p, 0.0f, 1.0f))
        return bt_errf(err, errsz, st, "min_p %g outside [0, 1]", (double)s->min_p);
    if (!in_range(s->repeat_penalty, 0.0f, 100.0f) || s->repeat_penalty == 0.0f)
        return bt_errf(err, errsz, st, "repeat_penalty %g outside (0, 100]",
                       (double)s->repeat_penalty);
    if (s->repeat_last_n > PROTO_MAX_POS)
        return bt_errf(err, errsz, st, "repeat_last_n %u exceeds %u", s->repeat_last_n,
                       PROTO_MAX_POS);
    if (!in_range(s->presence_penalty, -100.0f, 100.0f))
        return bt_errf(err, errsz, st, "presence_penalty %g outside [-100, 100]",
                       (double)s->presence_penalty);
    if (!in_range(s->frequency_penalty, -100.0f, 100.0f))
        return bt_errf(err, errsz, st, "frequency_penalty %g outside [-100, 100]",
                       (double)s->frequency_penalty);
    if (s->n_logprobs > PROTO_MAX_LOGPROBS)
        return bt_errf(err, errsz, st, "n_logprobs %u exceeds %d", s->n_logprobs,
                       PROTO_MAX_LOGPROBS);
    if (s->n_bias > PROTO_MAX_BIAS)
        return bt_errf(err, errsz, st, "%u logit bias entries, at most %d", s->n_bias,
                       PROTO_MAX_BIAS);
    for (uint32_t i = 0; i < s->n_bias; i++) {
        const struct proto_bias *b = &s->bias[i];
        if (b->token < 0) return bt_errf(err, errsz, st, "logit bias %u: token id %d", i, b->token);
        if (b->bias != b->bias || (isinf(b->bias) && b->bias > 0))
            return bt_errf(err, errsz, st, "logit bias %u: value %g", i, (double)b->bias);
    }
    return BT_OK;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Find seq id `id` in the sorted keys (id << 32 | seq index); -1 if absent. */
static long key_find(const uint64_t *keys, uint32_t n, uint32_t id)
{
    uint32_t lo = 0, hi = n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        uint32_t k = (uint32_t)(keys[mid] >> 32);
        if (k == id) return (long)mid;
        if (k < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

#define KEY_SEEN 0x80000000u /* low word: seq index | seen-by-a-token bit */

/* The four counts of a FORWARD batch: checked before anything is sized from them. */
static int forward_counts(uint32_t nt, uint32_t ns, uint32_t ne, uint32_t nr, int st, char *err,
                          size_t errsz)
{
    if (nt == 0 || nt > PROTO_MAX_TOKENS)
        return bt_errf(err, errsz, st, "n_tokens %u outside 1..%d", nt, PROTO_MAX_TOKENS);
    if (ns == 0 || ns > PROTO_MAX_SEQS || ns > nt)
        return bt_errf(err, errsz, st, "n_seqs %u outside 1..min(n_tokens %u, %d)", ns, nt,
                       PROTO_MAX_SEQS);
    if (ne > PROTO_MAX_EMBD)
        return bt_errf(err, errsz, st, "n_embd %u exceeds %d", ne, PROTO_MAX_EMBD);
    if (nr > nt) return bt_errf(err, errsz, st, "n_rows %u > n_tokens %u", nr, nt);
    if ((nr == 0) != (ne == 0)) return bt_errf(err, errsz, st, "n_rows %u with n_embd %u", nr, ne);
    return BT_OK;
}

/* Every other rule of a FORWARD batch (counts already checked). keys: scratch for n_seqs
 * entries. When fill is set, tokens[i].seq_idx is written. */
static int forward_check(const struct proto_forward *f, struct proto_token *fill, uint64_t *keys,
                         int st, char *err, size_t errsz)
{
    uint32_t rows = 0;
    for (uint32_t i = 0; i < f->n_seqs; i++) {
        const struct proto_seq *s = &f->seqs[i];
        if (s->seq_id == PROTO_SEQ_NONE)
            return bt_errf(err, errsz, st, "sequence %u: reserved seq id", i);
        if (s->flags & ~(PROTO_SEQ_RESET | PROTO_SEQ_CLEAR_KV))
            return bt_errf(err, errsz, st, "sequence %u: unknown flags 0x%x", i, s->flags);
        int rc = sampling_check(&s->sampling, st, err, errsz);
        if (rc < 0) return rc;
        keys[i] = (uint64_t)s->seq_id << 32 | i;
    }
    qsort(keys, f->n_seqs, sizeof(*keys), cmp_u64);
    for (uint32_t i = 1; i < f->n_seqs; i++)
        if (keys[i] >> 32 == keys[i - 1] >> 32)
            return bt_errf(err, errsz, st, "seq id %u listed twice", (uint32_t)(keys[i] >> 32));
    for (uint32_t i = 0; i < f->n_tokens; i++) {
        const struct proto_token *t = &f->tokens[i];
        if (t->flags & ~(PROTO_TOK_ROW | PROTO_TOK_LOGITS | PROTO_TOK_PROMPT))
            return bt_errf(err, errsz, st, "token %u: unknown flags 0x%x", i, t->flags);
        if (t->pos >= PROTO_MAX_POS)
            return bt_errf(err, errsz, st, "token %u: position %u past %u", i, t->pos,
                           PROTO_MAX_POS);
        if (t->token < 0 && !(t->token == -1 && (t->flags & PROTO_TOK_ROW)))
            return bt_errf(err, errsz, st, "token %u: token id %d without an activation row", i,
                           t->token);
        rows += (t->flags & PROTO_TOK_ROW) != 0;
        long k = key_find(keys, f->n_seqs, t->seq_id);
        if (k < 0)
            return bt_errf(err, errsz, st, "token %u: seq id %u not in the sequence table", i,
                           t->seq_id);
        keys[k] |= KEY_SEEN;
        if (fill) fill[i].seq_idx = (uint32_t)keys[k] & ~KEY_SEEN;
    }
    if (rows != f->n_rows)
        return bt_errf(err, errsz, st, "%u tokens flagged with a row, n_rows is %u", rows,
                       f->n_rows);
    for (uint32_t i = 0; i < f->n_seqs; i++)
        if (!((uint32_t)keys[i] & KEY_SEEN))
            return bt_errf(err, errsz, st, "seq id %u has no token", (uint32_t)(keys[i] >> 32));
    return BT_OK;
}

static size_t forward_size(uint32_t nt, uint32_t ns, uint32_t nr, uint32_t ne, size_t nb,
                           uint32_t nops)
{
    /* all are bounded by the caps before this is called: no overflow in 64 bits */
    return FWD_FIXED + (size_t)nt * FWD_TOK + (size_t)nops * FWD_OP + (size_t)ns * FWD_SEQ +
           nb * FWD_BIAS + (size_t)nr * ne * 4;
}

/* The structure of a KV block operation (the ranges of a cache are the rank's to check). */
static int kv_op_check(const struct proto_kv_op *o, uint32_t i, int st, char *err, size_t errsz)
{
    bool ok = false;
    switch (o->kind) {
    case PROTO_KV_MAP:
        ok = o->seq < PROTO_MAX_SEQS && o->index < PROTO_MAX_POS && o->block >= -1 &&
             o->block < (int32_t)PROTO_MAX_BLOCKS && o->src == 0 && o->n == 0;
        break;
    case PROTO_KV_COPY:
        ok = o->seq == 0 && o->index == 0 && o->block >= 0 &&
             o->block < (int32_t)PROTO_MAX_BLOCKS && o->src < PROTO_MAX_BLOCKS && o->n <= 1024;
        break;
    case PROTO_KV_RESET:
        ok = o->seq < PROTO_MAX_SEQS && o->index == 0 && o->block == 0 && o->src == 0 &&
             o->n <= PROTO_MAX_POS;
        break;
    default:
        break;
    }
    if (ok) return BT_OK;
    return bt_errf(err, errsz, st, "KV operation %u: kind %u seq %u index %u block %d src %u n %u",
                   i, o->kind, o->seq, o->index, o->block, o->src, o->n);
}

static bool host_le(void)
{
    return __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__;
}

int proto_encode_forward(struct proto_buf *b, const struct proto_route *r,
                         const struct proto_forward *p, char *err, size_t errsz)
{
    struct wr w = {NULL, 0};
    int rc = route_check(r, err, errsz);
    if (rc < 0) return rc;
    rc = forward_counts(p->n_tokens, p->n_seqs, p->n_embd, p->n_rows, BT_EINVAL, err, errsz);
    if (rc < 0) return rc;
    if (p->n_ops > PROTO_MAX_KV_OPS)
        return bt_errf(err, errsz, BT_EINVAL, "%u KV operations, at most %u", p->n_ops,
                       PROTO_MAX_KV_OPS);
    for (uint32_t i = 0; i < p->n_ops; i++)
        if ((rc = kv_op_check(&p->ops[i], i, BT_EINVAL, err, errsz)) < 0) return rc;
    size_t nb = 0;
    for (uint32_t i = 0; i < p->n_seqs; i++) {
        if (p->seqs[i].sampling.n_bias > PROTO_MAX_BIAS)
            return bt_errf(err, errsz, BT_EINVAL, "sequence %u: %u logit bias entries, at most %d",
                           i, p->seqs[i].sampling.n_bias, PROTO_MAX_BIAS);
        nb += p->seqs[i].sampling.n_bias;
    }
    size_t size = forward_size(p->n_tokens, p->n_seqs, p->n_rows, p->n_embd, nb, p->n_ops);
    /* The sequence-id scratch lives in spare capacity after the message: no allocation per
     * step once the buffer has grown. */
    size_t pad = (8 - (PROTO_HDR_SIZE + size) % 8) % 8;
    rc = msg_begin(b, size, pad + (size_t)p->n_seqs * 8, &w, err, errsz);
    if (rc < 0) return rc;
    uint64_t *keys = (uint64_t *)(void *)(b->data + PROTO_HDR_SIZE + size + pad);
    if ((rc = forward_check(p, NULL, keys, BT_EINVAL, err, errsz)) < 0) {
        b->len = 0;
        return rc;
    }
    wr32(&w, p->n_tokens);
    wr32(&w, p->n_seqs);
    wr32(&w, p->n_embd);
    wr32(&w, p->n_rows);
    wr32(&w, p->n_ops);
    for (uint32_t i = 0; i < p->n_tokens; i++) {
        const struct proto_token *t = &p->tokens[i];
        wr32(&w, t->seq_id);
        wr32(&w, t->pos);
        wr32(&w, (uint32_t)t->token);
        wr32(&w, t->flags);
    }
    for (uint32_t i = 0; i < p->n_ops; i++) {
        const struct proto_kv_op *o = &p->ops[i];
        wr32(&w, o->kind);
        wr32(&w, o->seq);
        wr32(&w, o->index);
        wr32(&w, (uint32_t)o->block);
        wr32(&w, o->src);
        wr32(&w, o->n);
    }
    for (uint32_t i = 0; i < p->n_seqs; i++) {
        const struct proto_seq *s = &p->seqs[i];
        const struct proto_sampling *sp = &s->sampling;
        wr32(&w, s->seq_id);
        wr32(&w, s->flags);
        wrf(&w, sp->temperature);
        wr32(&w, (uint32_t)sp->top_k);
        wrf(&w, sp->top_p);
        wrf(&w, sp->min_p);
        wrf(&w, sp->repeat_penalty);
        wr32(&w, sp->repeat_last_n);
        wrf(&w, sp->presence_penalty);
        wrf(&w, sp->frequency_penalty);
        wr64(&w, sp->seed);
        wr32(&w, sp->n_logprobs);
        wr32(&w, sp->n_bias);
        for (uint32_t k = 0; k < sp->n_bias; k++) {
            wr32(&w, (uint32_t)sp->bias[k].token);
            wrf(&w, sp->bias[k].bias);
        }
    }
    size_t nf = (size_t)p->n_rows * p->n_embd;
    if (host_le()) {
        if (nf) memcpy(w.p + w.off, p->rows, nf * 4); /* f32 array: same bytes on LE hosts */
        w.off += nf * 4;
    } else {
        for (size_t i = 0; i < nf; i++) wrf(&w, p->rows[i]);
    }
    msg_finish(b, r, PROTO_OP_FORWARD);
    return BT_OK;
}

/* Grow an owned array to at least n elements of size sz. */
static int grow(void **arr, size_t *cap, size_t n, size_t sz)
{
    if (n <= *cap) return BT_OK;
    void *p = realloc(*arr, n * sz);
    if (!p) return BT_ENOMEM;
    *arr = p;
    *cap = n;
    return BT_OK;
}

int proto_decode_forward(const uint8_t *p, size_t n, struct proto_forward *out, char *err,
                         size_t errsz)
{
    struct rd r = {p, n, 0};
    struct proto_forward *f = out;
    f->n_tokens = f->n_seqs = f->n_embd = f->n_rows = f->n_ops = 0;
    f->tokens = NULL;
    f->seqs = NULL;
    f->rows = NULL;
    f->ops = NULL;
    if (!rd_has(&r, FWD_FIXED))
        return bt_errf(err, errsz, BT_EFORMAT, "%zu bytes, at least %d expected", n, FWD_FIXED);
    uint32_t nt = rd32(&r), ns = rd32(&r), ne = rd32(&r), nr = rd32(&r), no = rd32(&r);
    int rc = forward_counts(nt, ns, ne, nr, BT_EFORMAT, err, errsz);
    if (rc < 0) return rc;
    if (no > PROTO_MAX_KV_OPS)
        return bt_errf(err, errsz, BT_EFORMAT, "%u KV operations, at most %u", no,
                       PROTO_MAX_KV_OPS);
    size_t want = forward_size(nt, ns, nr, ne, 0, no); /* without the bias entries */
    if (want > n)
        return bt_errf(err, errsz, BT_EFORMAT,
                       "%u tokens, %u seqs, %u rows of %u need at least %zu bytes, the payload "
                       "has %zu",
                       nt, ns, nr, ne, want, n);
    /* the bias entries fill exactly what is left beyond the fixed parts; each sequence's count
     * is checked against that before anything is read */
    const size_t bias_room = (n - want) / FWD_BIAS;
    if ((n - want) % FWD_BIAS || bias_room > (size_t)ns * PROTO_MAX_BIAS)
        return bt_errf(err, errsz, BT_EFORMAT,
                       "%zu bytes beyond the fixed parts of a %u-sequence batch", n - want, ns);
    if (grow((void **)&f->bias_store, &f->bias_cap, bias_room ? bias_room : 1,
             sizeof(*f->bias_store)) < 0)
        return bt_errf(err, errsz, BT_ENOMEM, "no memory for %zu logit bias entries", bias_room);
    if (grow((void **)&f->tok_store, &f->tok_cap, nt, sizeof(*f->tok_store)) < 0 ||
        grow((void **)&f->seq_store, &f->seq_cap, ns, sizeof(*f->seq_store)) < 0 ||
        grow((void **)&f->id_scratch, &f->id_cap, ns, sizeof(*f->id_scratch)) < 0 ||
        grow((void **)&f->op_store, &f->op_cap, no ? no : 1, sizeof(*f->op_store)) < 0)
        return bt_errf(err, errsz, BT_ENOMEM, "no memory for a %u-token batch", nt);
    for (uint32_t i = 0; i < nt; i++) {
        struct proto_token *t = &f->tok_store[i];
        t->seq_id = rd32(&r);
        t->pos = rd32(&r);
        t->token = (int32_t)rd32(&r);
        t->flags = rd32(&r);
        t->seq_idx = 0;
    }
    for (uint32_t i = 0; i < no; i++) {
        struct proto_kv_op *o = &f->op_store[i];
        o->kind = rd32(&r);
        o->seq = rd32(&r);
        o->index = rd32(&r);
        o->block = (int32_t)rd32(&r);
        o->src = rd32(&r);
        o->n = rd32(&r);
        if ((rc = kv_op_check(o, i, BT_EFORMAT, err, errsz)) < 0) return rc;
    }
    size_t nb_read = 0;
    for (uint32_t i = 0; i < ns; i++) {
        struct proto_seq *s = &f->seq_store[i];
        struct proto_sampling *sp = &s->sampling;
        s->seq_id = rd32(&r);
        s->flags = rd32(&r);
        sp->temperature = rdf(&r);
        sp->top_k = (int32_t)rd32(&r);
        sp->top_p = rdf(&r);
        sp->min_p = rdf(&r);
        sp->repeat_penalty = rdf(&r);
        sp->repeat_last_n = rd32(&r);
        sp->presence_penalty = rdf(&r);
        sp->frequency_penalty = rdf(&r);
        sp->seed = rd64(&r);
        sp->n_logprobs = rd32(&r);
        sp->n_bias = rd32(&r);
        sp->bias = NULL;
        if (sp->n_bias > PROTO_MAX_BIAS || sp->n_bias > bias_room - nb_read)
            return bt_errf(err, errsz, BT_EFORMAT,
                           "sequence %u: %u logit bias entries, %zu bytes left for them", i,
                           sp->n_bias, (bias_room - nb_read) * FWD_BIAS);
        if (sp->n_bias) sp->bias = f->bias_store + nb_read;
        for (uint32_t k = 0; k < sp->n_bias; k++) {
            f->bias_store[nb_read + k].token = (int32_t)rd32(&r);
            f->bias_store[nb_read + k].bias = rdf(&r);
        }
        nb_read += sp->n_bias;
    }
    if (nb_read != bias_room)
        return bt_errf(err, errsz, BT_EFORMAT, "%zu bytes of logit bias entries, %zu used",
                       bias_room * FWD_BIAS, nb_read * FWD_BIAS);
    size_t nf = (size_t)nr * ne;
    const uint8_t *rp = p + r.off;
    if (nf && host_le() && ((uintptr_t)rp % _Alignof(float)) == 0) {
        f->rows = (const float *)(const void *)rp; /* borrowed from the message bytes */
    } else if (nf) {
        if (grow((void **)&f->row_store, &f->row_cap, nf, sizeof(float)) < 0)
            return bt_errf(err, errsz, BT_ENOMEM, "no memory for %u activation rows", nr);
        if (host_le())
            memcpy(f->row_store, rp, nf * 4);
        else
            for (size_t i = 0; i < nf; i++) f->row_store[i] = u2f(ld32(rp + i * 4));
        f->rows = f->row_store;
    }
    f->n_tokens = nt;
    f->n_seqs = ns;
    f->n_embd = ne;
    f->n_rows = nr;
    f->n_ops = no;
    f->ops = f->op_store;
    f->tokens = f->tok_store;
    f->seqs = f->seq_store;
    rc = forward_check(f, f->tok_store, f->id_scratch, BT_EFORMAT, err, errsz);
    if (rc < 0) {
        f->n_tokens = f->n_seqs = f->n_embd = f->n_rows = f->n_ops = 0;
        f->rows = NULL;
    }
    return rc;
}

void proto_forward_free(struct proto_forward *f)
{
    if (!f) return;
    free(f->tok_store);
    free(f->seq_store);
    free(f->row_store);
    free(f->id_scratch);
    free(f->bias_store);
    free(f->op_store);
    memset(f, 0, sizeof(*f));
}

/* ---- TOKENS ------------------------------------------------------------------------------- */

#define TOK_ITEM 20 /* seq id, token, logprob, error, n_top */
#define TOK_TOP  8

static int logprob_ok(float v)
{
    return isfinite(v) && v <= 0.0f;
}

static int sampled_check(const struct proto_sampled *s, uint32_t i, int st, char *err, size_t errsz)
{
    if (s->seq_id == PROTO_SEQ_NONE) return bt_errf(err, errsz, st, "item %u: reserved seq id", i);
    if (s->n_top > PROTO_MAX_LOGPROBS)
        return bt_errf(err, errsz, st, "item %u: %u top logprobs, the cap is %d", i, s->n_top,
                       PROTO_MAX_LOGPROBS);
    if (s->error != 0) {
        if (s->error > 0 || s->error < -1000 || s->token != -1 || s->n_top != 0)
            return bt_errf(err, errsz, st,
                           "item %u: error %d must be a negative status with token -1, no top", i,
                           s->error);
        return BT_OK;
    }
    if (s->token < 0) return bt_errf(err, errsz, st, "item %u: token id %d", i, s->token);
    if (!logprob_ok(s->logprob))
        return bt_errf(err, errsz, st, "item %u: logprob %g not finite and <= 0", i,
                       (double)s->logprob);
    for (uint32_t k = 0; k < s->n_top; k++)
        if (s->top[k].id < 0 || !logprob_ok(s->top[k].logprob))
            return bt_errf(err, errsz, st, "item %u: top %u: id %d logprob %g", i, k, s->top[k].id,
                           (double)s->top[k].logprob);
    return BT_OK;
}

int proto_encode_tokens(struct proto_buf *b, const struct proto_route *r,
                        const struct proto_tokens *p, char *err, size_t errsz)
{
    struct wr w = {NULL, 0};
    size_t size = 4;
    int rc = route_check(r, err, errsz);
    if (rc < 0) return rc;
    if (p->n > PROTO_MAX_SEQS)
        return bt_errf(err, errsz, BT_EINVAL, "%u items, the cap is %d", p->n, PROTO_MAX_SEQS);
    for (uint32_t i = 0; i < p->n; i++) {
        if ((rc = sampled_check(&p->items[i], i, BT_EINVAL, err, errsz)) < 0) return rc;
        size += TOK_ITEM + (size_t)p->items[i].n_top * TOK_TOP;
    }
    if ((rc = msg_begin(b, size, 0, &w, err, errsz)) < 0) return rc;
    wr32(&w, p->n);
    for (uint32_t i = 0; i < p->n; i++) {
        const struct proto_sampled *s = &p->items[i];
        wr32(&w, s->seq_id);
        wr32(&w, (uint32_t)s->token);
        wrf(&w, s->logprob);
        wr32(&w, (uint32_t)s->error);
        wr32(&w, s->n_top);
        for (uint32_t k = 0; k < s->n_top; k++) {
            wr32(&w, (uint32_t)s->top[k].id);
            wrf(&w, s->top[k].logprob);
        }
    }
    msg_finish(b, r, PROTO_OP_TOKENS);
    return BT_OK;
}

int proto_decode_tokens(const uint8_t *p, size_t n, struct proto_tokens *out, char *err,
                        size_t errsz)
{
    struct rd r = {p, n, 0};
    struct proto_tokens *t = out;
    t->n = 0;
    t->items = NULL;
    if (!rd_has(&r, 4)) return bt_errf(err, errsz, BT_EFORMAT, "%zu bytes, at least 4", n);
    uint32_t cnt = rd32(&r);
    if (cnt > PROTO_MAX_SEQS)
        return bt_errf(err, errsz, BT_EFORMAT, "%u items, the cap is %d", cnt, PROTO_MAX_SEQS);
    if ((size_t)cnt * TOK_ITEM > n - r.off)
        return bt_errf(err, errsz, BT_EFORMAT, "%u items need at least %zu bytes, %zu left", cnt,
                       (size_t)cnt * TOK_ITEM, n - r.off);
    /* every top pair takes 8 payload bytes: bounds their total before allocating */
    size_t max_top = (n - r.off - (size_t)cnt * TOK_ITEM) / TOK_TOP;
    if (grow((void **)&t->item_store, &t->item_cap, cnt ? cnt : 1, sizeof(*t->item_store)) < 0 ||
        grow((void **)&t->top_store, &t->top_cap, max_top ? max_top : 1, sizeof(*t->top_store)) < 0)
        return bt_errf(err, errsz, BT_ENOMEM, "no memory for %u items", cnt);
    size_t used = 0;
    for (uint32_t i = 0; i < cnt; i++) {
        struct proto_sampled *s = &t->item_store[i];
        if (!rd_has(&r, TOK_ITEM)) return bt_errf(err, errsz, BT_EFORMAT, "item %u cut off", i);
        s->seq_id = rd32(&r);
        s->token = (int32_t)rd32(&r);
        s->logprob = rdf(&r);
        s->error = (int32_t)rd32(&r);
        s->n_top = rd32(&r);
        if (s->n_top > PROTO_MAX_LOGPROBS)
            return bt_errf(err, errsz, BT_EFORMAT, "item %u: %u top logprobs, the cap is %d", i,
                           s->n_top, PROTO_MAX_LOGPROBS);
        if (!rd_has(&r, (size_t)s->n_top * TOK_TOP) || used + s->n_top > max_top)
            return bt_errf(err, errsz, BT_EFORMAT, "item %u: %u top logprobs cut off", i, s->n_top);
        struct proto_top *top = t->top_store + used;
        for (uint32_t k = 0; k < s->n_top; k++) {
            top[k].id = (int32_t)rd32(&r);
            top[k].logprob = rdf(&r);
        }
        s->top = top;
        used += s->n_top;
        int rc = sampled_check(s, i, BT_EFORMAT, err, errsz);
        if (rc < 0) return rc;
    }
    int rc = rd_end(&r, err, errsz);
    if (rc < 0) return rc;
    t->n = cnt;
    t->items = t->item_store;
    return BT_OK;
}

void proto_tokens_free(struct proto_tokens *t)
{
    if (!t) return;
    free(t->item_store);
    free(t->top_store);
    memset(t, 0, sizeof(*t));
}

/* ---- ERROR -------------------------------------------------------------------------------- */

#define ERR_FIXED 8

static int errcode_ok(int32_t c)
{
    return c < 0 && c >= -1000;
}

int proto_encode_error(struct proto_buf *b, const struct proto_route *r,
                       const struct proto_error *p, char *err, size_t errsz)
{
    struct wr w = {NULL, 0};
    int rc = route_check(r, err, errsz);
    if (rc < 0) return rc;
    if (!errcode_ok(p->code))
        return bt_errf(err, errsz, BT_EINVAL, "error code %d is not a negative status", p->code);
    /* Local text: truncated to the cap, control bytes (newlines) become spaces. */
    size_t len = strnlen(p->message, PROTO_ERRMSG_MAX);
    if ((rc = msg_begin(b, ERR_FIXED + 2 + len, 0, &w, err, errsz)) < 0) return rc;
    wr32(&w, p->seq_id);
    wr32(&w, (uint32_t)p->code);
    wr16(&w, (uint16_t)len);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p->message[i];
        w.p[w.off++] = c < 0x20 || c == 0x7f ? ' ' : c;
    }
    msg_finish(b, r, PROTO_OP_ERROR);
    return BT_OK;
}

int proto_decode_error(const uint8_t *p, size_t n, struct proto_error *out, char *err, size_t errsz)
{
    struct rd r = {p, n, 0};
    int rc;
    memset(out, 0, sizeof(*out));
    if (!rd_has(&r, ERR_FIXED))
        return bt_errf(err, errsz, BT_EFORMAT, "%zu bytes, at least %d expected", n, ERR_FIXED);
    out->seq_id = rd32(&r);
    out->code = (int32_t)rd32(&r);
    if (!errcode_ok(out->code))
        return bt_errf(err, errsz, BT_EFORMAT, "error code %d is not a negative status", out->code);
    if ((rc = rdstr(&r, out->message, PROTO_ERRMSG_MAX, "message", err, errsz)) < 0 ||
        (rc = rd_end(&r, err, errsz)) < 0)
        return rc;
    return BT_OK;
}

/* ---- RESET -------------------------------------------------------------------------------- */

static int reset_item_check(const struct proto_reset_item *it, uint32_t i, int st, char *err,
                            size_t errsz)
{
    if (it->seq_id == PROTO_SEQ_NONE) return bt_errf(err, errsz, st, "item %u: reserved seq id", i);
    if (it->flags == 0 || (it->flags & ~(PROTO_RESET_CLEAR_KV | PROTO_RESET_CANCEL)))
        return bt_errf(err, errsz, st, "item %u: flags 0x%x", i, it->flags);
    return BT_OK;
}

int proto_encode_reset(struct proto_buf *b, const struct proto_route *r,
                       const struct proto_reset *p, char *err, size_t errsz)
{
    struct wr w = {NULL, 0};
    int rc = route_check(r, err, errsz);
    if (rc < 0) return rc;
    if (p->n == 0 || p->n > PROTO_MAX_SEQS)
        return bt_errf(err, errsz, BT_EINVAL, "%u items outside 1..%d", p->n, PROTO_MAX_SEQS);
    for (uint32_t i = 0; i < p->n; i++)
        if ((rc = reset_item_check(&p->items[i], i, BT_EINVAL, err, errsz)) < 0) return rc;
    if ((rc = msg_begin(b, 4 + (size_t)p->n * 8, 0, &w, err, errsz)) < 0) return rc;
    wr32(&w, p->n);
    for (uint32_t i = 0; i < p->n; i++) {
        wr32(&w, p->items[i].seq_id);
        wr32(&w, p->items[i].flags);
    }
    msg_finish(b, r, PROTO_OP_RESET);
    return BT_OK;
}

int proto_decode_reset(const uint8_t *p, size_t n, struct proto_reset *out, char *err, size_t errsz)
{
    struct rd r = {p, n, 0};
    out->n = 0;
    out->items = NULL;
    if (!rd_has(&r, 4)) return bt_errf(err, errsz, BT_EFORMAT, "%zu bytes, at least 4", n);
    uint32_t cnt = rd32(&r);
    if (cnt == 0 || cnt > PROTO_MAX_SEQS)
        return bt_errf(err, errsz, BT_EFORMAT, "%u items outside 1..%d", cnt, PROTO_MAX_SEQS);
    if ((size_t)cnt * 8 != n - r.off)
        return bt_errf(err, errsz, BT_EFORMAT, "%u items need %zu bytes, the payload has %zu", cnt,
                       (size_t)cnt * 8, n - r.off);
    if (grow((void **)&out->item_store, &out->item_cap, cnt, sizeof(*out->item_store)) < 0)
        return bt_errf(err, errsz, BT_ENOMEM, "no memory for %u items", cnt);
    for (uint32_t i = 0; i < cnt; i++) {
        struct proto_reset_item *it = &out->item_store[i];
        it->seq_id = rd32(&r);
        it->flags = rd32(&r);
        int rc = reset_item_check(it, i, BT_EFORMAT, err, errsz);
        if (rc < 0) return rc;
    }
    out->n = cnt;
    out->items = out->item_store;
    return BT_OK;
}

void proto_reset_free(struct proto_reset *r)
{
    if (!r) return;
    free(r->item_store);
    memset(r, 0, sizeof(*r));
}

/* ---- whole messages ----------------------------------------------------------------------- */

/* ---- sizes -------------------------------------------------------------------------------- */

size_t proto_max_size(uint32_t op, const struct proto_sizes *s, uint32_t n_embd, uint32_t max_ops)
{
    const size_t n_seq = s->n_seq,
                 text = 2 * 3 + PROTO_BUILD_ID_MAX + PROTO_BACKEND_MAX + PROTO_HOST_MAX;
    size_t payload;
    switch (op) {
    case PROTO_OP_HANDSHAKE:
        payload = HS_FIXED + text;
        break;
    case PROTO_OP_HEARTBEAT:
    case PROTO_OP_HEARTBEAT_REPLY:
        payload = HB_SIZE;
        break;
    case PROTO_OP_STATS_REQUEST:
        payload = 0;
        break;
    case PROTO_OP_STATS:
        payload = STATS_SIZE;
        break;
    case PROTO_OP_SHUTDOWN:
        payload = 4;
        break;
    case PROTO_OP_FORWARD:
        payload = forward_size(s->max_batch, s->n_seq, s->max_batch, n_embd, n_seq * PROTO_MAX_BIAS,
                               max_ops);
        break;
    case PROTO_OP_TOKENS:
        payload = 4 + n_seq * (TOK_ITEM + PROTO_MAX_LOGPROBS * TOK_TOP);
        break;
    case PROTO_OP_ERROR:
        payload = ERR_FIXED + 2 + PROTO_ERRMSG_MAX;
        break;
    case PROTO_OP_RESET:
        payload = 4 + n_seq * 8;
        break;
    default:
        return 0;
    }
    return PROTO_HDR_SIZE + payload;
}

size_t proto_max_msg(const struct proto_sizes *s, uint32_t n_embd, uint32_t max_ops)
{
    size_t most = 0;
    for (uint32_t op = 1; op < PROTO_OP_COUNT; op++) {
        size_t k = proto_max_size(op, s, n_embd, max_ops);
        if (k > most) most = k;
    }
    return most;
}

int proto_decode_payload(struct proto_msg *m, const uint8_t *p, char *err, size_t errsz)
{
    char why[256];
    size_t n = m->hdr.payload_size;
    int rc;
    switch (m->hdr.opcode) {
    case PROTO_OP_HANDSHAKE:
        rc = proto_decode_handshake(p, n, &m->handshake, why, sizeof(why));
        break;
    case PROTO_OP_HEARTBEAT:
    case PROTO_OP_HEARTBEAT_REPLY:
        rc = proto_decode_heartbeat(p, n, &m->heartbeat, why, sizeof(why));
        break;
    case PROTO_OP_STATS_REQUEST:
        rc = n ? bt_errf(why, sizeof(why), BT_EFORMAT, "%zu bytes, 0 expected", n) : BT_OK;
        break;
    case PROTO_OP_STATS:
        rc = proto_decode_stats(p, n, &m->stats, why, sizeof(why));
        break;
    case PROTO_OP_SHUTDOWN:
        rc = proto_decode_shutdown(p, n, &m->shutdown, why, sizeof(why));
        break;
    case PROTO_OP_FORWARD:
        rc = proto_decode_forward(p, n, &m->forward, why, sizeof(why));
        break;
    case PROTO_OP_TOKENS:
        rc = proto_decode_tokens(p, n, &m->tokens, why, sizeof(why));
        break;
    case PROTO_OP_ERROR:
        rc = proto_decode_error(p, n, &m->error, why, sizeof(why));
        break;
    case PROTO_OP_RESET:
        rc = proto_decode_reset(p, n, &m->reset, why, sizeof(why));
        break;
    default:
        rc = bt_errf(why, sizeof(why), BT_EFORMAT, "unknown opcode");
        break;
    }
    if (rc < 0) return bt_errf(err, errsz, rc, "%s payload: %s", proto_op_name(m->hdr.opcode), why);
    return BT_OK;
}

int proto_decode(const void *buf, size_t len, struct proto_msg *m, char *err, size_t errsz)
{
    int rc = proto_hdr_decode(buf, len, &m->hdr, err, errsz);
    if (rc < 0) return rc;
    return proto_decode_payload(m, (const uint8_t *)buf + PROTO_HDR_SIZE, err, errsz);
}

void proto_msg_free(struct proto_msg *m)
{
    if (!m) return;
    proto_forward_free(&m->forward);
    proto_tokens_free(&m->tokens);
    proto_reset_free(&m->reset);
}
