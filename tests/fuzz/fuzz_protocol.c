/* fuzz_protocol: libFuzzer target for the wire-protocol decoders. The first input byte picks
 * the decoder: 0 = a whole message (header checks first), 1..10 = the payload decoder of that
 * opcode directly (past the checksums, which random bytes almost never pass). Whatever decodes
 * must re-encode to exactly the same bytes (the format is canonical), and a rejection must come
 * with one line of text. Built as a libFuzzer binary with -Dfuzz=true (clang), and linked with
 * replay.c in every build. */
#include "log.h"
#include "protocol.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Reused across inputs, as a rank reuses its message struct. */
static struct proto_msg msg;
static struct proto_buf out;

static int encode(uint32_t op, const struct proto_route *r, char *err, size_t errsz)
{
    switch (op) {
    case PROTO_OP_HANDSHAKE:
        return proto_encode_handshake(&out, r, &msg.handshake, err, errsz);
    case PROTO_OP_HEARTBEAT:
    case PROTO_OP_HEARTBEAT_REPLY:
        return proto_encode_heartbeat(&out, r, op, &msg.heartbeat, err, errsz);
    case PROTO_OP_STATS_REQUEST:
        return proto_encode_stats_request(&out, r, err, errsz);
    case PROTO_OP_STATS:
        return proto_encode_stats(&out, r, &msg.stats, err, errsz);
    case PROTO_OP_SHUTDOWN:
        return proto_encode_shutdown(&out, r, &msg.shutdown, err, errsz);
    case PROTO_OP_FORWARD:
        return proto_encode_forward(&out, r, &msg.forward, err, errsz);
    case PROTO_OP_TOKENS:
        return proto_encode_tokens(&out, r, &msg.tokens, err, errsz);
    case PROTO_OP_ERROR:
        return proto_encode_error(&out, r, &msg.error, err, errsz);
    case PROTO_OP_RESET:
        return proto_encode_reset(&out, r, &msg.reset, err, errsz);
    default:
        return BT_EINVAL;
    }
}

static int decode_payload(uint32_t op, const uint8_t *p, size_t n, char *err, size_t errsz)
{
    memset(&msg.hdr, 0, sizeof(msg.hdr));
    msg.hdr.opcode = (uint8_t)op;
    msg.hdr.payload_size = (uint32_t)n;
    return proto_decode_payload(&msg, p, err, errsz);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512] = "";
    if (size < 1 || size - 1 > PROTO_MAX_PAYLOAD) return 0;
    uint32_t sel = data[0] % PROTO_OP_COUNT;
    int whole = sel == 0;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    struct proto_route r = {1, 2, 3};
    int rc = whole ? proto_decode(p, n, &msg, err, sizeof(err))
                   : decode_payload(sel, p, n, err, sizeof(err));
    if (rc < 0) {
        if (rc != BT_EFORMAT && rc != BT_ENOMEM) __builtin_trap();
        if (!err[0] || strchr(err, '\n')) __builtin_trap();
        return 0;
    }
    if (whole) {
        r = (struct proto_route){msg.hdr.sender, msg.hdr.epoch, msg.hdr.step};
        sel = msg.hdr.opcode;
    }
    if (encode(sel, &r, err, sizeof(err)) < 0) __builtin_trap(); /* decoded, so encodable */
    /* the same bytes: the whole message, or the payload after our fresh header */
    size_t skip = whole ? 0 : PROTO_HDR_SIZE;
    if (out.len != skip + n || memcmp(out.data + skip, p, n) != 0) __builtin_trap();
    return 0;
}
