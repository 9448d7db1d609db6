/* gguf_internal: what the GGUF reader (gguf.c) and writer (gguf_write.c) share; not for other
 * modules. */
#ifndef BATON_GGUF_INTERNAL_H
#define BATON_GGUF_INTERNAL_H

#include "gguf.h"

#include <stddef.h>
#include <stdint.h>

#define GGUF_MAX_NAME  65535u                    /* longest key or tensor name, in bytes */
#define GGUF_NAME_SHOW 80                        /* bytes of a hostile name shown in an error */
#define GGUF_SHOWBUF   (GGUF_NAME_SHOW * 4 + 16) /* room for gguf_show's rendering */

/* Bytes of one value of each scalar type (0 for STRING and ARRAY). */
extern const uint8_t gguf_vtype_size[GGUF_TYPE_COUNT];

/* A printable rendering of hostile bytes for error messages (at most GGUF_NAME_SHOW bytes shown,
 * the rest as "..."); buf has GGUF_SHOWBUF bytes. Returns buf. */
const char *gguf_show(char *buf, size_t bufsz, const char *s, uint64_t n);

/* Grow an array of records to hold need (doubling, from 16); BT_ENOMEM leaves it as it was. The
 * caller bounds need (the reader by the bytes left in the file). */
int gguf_grow(void **arr, int64_t *cap, int64_t need, size_t elem);

#endif
