/* args: the option table of baton-cli and baton-bench (see args.h). */
#include "args.h"

#include "device.h"
#include "log.h"
#include "quant.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int parse_int(const char *s, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return BT_EINVAL;
    *out = (int)v;
    return 0;
}

static int parse_float(const char *s, float *out)
{
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end || v != v) return BT_EINVAL;
    *out = v;
    return 0;
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end) return BT_EINVAL;
    *out = v;
    return 0;
}

static int parse_kv_type(const char *s, uint32_t *out)
{
    int t = bt_type_from_name(s);
    if (t != BT_F16 && t != BT_F32) return BT_EINVAL;
    *out = (uint32_t)t;
    return 0;
}

/* "8,32": at most o->max values (a longer list, or one out of bounds, is BT_EINVAL). */
static int parse_int_list(const struct args_opt *o, const char *s)
{
    char buf[128];
    int *v = o->dst, rc = 0;
    snprintf(buf, sizeof(buf), "%s", s);
    *o->n = 0;
    for (char *sv, *tk = strtok_r(buf, ",", &sv); tk && rc == 0; tk = strtok_r(NULL, ",", &sv)) {
        if (*o->n == o->max)
            rc = BT_EINVAL;
        else
            rc = parse_int(tk, o->lo, o->hi, &v[(*o->n)++]);
    }
    return rc;
}

/* The value v of option o (named a on the command line) into o->dst; BT_EINVAL, printed. */
static int parse_value(const char *prog, const struct args_opt *o, const char *a, const char *v)
{
    char derr[160];
    int rc = 0;
    switch (o->kind) {
    case ARGS_FLAG:
        *(bool *)o->dst = true;
        break;
    case ARGS_STR:
        *(const char **)o->dst = v;
        break;
    case ARGS_INT:
        rc = parse_int(v, o->lo, o->hi, o->dst);
        break;
    case ARGS_FLOAT:
        rc = parse_float(v, o->dst);
        break;
    case ARGS_U64:
        rc = parse_u64(v, o->dst);
        break;
    case ARGS_KV_TYPE:
        rc = parse_kv_type(v, o->dst);
        break;
    case ARGS_DEVICE:
        if ((rc = dev_parse(v, o->dst, derr, sizeof(derr))) < 0) {
            fprintf(stderr, "%s: %s\n", prog, derr);
            return rc;
        }
        break;
    case ARGS_INT_LIST:
        rc = parse_int_list(o, v);
        break;
    }
    if (o->given) *o->given = true;
    if (rc < 0) fprintf(stderr, "%s: bad value for %s: '%s'\n", prog, a, v);
    return rc;
}

static const struct args_opt *find(const struct args_opt *opts, int n_opts, const char *a)
{
    for (int i = 0; i < n_opts; i++)
        if (!strcmp(a, opts[i].name) || (opts[i].alt && !strcmp(a, opts[i].alt))) return &opts[i];
    return NULL;
}

int args_parse(const char *prog, int argc, char **argv, const struct args_opt *opts, int n_opts)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return 1;
        const struct args_opt *o = find(opts, n_opts, a);
        if (o && o->kind == ARGS_FLAG) {
            parse_value(prog, o, a, NULL);
            continue;
        }
        if (!v) {
            fprintf(stderr, "%s: %s needs a value (or is unknown)\n", prog, a);
            return BT_EINVAL;
        }
        i++;
        if (!o) {
            fprintf(stderr, "%s: unknown option %s\n", prog, a);
            return BT_EINVAL;
        }
        if (parse_value(prog, o, a, v) < 0) return BT_EINVAL;
    }
    return 0;
}
