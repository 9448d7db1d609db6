/* gguf_write: the streaming GGUF writer: metadata first, then tensor infos, then tensor data
 * streamed in order (the layout gguf.h's reader reads; version 3).
 *
 * Ownership and threads: a gguf_writer belongs to one thread; it copies everything it is given
 * (keys, strings, arrays, names) and holds no tensor data (written straight to the file). */
#ifndef BATON_GGUF_WRITE_H
#define BATON_GGUF_WRITE_H

#include "gguf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gguf_writer;

struct gguf_writer *gguf_writer_new(void); /* version 3, alignment 32 (general.alignment sets it) */
void gguf_writer_free(struct gguf_writer *w); /* NULL is fine; closes an unfinished file */
/* The set_*, add_tensor and write calls have no err argument: the first failure's text is kept
 * here (NULL if none) and is also reported by gguf_writer_begin / gguf_writer_finish. */
const char *gguf_writer_error(const struct gguf_writer *w);

/* Metadata. Keys are copied; setting a key twice replaces it. Strings and arrays are copied. */
int gguf_writer_set_u32(struct gguf_writer *w, const char *key, uint32_t v);
int gguf_writer_set_i32(struct gguf_writer *w, const char *key, int32_t v);
int gguf_writer_set_u64(struct gguf_writer *w, const char *key, uint64_t v);
int gguf_writer_set_f32(struct gguf_writer *w, const char *key, float v);
int gguf_writer_set_bool(struct gguf_writer *w, const char *key, bool v);
int gguf_writer_set_str(struct gguf_writer *w, const char *key, const char *s);
/* Numeric/bool array: n elements of elem_type, raw little-endian. */
int gguf_writer_set_arr(struct gguf_writer *w, const char *key, uint32_t elem_type,
                        const void *data, uint64_t n);
int gguf_writer_set_arr_str(struct gguf_writer *w, const char *key, const struct gguf_str *strs,
                            uint64_t n);
/* Copy one record from a reader (any type, arrays of strings included). */
int gguf_writer_copy_kv(struct gguf_writer *w, const struct gguf_kv *kv);

/* Declare a tensor; returns its index (>= 0) or a negative status. ne[0] must be a multiple of the
 * type's block size. */
int gguf_writer_add_tensor(struct gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims,
                           const int64_t *ne);
/* Write header, metadata and tensor infos to path. */
int gguf_writer_begin(struct gguf_writer *w, const char *path, char *err, size_t errsz);
/* Append data of tensor idx; tensors are written in declaration order, each in one or more
 * chunks; padding is added automatically. */
int gguf_writer_write(struct gguf_writer *w, int idx, const void *data, size_t nbytes);
/* Check every tensor was written in full, flush and close. */
int gguf_writer_finish(struct gguf_writer *w, char *err, size_t errsz);

#endif
