/* log: status codes, logging to stderr, error-text helpers and a monotonic clock.
 *
 * Functions across baton return BT_OK (0) or a negative BT_E* status; the text of an error is
 * written where it is detected, into a caller's buffer (bt_errf) or the log (bt_log), once.
 * Thread-safe: bt_log writes one line with a single write(2). */
#ifndef BATON_LOG_H
#define BATON_LOG_H

#include <stddef.h>
#include <stdint.h>

enum bt_status {
    BT_OK = 0,
    BT_ERR = -1,       /* generic failure */
    BT_EINVAL = -2,    /* bad argument or input */
    BT_ENOMEM = -3,    /* allocation failed */
    BT_EIO = -4,       /* read/write/open failed */
    BT_EFORMAT = -5,   /* malformed file or message */
    BT_ENOTFOUND = -6, /* missing key, tensor, token ... */
    BT_EUNSUP = -7,    /* valid but not supported */
    BT_ETIMEOUT = -8,  /* a deadline passed */
    BT_EFULL = -9,     /* no room (KV cache, queue) */
};

enum bt_log_level { BT_LOG_DEBUG = 0, BT_LOG_INFO = 1, BT_LOG_WARN = 2, BT_LOG_ERROR = 3 };

/* Lines below this level are dropped. Default INFO; env BATON_LOG=debug|info|warn|error (read
 * once); bt_log_set_level overrides it. Any thread. The tag is set once, before threads start. */
void bt_log_set_level(int level);
int bt_log_get_level(void);
/* Prefix every line with "[tag]", e.g. "rank 2"; NULL for none. The string is copied. */
void bt_log_set_tag(const char *tag);

void bt_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define bt_debug(...) bt_log(BT_LOG_DEBUG, __VA_ARGS__)
#define bt_info(...)  bt_log(BT_LOG_INFO, __VA_ARGS__)
#define bt_warn(...)  bt_log(BT_LOG_WARN, __VA_ARGS__)
#define bt_error(...) bt_log(BT_LOG_ERROR, __VA_ARGS__)

/* Format an error message into err[errsz] (if err is non-NULL) and return `status`, so a
 * failure path reads `return bt_errf(err, errsz, BT_EFORMAT, "%s: bad magic", path);`. */
int bt_errf(char *err, size_t errsz, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

const char *bt_strstatus(int status);

/* Monotonic clock. */
uint64_t bt_now_ns(void);
double bt_now_s(void);

#endif
