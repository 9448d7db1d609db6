/* hosts: host lists, the hostfile, the layout of the ranks and the fleet line (hosts.h). */
#include "hosts.h"

#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HOSTFILE_MAX (64 * 1024) /* bytes of a hostfile */

static bool name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '-' || c == '_';
}

/* One item "NAME[:SLOTS]" of n bytes at s into a new entry of l. */
static int add_item(struct hosts_list *l, const char *s, size_t n, bool spare, const char *where,
                    char *err, size_t errsz)
{
    const char *colon = memchr(s, ':', n);
    size_t len = colon ? (size_t)(colon - s) : n;
    int slots = 0;
    if (len == 0) return bt_errf(err, errsz, BT_EINVAL, "%s: an empty host name", where);
    if (len >= HOSTS_NAME_MAX)
        return bt_errf(err, errsz, BT_EINVAL, "%s: host name '%.*s...' is longer than %d bytes",
                       where, 32, s, HOSTS_NAME_MAX - 1);
    for (size_t i = 0; i < len; i++)
        if (!name_char(s[i]))
            return bt_errf(err, errsz, BT_EINVAL,
                           "%s: host name '%.*s' holds '%c' (letters, digits, '.', '-', '_' only)",
                           where, (int)len, s, s[i]);
    if (colon) {
        const char *p = colon + 1, *end = s + n;
        if (spare)
            return bt_errf(err, errsz, BT_EINVAL,
                           "%s: spare host '%.*s' with a rank count: a spare takes the ranks of "
                           "the host it stands in for",
                           where, (int)n, s);
        if (p == end || end - p > 3)
            return bt_errf(err, errsz, BT_EINVAL, "%s: '%.*s': expected NAME:RANKS (1..256)", where,
                           (int)n, s);
        for (; p < end; p++) {
            if (*p < '0' || *p > '9')
                return bt_errf(err, errsz, BT_EINVAL, "%s: '%.*s': expected NAME:RANKS (1..256)",
                               where, (int)n, s);
            slots = slots * 10 + (*p - '0');
        }
        if (slots < 1 || slots > HOSTS_RANKS_MAX)
            return bt_errf(err, errsz, BT_EINVAL, "%s: '%.*s': expected NAME:RANKS (1..256)", where,
                           (int)n, s);
    }
    if (l->n >= HOSTS_MAX)
        return bt_errf(err, errsz, BT_EINVAL, "%s: more than %d hosts", where, HOSTS_MAX);
    struct hosts_entry *e = &l->e[l->n++];
    memcpy(e->name, s, len);
    e->name[len] = '\0';
    e->slots = slots;
    e->spare = spare;
    return BT_OK;
}

int hosts_parse_list(struct hosts_list *l, const char *text, bool spare, const char *what,
                     char *err, size_t errsz)
{
    const char *p = text;
    if (!*p) return bt_errf(err, errsz, BT_EINVAL, "%s: no host named", what);
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        int rc = add_item(l, p, n, spare, what, err, errsz);
        if (rc < 0) return rc;
        if (!comma) return BT_OK;
        p = comma + 1;
    }
}

int hosts_parse_file(struct hosts_list *l, const char *text, const char *path, char *err,
                     size_t errsz)
{
    char where[300];
    int lineno = 0;
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        const char *hash = memchr(p, '#', n);
        if (hash) n = (size_t)(hash - p);
        lineno++;
        snprintf(where, sizeof(where), "%.256s:%d", path, lineno);
        /* the words of the line */
        const char *w[3];
        size_t wl[3];
        int nw = 0;
        for (size_t i = 0; i < n;) {
            while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r')) i++;
            if (i == n) break;
            size_t j = i;
            while (j < n && p[j] != ' ' && p[j] != '\t' && p[j] != '\r') j++;
            if (nw == 3) break;
            w[nw] = p + i;
            wl[nw++] = j - i;
            i = j;
        }
        bool spare = nw == 2 && wl[1] == 5 && !memcmp(w[1], "spare", 5);
        if (nw > 2 || (nw == 2 && !spare))
            return bt_errf(err, errsz, BT_EINVAL,
                           "%s: expected `NAME[:RANKS]` or `NAME spare`, got '%.*s'", where,
                           (int)(n > 80 ? 80 : n), p);
        if (nw > 0) {
            int rc = add_item(l, w[0], wl[0], spare, where, err, errsz);
            if (rc < 0) return rc;
        }
        if (!nl) break;
        p = nl + 1;
    }
    return BT_OK;
}

int hosts_read_file(struct hosts_list *l, const char *path, char *err, size_t errsz)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return bt_errf(err, errsz, BT_EINVAL, "option hostfile: cannot open '%s': %s", path,
                       strerror(errno));
    char *buf = malloc(HOSTFILE_MAX + 1);
    if (!buf) {
        fclose(f);
        return bt_errf(err, errsz, BT_ENOMEM, "out of memory");
    }
    size_t n = fread(buf, 1, HOSTFILE_MAX + 1, f);
    int bad = ferror(f);
    fclose(f);
    int rc;
    if (bad)
        rc = bt_errf(err, errsz, BT_EINVAL, "option hostfile: reading '%s' failed", path);
    else if (n > HOSTFILE_MAX)
        rc = bt_errf(err, errsz, BT_EINVAL, "option hostfile: '%s' is larger than %d KiB", path,
                     HOSTFILE_MAX / 1024);
    else if (memchr(buf, '\0', n))
        rc = bt_errf(err, errsz, BT_EINVAL, "option hostfile: '%s' holds a NUL byte", path);
    else {
        buf[n] = '\0';
        rc = hosts_parse_file(l, buf, path, err, errsz);
    }
    free(buf);
    return rc;
}

int hosts_find(const struct hosts_list *l, const char *name)
{
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->e[i].name, name)) return i;
    return -1;
}

int hosts_check(const struct hosts_list *l, char *err, size_t errsz)
{
    int regular = 0;
    for (int i = 0; i < l->n; i++) {
        regular += !l->e[i].spare;
        for (int j = 0; j < i; j++) {
            if (strcmp(l->e[i].name, l->e[j].name) != 0) continue;
            if (l->e[i].spare != l->e[j].spare)
                return bt_errf(err, errsz, BT_EINVAL,
                               "host %s is both a regular host and a spare: name it once",
                               l->e[i].name);
            return bt_errf(err, errsz, BT_EINVAL, "host %s is named twice%s", l->e[i].name,
                           l->e[i].spare ? " as a spare"
                                         : " (NAME:RANKS gives a host several ranks)");
        }
    }
    if (!regular) return bt_errf(err, errsz, BT_EINVAL, "no regular host: only spares are named");
    return BT_OK;
}

int hosts_layout(const struct hosts_list *l, int ranks, int *counts)
{
    int slots = 0, used = 0;
    for (int i = 0; i < l->n; i++) {
        counts[i] = 0;
        if (!l->e[i].spare) slots += l->e[i].slots > 0 ? l->e[i].slots : 1;
    }
    if (slots == 0) return 0;
    /* hydra fills each host's slots in order, and goes round again while ranks are left */
    for (int left = ranks; left > 0;)
        for (int i = 0; i < l->n && left > 0; i++) {
            if (l->e[i].spare) continue;
            int take = l->e[i].slots > 0 ? l->e[i].slots : 1;
            if (take > left) take = left;
            counts[i] += take;
            left -= take;
        }
    for (int i = 0; i < l->n; i++) used += counts[i] > 0;
    return used;
}

/* ---- the fleet line ---- */

static int put(char *buf, size_t cap, size_t *at, const char *s)
{
    size_t n = strlen(s);
    if (*at + n + 1 > cap) return BT_EFULL;
    memcpy(buf + *at, s, n + 1);
    *at += n;
    return BT_OK;
}

static int put_names(char *buf, size_t cap, size_t *at, const char *key,
                     const char (*names)[HOSTS_NAME_MAX], int n)
{
    int rc = put(buf, cap, at, key);
    for (int i = 0; rc == BT_OK && i < n; i++) {
        if (i) rc = put(buf, cap, at, ",");
        if (rc == BT_OK) rc = put(buf, cap, at, names[i]);
    }
    return rc;
}

int hosts_fleet_format(const struct hosts_fleet *f, char *buf, size_t cap)
{
    size_t at = 0;
    char num[16];
    if (cap) buf[0] = '\0';
    int rc = put_names(buf, cap, &at, "in=", f->in, f->n_in);
    if (rc == BT_OK) rc = put_names(buf, cap, &at, ";evicted=", f->evicted, f->n_evicted);
    if (rc == BT_OK) rc = put_names(buf, cap, &at, ";spare=", f->spare, f->n_spare);
    if (rc == BT_OK) rc = put(buf, cap, &at, ";ranks=");
    for (int k = 0; rc == BT_OK && k < f->n_ranks; k++) {
        snprintf(num, sizeof(num), "%s%u", k ? "," : "", f->rank_host[k]);
        rc = put(buf, cap, &at, num);
    }
    if (rc == BT_OK) rc = put(buf, cap, &at, f->resplit ? ";resplit=1" : ";resplit=0");
    return rc;
}

/* The names of a list value [p, end) into names (at most HOSTS_MAX). */
static int parse_names(const char *p, const char *end, char (*names)[HOSTS_NAME_MAX], int *n,
                       const char *key, char *err, size_t errsz)
{
    struct hosts_list l;
    char item[HOSTS_NAME_MAX * HOSTS_MAX + HOSTS_MAX];
    *n = 0;
    if (p == end) return BT_OK;
    if ((size_t)(end - p) >= sizeof(item))
        return bt_errf(err, errsz, BT_EINVAL, "fleet: %s is too long", key);
    memcpy(item, p, (size_t)(end - p));
    item[end - p] = '\0';
    l.n = 0;
    int rc = hosts_parse_list(&l, item, true, key, err, errsz);
    if (rc < 0) return rc;
    for (int i = 0; i < l.n; i++) memcpy(names[i], l.e[i].name, HOSTS_NAME_MAX);
    *n = l.n;
    return BT_OK;
}

static int parse_ranks(struct hosts_fleet *f, const char *p, const char *end, char *err,
                       size_t errsz)
{
    f->n_ranks = 0;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p)), *ie = comma ? comma : end;
        int v = 0;
        if (ie == p || ie - p > 3 || (comma && comma + 1 == end) || f->n_ranks >= HOSTS_RANKS_MAX)
            return bt_errf(err, errsz, BT_EINVAL, "fleet: bad ranks= list");
        for (const char *q = p; q < ie; q++) {
            if (*q < '0' || *q > '9') return bt_errf(err, errsz, BT_EINVAL, "fleet: bad ranks=");
            v = v * 10 + (*q - '0');
        }
        if (v >= f->n_in)
            return bt_errf(err, errsz, BT_EINVAL, "fleet: ranks= names host %d of %d", v, f->n_in);
        f->rank_host[f->n_ranks++] = (unsigned char)v;
        p = comma ? comma + 1 : end;
    }
    return BT_OK;
}

int hosts_fleet_parse(struct hosts_fleet *f, const char *text, char *err, size_t errsz)
{
    static const char *const keys[] = {"in", "evicted", "spare", "ranks", "resplit"};
    const char *val[5] = {NULL}, *vend[5] = {NULL};
    memset(f, 0, sizeof(*f));
    for (const char *p = text; *p;) {
        const char *semi = strchr(p, ';'), *end = semi ? semi : p + strlen(p);
        const char *eq = memchr(p, '=', (size_t)(end - p));
        int k = -1;
        for (int i = 0; eq && i < 5; i++)
            if ((size_t)(eq - p) == strlen(keys[i]) && !memcmp(p, keys[i], (size_t)(eq - p))) k = i;
        if (k < 0 || val[k])
            return bt_errf(err, errsz, BT_EINVAL, "fleet: unexpected '%.*s'",
                           (int)(end - p > 40 ? 40 : end - p), p);
        val[k] = eq + 1;
        vend[k] = end;
        if (semi && !semi[1]) return bt_errf(err, errsz, BT_EINVAL, "fleet: a ';' at the end");
        p = semi ? semi + 1 : end;
    }
    for (int i = 0; i < 5; i++)
        if (!val[i]) return bt_errf(err, errsz, BT_EINVAL, "fleet: no %s=", keys[i]);
    int rc;
    if ((rc = parse_names(val[0], vend[0], f->in, &f->n_in, "in=", err, errsz)) < 0 ||
        (rc = parse_names(val[1], vend[1], f->evicted, &f->n_evicted, "evicted=", err, errsz)) <
            0 ||
        (rc = parse_names(val[2], vend[2], f->spare, &f->n_spare, "spare=", err, errsz)) < 0 ||
        (rc = parse_ranks(f, val[3], vend[3], err, errsz)) < 0)
        return rc;
    if (vend[4] - val[4] != 1 || (*val[4] != '0' && *val[4] != '1'))
        return bt_errf(err, errsz, BT_EINVAL, "fleet: resplit= is not 0 or 1");
    f->resplit = *val[4] == '1';
    if (f->n_in == 0) return bt_errf(err, errsz, BT_EINVAL, "fleet: no host in service");
    return BT_OK;
}

const char *hosts_fleet_rank(const struct hosts_fleet *f, int k)
{
    if (k < 0 || k >= f->n_ranks) return NULL;
    return f->in[f->rank_host[k]];
}
