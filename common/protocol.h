/* protocol: baton's versioned wire format between ranks (docs/protocol.md describes the bytes).
 *
 * Every message is one fixed 40-byte header followed by an opcode-specific payload; all integers
 * and floats are little-endian with explicit sizes, written field by field (never a memcpy of a
 * struct). Everything that arrives from a peer rank is hostile: the decoders check magic, version,
 * both checksums, the opcode, every count against a cap before it is multiplied, and that the
 * sizes add up exactly; a bad message gives BT_EFORMAT with one line of text in err (naming the
 * sender when the header was readable) and is dropped by the caller. Nothing here aborts.
 * The encoders apply the same rules to what they are given (BT_EINVAL), so a baton rank never
 * sends a message another baton rank would reject.
 *
 * No MPI and no I/O here: bytes in, structs out.
 *
 * Ownership: a struct proto_buf owns its bytes. Decoded structs own their arrays (reused and
 * grown across decodes, freed by proto_msg_free / proto_*_free), except FORWARD activation rows,
 * which point into the decoded message bytes when they are aligned (borrowed: valid while those
 * bytes are) and are copied into the struct otherwise. As encoder input, a struct's array
 * pointers may point anywhere (borrowed for the call).
 * Threads: no global state; each struct belongs to one thread at a time. */
#ifndef BATON_PROTOCOL_H
#define BATON_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>

#define PROTO_MAGIC 0x4e544142u /* the bytes "BATN" */
/* 2: FORWARD carries each sequence's logit bias; 3: HANDSHAKE the sizes; 4: FORWARD the KV block
 * operations, HANDSHAKE the block pool */
#define PROTO_VERSION  4
#define PROTO_HDR_SIZE 40

/* Caps: a message past any of them is rejected before anything is allocated. */
#define PROTO_MAX_PAYLOAD  (256u << 20) /* bytes after the header */
#define PROTO_MAX_RANKS    4096
#define PROTO_MAX_TOKENS   16384 /* tokens in one FORWARD micro-batch */
#define PROTO_MAX_SEQS     4096  /* sequences in one FORWARD / TOKENS / RESET */
#define PROTO_MAX_EMBD     65536 /* activation row width */
#define PROTO_MAX_POS      (1u << 24)
#define PROTO_MAX_LAYERS   4096
#define PROTO_MAX_LOGPROBS 20
#define PROTO_MAX_BIAS     1024 /* logit bias entries per sequence */
#define PROTO_BUILD_ID_MAX 64   /* string lengths in bytes, without the NUL */
#define PROTO_BACKEND_MAX  128
#define PROTO_HOST_MAX     255
#define PROTO_ERRMSG_MAX   512
#define PROTO_SEQ_NONE     0xffffffffu /* ERROR not tied to one sequence */
#define PROTO_MAX_BLOCKS   (1u << 24)  /* KV blocks in a pool */
#define PROTO_MAX_KV_OPS   (1u << 20)  /* KV block operations in one FORWARD */

enum proto_op {
    PROTO_OP_HANDSHAKE = 1,       /* both ways: identity, layers, load progress */
    PROTO_OP_HEARTBEAT = 2,       /* rank 0 -> rank: are you alive */
    PROTO_OP_HEARTBEAT_REPLY = 3, /* rank -> rank 0: echo of the nonce + state */
    PROTO_OP_STATS_REQUEST = 4,   /* rank 0 -> rank, empty payload */
    PROTO_OP_STATS = 5,           /* rank -> rank 0 */
    PROTO_OP_SHUTDOWN = 6,        /* rank 0 -> rank: leave the command loop */
    PROTO_OP_FORWARD = 7,         /* stage k -> stage k+1: a micro-batch */
    PROTO_OP_TOKENS = 8,          /* last stage -> rank 0: sampled tokens */
    PROTO_OP_ERROR = 9,           /* rank -> rank 0: one request failed, the rank stays up */
    PROTO_OP_RESET = 10,          /* rank 0 -> ranks: cancel / forget sequences */
    PROTO_OP_COUNT
};

/* The fixed header. Decoded from (and encoded into) bytes 0..39 of every message. */
struct proto_hdr {
    uint32_t magic;
    uint16_t version;
    uint8_t opcode;
    uint8_t flags; /* none defined in version 1: must be 0 */
    uint32_t sender;
    uint32_t payload_size;
    uint64_t epoch; /* job epoch: messages of another epoch are dropped */
    uint64_t step;  /* step id: late replies to an abandoned step are dropped */
    uint32_t payload_crc;
    uint32_t header_crc;
};

/* Who sends, in which epoch, for which step: the header fields an encoder takes from its caller. */
struct proto_route {
    uint32_t sender;
    uint64_t epoch;
    uint64_t step;
};

/* A growable byte buffer; owns data. */
struct proto_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
};

enum proto_state { PROTO_STATE_LOADING = 0, PROTO_STATE_READY = 1, PROTO_STATE_FAILED = 2 };

/* The sizes every rank of a pipeline must agree on (rank 0 compares them at the handshake):
 * they size each stage's KV cache and buffers, and bound every message (proto_max_size). */
struct proto_sizes {
    uint32_t n_seq;     /* sequences (slots), 1..PROTO_MAX_SEQS */
    uint32_t n_ctx;     /* positions per sequence, 1..PROTO_MAX_POS */
    uint32_t max_batch; /* tokens in one micro-batch, 1..PROTO_MAX_TOKENS */
    uint32_t kv_type;   /* element type of the KV cache (quant.h: BT_F16, BT_F32) */
    uint32_t n_blocks;  /* KV blocks in every stage's pool, 1..PROTO_MAX_BLOCKS */
};

struct proto_handshake {
    uint32_t proto_version; /* PROTO_VERSION of the sender's build */
    uint32_t state;         /* enum proto_state */
    float progress;         /* load progress 0..1 */
    uint32_t pid;
    uint64_t model_id;               /* hash of the GGUF header and tensor index */
    uint64_t model_size;             /* file size in bytes */
    uint32_t layer_begin, layer_end; /* this rank's layers: [begin, end) */
    uint32_t n_layers;               /* layers in the model */
    struct proto_sizes sizes;        /* all 0 while unknown (a rank that failed to start) */
    char build_id[PROTO_BUILD_ID_MAX + 1];
    char backend[PROTO_BACKEND_MAX + 1]; /* "cpu avx2 2 threads", "cuda:0 H100" */
    char hostname[PROTO_HOST_MAX + 1];
};

/* Fill the fields this process knows: PROTO_VERSION, BATON_BUILD_ID (version.h), hostname,
 * pid, state LOADING; the rest zero. */
void proto_handshake_local(struct proto_handshake *h);

/* HEARTBEAT and HEARTBEAT_REPLY: the reply echoes the nonce. */
struct proto_heartbeat {
    uint64_t nonce;
    uint32_t state; /* enum proto_state */
    float progress;
};

struct proto_stats {
    uint64_t last_step_ns;  /* wall time of the last step */
    uint64_t total_step_ns; /* sum over all steps */
    uint64_t n_steps;
    uint64_t n_tokens;         /* tokens computed */
    uint64_t n_dropped;        /* messages dropped as stale (epoch / step) */
    uint64_t n_bad;            /* messages rejected as malformed */
    uint64_t n_errors;         /* ERROR messages sent */
    uint64_t kv_used, kv_size; /* KV cells */
    uint64_t rss_bytes;
};

struct proto_shutdown {
    uint32_t reason; /* enum proto_shutdown_reason */
};
enum proto_shutdown_reason { PROTO_SHUTDOWN_NORMAL = 0, PROTO_SHUTDOWN_RESTART = 1 };

/* One logit bias entry: bias is added to the token's logit; -INFINITY bans it. */
struct proto_bias {
    int32_t token; /* >= 0; the last stage checks it against its vocabulary */
    float bias;    /* finite, or -INFINITY */
};

/* Sampling parameters of one sequence (used by the last stage). */
struct proto_sampling {
    float temperature;       /* 0 = greedy; [0, 100] */
    int32_t top_k;           /* 0 = off; >= 0 */
    float top_p;             /* [0, 1] */
    float min_p;             /* [0, 1] */
    float repeat_penalty;    /* (0, 100], 1 = off */
    uint32_t repeat_last_n;  /* <= PROTO_MAX_POS */
    float presence_penalty;  /* [-100, 100] */
    float frequency_penalty; /* [-100, 100] */
    uint64_t seed;
    uint32_t n_logprobs;           /* top-n alternatives to return, <= PROTO_MAX_LOGPROBS */
    uint32_t n_bias;               /* <= PROTO_MAX_BIAS */
    const struct proto_bias *bias; /* (n_bias); encode: borrowed; decode: in bias_store */
};

/* FORWARD per-token flags */
#define PROTO_TOK_ROW    1u /* an activation row for this token follows (else use `token`) */
#define PROTO_TOK_LOGITS 2u /* the last stage samples after this token */
#define PROTO_TOK_PROMPT 4u /* a prompt token (the batch runs the prompt kernels: forward.h) */
/* FORWARD per-sequence flags */
#define PROTO_SEQ_RESET    1u /* clear KV cells and sampler history before this batch */
#define PROTO_SEQ_CLEAR_KV 2u /* drop KV cells at positions >= this batch's first position */

struct proto_token {
    uint32_t seq_id;
    uint32_t pos;
    int32_t token;    /* token id, or -1 when unknown (only with PROTO_TOK_ROW) */
    uint32_t flags;   /* PROTO_TOK_* */
    uint32_t seq_idx; /* decode fills: index of seq_id in seqs[]; ignored by the encoder */
};

/* A KV block operation (kv.h: struct kv_op; rank 0 decides, every rank applies it to its
 * cache before the batch runs). */
enum proto_kv_kind { PROTO_KV_MAP = 1, PROTO_KV_COPY = 2, PROTO_KV_RESET = 3 };
struct proto_kv_op {
    uint32_t kind;  /* enum proto_kv_kind */
    uint32_t seq;   /* MAP, RESET: < PROTO_MAX_SEQS */
    uint32_t index; /* MAP: the sequence's table entry */
    int32_t block;  /* MAP: a block id or -1 (unmap); COPY: the destination */
    uint32_t src;   /* COPY: the source block */
    uint32_t n;     /* COPY: cells (<= 1024); RESET: positions */
};

struct proto_seq {
    uint32_t seq_id;
    uint32_t flags; /* PROTO_SEQ_* */
    struct proto_sampling sampling;
};

/* A micro-batch. Activation row r (n_embd f32) belongs to the r-th token with PROTO_TOK_ROW. */
struct proto_forward {
    uint32_t n_tokens, n_seqs, n_embd, n_rows, n_ops;
    struct proto_token *tokens;    /* (n_tokens) */
    const struct proto_kv_op *ops; /* (n_ops), applied in order before the batch runs */
    struct proto_seq *seqs;        /* (n_seqs), seq ids unique */
    const float *rows;             /* (n_rows, n_embd) */
    /* decode storage, owned; freed by proto_forward_free */
    struct proto_token *tok_store;
    struct proto_seq *seq_store;
    float *row_store;
    uint64_t *id_scratch;
    struct proto_bias *bias_store;
    struct proto_kv_op *op_store;
    size_t tok_cap, seq_cap, row_cap, id_cap, bias_cap, op_cap;
};

struct proto_top {
    int32_t id;
    float logprob;
};

struct proto_sampled {
    uint32_t seq_id;
    int32_t token;               /* -1 when error != 0 */
    float logprob;               /* of `token` */
    int32_t error;               /* 0 or a negative BT_E* status for this sequence */
    uint32_t n_top;              /* <= PROTO_MAX_LOGPROBS */
    const struct proto_top *top; /* (n_top), best first */
};

struct proto_tokens {
    uint32_t n;                  /* may be 0: the step is acknowledged with nothing sampled */
    struct proto_sampled *items; /* (n) */
    /* decode storage, owned; freed by proto_tokens_free */
    struct proto_sampled *item_store;
    struct proto_top *top_store;
    size_t item_cap, top_cap;
};

struct proto_error {
    uint32_t seq_id; /* PROTO_SEQ_NONE when not about one sequence */
    int32_t code;    /* negative BT_E* status */
    char message[PROTO_ERRMSG_MAX + 1];
};

#define PROTO_RESET_CLEAR_KV 1u /* free the sequence's KV cells and sampler state */
#define PROTO_RESET_CANCEL   2u /* drop queued work of the sequence */

struct proto_reset_item {
    uint32_t seq_id;
    uint32_t flags; /* PROTO_RESET_*, at least one */
};

struct proto_reset {
    uint32_t n;                          /* 1..PROTO_MAX_SEQS */
    struct proto_reset_item *items;      /* (n) */
    struct proto_reset_item *item_store; /* decode storage, owned */
    size_t item_cap;
};

/* One decoded message: hdr plus the payload struct its opcode names (the others are stale). */
struct proto_msg {
    struct proto_hdr hdr;
    struct proto_handshake handshake;
    struct proto_heartbeat heartbeat; /* HEARTBEAT, HEARTBEAT_REPLY */
    struct proto_stats stats;
    struct proto_shutdown shutdown;
    struct proto_forward forward;
    struct proto_tokens tokens;
    struct proto_error error;
    struct proto_reset reset;
};

const char *proto_op_name(uint32_t op); /* "FORWARD", ...; "unknown" */

/* CRC-32C (Castagnoli) of n bytes, continuing from crc (start with 0). SSE4.2 when present. */
uint32_t proto_crc32c(uint32_t crc, const void *p, size_t n);

int proto_buf_reserve(struct proto_buf *b, size_t cap);
void proto_buf_free(struct proto_buf *b); /* frees the bytes and zeroes *b; NULL is fine */

/* Encoders: replace b's contents with one complete message (header + payload). The opcode is
 * implied; route gives sender, epoch and step. BT_EINVAL (with text) for values the decoder
 * would reject, BT_ENOMEM. */
int proto_encode_handshake(struct proto_buf *b, const struct proto_route *r,
                           const struct proto_handshake *p, char *err, size_t errsz);
/* op: PROTO_OP_HEARTBEAT or PROTO_OP_HEARTBEAT_REPLY */
int proto_encode_heartbeat(struct proto_buf *b, const struct proto_route *r, uint32_t op,
                           const struct proto_heartbeat *p, char *err, size_t errsz);
int proto_encode_stats_request(struct proto_buf *b, const struct proto_route *r, char *err,
                               size_t errsz);
int proto_encode_stats(struct proto_buf *b, const struct proto_route *r,
                       const struct proto_stats *p, char *err, size_t errsz);
int proto_encode_shutdown(struct proto_buf *b, const struct proto_route *r,
                          const struct proto_shutdown *p, char *err, size_t errsz);
int proto_encode_forward(struct proto_buf *b, const struct proto_route *r,
                         const struct proto_forward *p, char *err, size_t errsz);
int proto_encode_tokens(struct proto_buf *b, const struct proto_route *r,
                        const struct proto_tokens *p, char *err, size_t errsz);
int proto_encode_error(struct proto_buf *b, const struct proto_route *r,
                       const struct proto_error *p, char *err, size_t errsz);
int proto_encode_reset(struct proto_buf *b, const struct proto_route *r,
                       const struct proto_reset *p, char *err, size_t errsz);

/* The largest complete message (header included) of opcode op that a rank of a pipeline with
 * these sizes, activation rows of n_embd floats and at most max_ops KV block operations per
 * FORWARD can send: FORWARD with max_batch tokens and rows, max_ops operations and n_seq new
 * sequences, each with PROTO_MAX_BIAS logit bias entries; TOKENS with n_seq items of
 * PROTO_MAX_LOGPROBS alternatives; the longest strings of the others. 0 for an unknown op; more
 * than PROTO_HDR_SIZE + PROTO_MAX_PAYLOAD when the sizes do not fit the wire format.
 * proto_max_msg: the largest over every opcode, what a receiver must accept. */
size_t proto_max_size(uint32_t op, const struct proto_sizes *s, uint32_t n_embd, uint32_t max_ops);
size_t proto_max_msg(const struct proto_sizes *s, uint32_t n_embd, uint32_t max_ops);

/* Check the header of the complete message buf[len]: length, magic, header checksum, version,
 * opcode, flags, sender, payload size (== len - PROTO_HDR_SIZE, <= PROTO_MAX_PAYLOAD) and payload
 * checksum. *h is filled as far as it could be read (the sender and version are valid for the
 * error text once the header checksum passed). */
int proto_hdr_decode(const void *buf, size_t len, struct proto_hdr *h, char *err, size_t errsz);

/* Payload decoders: p[n] is the payload only. */
int proto_decode_handshake(const uint8_t *p, size_t n, struct proto_handshake *out, char *err,
                           size_t errsz);
int proto_decode_heartbeat(const uint8_t *p, size_t n, struct proto_heartbeat *out, char *err,
                           size_t errsz);
int proto_decode_stats(const uint8_t *p, size_t n, struct proto_stats *out, char *err,
                       size_t errsz);
int proto_decode_shutdown(const uint8_t *p, size_t n, struct proto_shutdown *out, char *err,
                          size_t errsz);
/* rows may point into p[] afterwards (see the ownership note above). */
int proto_decode_forward(const uint8_t *p, size_t n, struct proto_forward *out, char *err,
                         size_t errsz);
int proto_decode_tokens(const uint8_t *p, size_t n, struct proto_tokens *out, char *err,
                        size_t errsz);
int proto_decode_error(const uint8_t *p, size_t n, struct proto_error *out, char *err,
                       size_t errsz);
int proto_decode_reset(const uint8_t *p, size_t n, struct proto_reset *out, char *err,
                       size_t errsz);

/* Header + payload of the complete message buf[len] into m (zeroed before first use, reused
 * after). A payload failure's text starts with the opcode's name. */
int proto_decode(const void *buf, size_t len, struct proto_msg *m, char *err, size_t errsz);
/* The payload half of proto_decode: m->hdr was filled by a successful proto_hdr_decode and
 * p[m->hdr.payload_size] is the payload. */
int proto_decode_payload(struct proto_msg *m, const uint8_t *p, char *err, size_t errsz);

void proto_forward_free(struct proto_forward *f);
void proto_tokens_free(struct proto_tokens *t);
void proto_reset_free(struct proto_reset *r);
void proto_msg_free(struct proto_msg *m); /* frees decode storage; NULL is fine */

#endif
