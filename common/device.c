#include "device.h"

#include "log.h"

#include <stdio.h>
#include <string.h>

int dev_parse(const char *s, int *device, char *err, size_t errsz)
{
    if (!s || !strcmp(s, "cpu")) {
        *device = DEV_CPU;
        return 0;
    }
    if (!strcmp(s, "cuda")) {
        *device = 0;
        return 0;
    }
    if (!strncmp(s, "cuda:", 5) && s[5]) {
        int v = 0;
        const char *p = s + 5;
        for (; *p >= '0' && *p <= '9' && v <= DEV_MAX_IDX; p++) v = v * 10 + (*p - '0');
        if (!*p && v <= DEV_MAX_IDX) {
            *device = v;
            return 0;
        }
    }
    return bt_errf(err, errsz, BT_EINVAL, "bad device '%s' (cpu, cuda or cuda:N with N in 0..%d)",
                   s, DEV_MAX_IDX);
}

const char *dev_name(int device, char *buf, size_t bufsz)
{
    if (device < 0)
        snprintf(buf, bufsz, "cpu");
    else
        snprintf(buf, bufsz, "cuda:%d", device);
    return buf;
}
