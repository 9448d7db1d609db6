/* device: where a stage's forward pass runs, as the --device option names it.
 *
 *   "cpu"      the CPU backend (SIMD kernels + thread pool), DEV_CPU
 *   "cuda:N"   CUDA device N (N >= 0); "cuda" alone is cuda:0
 *
 * Parsing checks the spelling only; whether the device exists is found out when the forward
 * pass is built (fwd_new_dev: "no CUDA device: ..."). Threads: pure functions. */
#ifndef BATON_DEVICE_H
#define BATON_DEVICE_H

#include <stddef.h>

#define DEV_CPU     (-1)
#define DEV_MAX_IDX 1023 /* largest N accepted in cuda:N */

/* *device = DEV_CPU or the CUDA index; BT_EINVAL (err names the value) for anything else. */
int dev_parse(const char *s, int *device, char *err, size_t errsz);
/* "cpu" or "cuda:N" into buf; returns buf. */
const char *dev_name(int device, char *buf, size_t bufsz);

#endif
