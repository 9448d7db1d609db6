#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* The level: BATON_LOG read once (whichever thread logs first runs the once-routine, the others
 * wait for it), then set by bt_log_set_level; an atomic, since every thread reads it. */
static atomic_int log_level = -1;
static pthread_once_t log_once = PTHREAD_ONCE_INIT;
static char log_tag[64];

static void log_init_level(void)
{
    const char *e = getenv("BATON_LOG");
    int level = BT_LOG_INFO;
    if (e && !strcasecmp(e, "debug"))
        level = BT_LOG_DEBUG;
    else if (e && !strcasecmp(e, "warn"))
        level = BT_LOG_WARN;
    else if (e && !strcasecmp(e, "error"))
        level = BT_LOG_ERROR;
    int unset = -1; /* a level set before the first log line wins */
    atomic_compare_exchange_strong(&log_level, &unset, level);
}

void bt_log_set_level(int level)
{
    pthread_once(&log_once, log_init_level);
    atomic_store(&log_level, level);
}

int bt_log_get_level(void)
{
    pthread_once(&log_once, log_init_level);
    return atomic_load_explicit(&log_level, memory_order_relaxed);
}

void bt_log_set_tag(const char *tag)
{
    snprintf(log_tag, sizeof(log_tag), "%s", tag ? tag : "");
}

void bt_log(int level, const char *fmt, ...)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    char line[2048];
    int n;
    va_list ap;

    if (level < bt_log_get_level()) return;
    if (level < 0 || level > BT_LOG_ERROR) level = BT_LOG_ERROR;
    if (log_tag[0])
        n = snprintf(line, sizeof(line), "baton[%s] %s: ", log_tag, names[level]);
    else
        n = snprintf(line, sizeof(line), "baton %s: ", names[level]);
    va_start(ap, fmt);
    n += vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    va_end(ap);
    if (n >= (int)sizeof(line) - 1) n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}

int bt_errf(char *err, size_t errsz, int status, const char *fmt, ...)
{
    if (err && errsz) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errsz, fmt, ap);
        va_end(ap);
    }
    return status;
}

const char *bt_strstatus(int status)
{
    switch (status) {
    case BT_OK:
        return "ok";
    case BT_ERR:
        return "error";
    case BT_EINVAL:
        return "invalid argument";
    case BT_ENOMEM:
        return "out of memory";
    case BT_EIO:
        return "i/o error";
    case BT_EFORMAT:
        return "malformed data";
    case BT_ENOTFOUND:
        return "not found";
    case BT_EUNSUP:
        return "not supported";
    case BT_ETIMEOUT:
        return "timed out";
    case BT_EFULL:
        return "full";
    default:
        return "unknown status";
    }
}

uint64_t bt_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

double bt_now_s(void)
{
    return (double)bt_now_ns() * 1e-9;
}
