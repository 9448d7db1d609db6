/* gguf: the reader (mmap, v2 and v3) of GGUF files; the writer is gguf_write.h.
 *
 * The file is hostile: every count, length and offset is bounded against the file size before it
 * is used or multiplied, so a truncated or malicious file gives one error naming the file and the
 * problem (via err), never a crash or a huge allocation.
 *
 * Ownership: everything returned by the reader (kv records, tensor records, names, string data,
 * tensor data) is borrowed and valid until gguf_close(). Threads: a struct gguf is read-only after
 * gguf_open and may be shared between threads. */
#ifndef BATON_GGUF_H
#define BATON_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GGUF_MAGIC             0x46554747u /* "GGUF" little-endian */
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_DIMS          4

enum gguf_vtype {
    GGUF_TYPE_UINT8 = 0,
    GGUF_TYPE_INT8 = 1,
    GGUF_TYPE_UINT16 = 2,
    GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4,
    GGUF_TYPE_INT32 = 5,
    GGUF_TYPE_FLOAT32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_UINT64 = 10,
    GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
    GGUF_TYPE_COUNT
};

const char *gguf_vtype_name(uint32_t t); /* "u32", "string", ...; "unknown" for bad ids */

/* A string inside the file: not NUL-terminated, may contain any bytes. */
struct gguf_str {
    const char *data;
    uint64_t len;
};

struct gguf_kv {
    const char *key;  /* NUL-terminated copy owned by the gguf */
    uint32_t type;    /* enum gguf_vtype */
    union {           /* scalar value, widened; for STRING: .str */
        uint64_t u64; /* UINT8/16/32/64 and BOOL (0/1) */
        int64_t i64;  /* INT8/16/32/64 */
        double f64;   /* FLOAT32/64 */
        struct gguf_str str;
    } v;
    uint32_t arr_type;    /* ARRAY only: element type (never ARRAY; nested arrays are rejected) */
    uint64_t arr_n;       /* ARRAY only: element count */
    const void *arr_data; /* ARRAY of numbers/bools: raw little-endian elements in the map;
                           * ARRAY of STRING: an index owned by the gguf (use gguf_arr_str) */
};

struct gguf_tensor {
    const char *name;          /* NUL-terminated copy owned by the gguf */
    uint32_t type;             /* enum bt_type (quant.h) */
    uint32_t n_dims;           /* 1..GGUF_MAX_DIMS */
    int64_t ne[GGUF_MAX_DIMS]; /* ne[0] = row length (innermost); unused dims are 1 */
    uint64_t offset;           /* from the start of the data section, aligned */
    uint64_t nbytes;
    const void *data; /* into the mapping */
};

struct gguf;

/* Map and validate the file (the rules are listed in docs/gguf.md). On failure returns a
 * negative status, *out = NULL, and err holds "PATH: problem" (e.g. "m.gguf: tensor
 * 'blk.0.attn_q.weight' data [.., ..) is past the end of the file (size N)"). */
int gguf_open(const char *path, struct gguf **out, char *err, size_t errsz);
/* Same over a caller's buffer (not copied; must outlive the gguf). `name` is used in errors. */
int gguf_open_mem(const void *data, size_t size, const char *name, struct gguf **out, char *err,
                  size_t errsz);
void gguf_close(struct gguf *g); /* NULL is fine */

const char *gguf_path(const struct gguf *g);
uint32_t gguf_version(const struct gguf *g);
uint64_t gguf_file_size(const struct gguf *g);
uint64_t gguf_alignment(const struct gguf *g);
uint64_t gguf_data_offset(const struct gguf *g); /* start of the tensor data section */
/* 64-bit hash of the bytes before the data section (header, metadata, tensor index) combined
 * with the file size: the model identity compared in the rank handshake. */
uint64_t gguf_identity(const struct gguf *g);

int64_t gguf_n_kv(const struct gguf *g);
const struct gguf_kv *gguf_kv_at(const struct gguf *g, int64_t i);
const struct gguf_kv *gguf_find_kv(const struct gguf *g, const char *key); /* NULL if absent */

/* Typed getters. 0 on success; BT_ENOTFOUND if the key is absent; BT_EFORMAT if the stored type
 * does not convert (integers convert between widths/signs when the value fits; FLOAT32/64 to
 * float/double; BOOL only to bool). *out is untouched on failure. */
int gguf_get_u32(const struct gguf *g, const char *key, uint32_t *out);
int gguf_get_i32(const struct gguf *g, const char *key, int32_t *out);
int gguf_get_u64(const struct gguf *g, const char *key, uint64_t *out);
int gguf_get_i64(const struct gguf *g, const char *key, int64_t *out);
int gguf_get_f32(const struct gguf *g, const char *key, float *out);
int gguf_get_f64(const struct gguf *g, const char *key, double *out);
int gguf_get_bool(const struct gguf *g, const char *key, bool *out);
int gguf_get_str(const struct gguf *g, const char *key, struct gguf_str *out);
/* ARRAY: element type and count. */
int gguf_get_arr(const struct gguf *g, const char *key, uint32_t *elem_type, uint64_t *n);

/* Array element access (i < kv->arr_n is checked: BT_EINVAL past the end; BT_EFORMAT for the
 * wrong element type). Numeric getters convert like the above; gguf_arr_i64 also reads BOOL
 * elements as 0/1. gguf_arr_str is O(1) (an offset index is built at open). */
int gguf_arr_str(const struct gguf_kv *kv, uint64_t i, struct gguf_str *out);
int gguf_arr_i64(const struct gguf_kv *kv, uint64_t i, int64_t *out);
int gguf_arr_f64(const struct gguf_kv *kv, uint64_t i, double *out);

int64_t gguf_n_tensors(const struct gguf *g);
const struct gguf_tensor *gguf_tensor_at(const struct gguf *g, int64_t i);
/* NULL if absent. */
const struct gguf_tensor *gguf_find_tensor(const struct gguf *g, const char *name);

#endif
