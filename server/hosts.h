/* hosts: the hosts of a multi-host job, as the supervisor and rank 0 see them. Pure functions
 * (no I/O but hosts_read_file), shared by the launcher (server/launcher.c, supervise.c) and
 * baton-server (/health, /metrics):
 *
 *  - the lists: --hosts "h1,h2:2,h3" (NAME[:RANKS]), --spare-hosts "h4,h5" (names only: a spare
 *    takes the ranks of the host it stands in for), and the hostfile: one host a line,
 *    `NAME[:RANKS] [spare]`, '#' starts a comment, blank lines are skipped. A name is 1..63
 *    letters, digits, '.', '-' or '_'; a host is named once (regular or spare);
 *  - the layout: how --ranks R spreads over the regular hosts. hydra's rule (each host holds its
 *    RANKS slots, 1 by default, filled in order, and round again while ranks are left) gives
 *    each host its count; the launcher then hands hydra `NAME:COUNT` for each host, so a host's
 *    ranks are contiguous (rank k on the k-th slot of that list) and a host that gets no rank is
 *    not used;
 *  - the fleet line: what the supervisor tells rank 0 in BATON_FLEET at every start (the hosts
 *    in service in rank order, the evicted ones, the spares left, whether the layers were
 *    re-split), for /health and /metrics:
 *        in=h1,h3,h4;evicted=h2;spare=h5;ranks=0,1,2;resplit=0
 *    ranks= gives, for each rank, the index of its host in in=.
 *
 * Threads: any (no shared state). */
#ifndef BATON_HOSTS_H
#define BATON_HOSTS_H

#include <stdbool.h>
#include <stddef.h>

#define HOSTS_MAX       64  /* hosts of one service, regular and spare */
#define HOSTS_NAME_MAX  64  /* bytes of a name with its NUL */
#define HOSTS_RANKS_MAX 256 /* ranks of one job (--ranks' bound, STAGE_MAX) */

struct hosts_entry {
    char name[HOSTS_NAME_MAX];
    int slots;  /* NAME:SLOTS, 0 when not given (hydra: 1) */
    bool spare; /* --spare-hosts or `spare` in the hostfile */
};

struct hosts_list {
    struct hosts_entry e[HOSTS_MAX];
    int n;
};

/* Append the comma-separated hosts of text (from `what`, e.g. "--hosts", for the error).
 * Spares take no :RANKS. BT_EINVAL with err on a bad name, an empty item, too many hosts. */
int hosts_parse_list(struct hosts_list *l, const char *text, bool spare, const char *what,
                     char *err, size_t errsz);
/* Append the hosts of a hostfile's text (path: for the errors, "path:line: ..."). */
int hosts_parse_file(struct hosts_list *l, const char *text, const char *path, char *err,
                     size_t errsz);
/* Read path (at most 64 KiB) and hosts_parse_file it. */
int hosts_read_file(struct hosts_list *l, const char *path, char *err, size_t errsz);
/* The whole list: no host named twice, at least one regular host. */
int hosts_check(const struct hosts_list *l, char *err, size_t errsz);
/* Index of the entry named name, or -1. */
int hosts_find(const struct hosts_list *l, const char *name);
/* counts[i]: the ranks regular entry i holds when ranks spread as hydra would (spares: 0).
 * Returns how many regular hosts get at least one rank. */
int hosts_layout(const struct hosts_list *l, int ranks, int *counts);

/* ---- the fleet line (BATON_FLEET) ---- */

struct hosts_fleet {
    int n_in, n_evicted, n_spare;
    char in[HOSTS_MAX][HOSTS_NAME_MAX];      /* in service, in rank order */
    char evicted[HOSTS_MAX][HOSTS_NAME_MAX]; /* evicted (failures, or unable to load) */
    char spare[HOSTS_MAX][HOSTS_NAME_MAX];   /* spares standing by */
    int n_ranks;
    unsigned char rank_host[HOSTS_RANKS_MAX]; /* rank k runs on in[rank_host[k]] */
    bool resplit;                             /* the layers were re-split over fewer hosts */
};

/* The line into buf; BT_EFULL when it does not fit. */
int hosts_fleet_format(const struct hosts_fleet *f, char *buf, size_t cap);
/* Parse a line written by hosts_fleet_format; BT_EINVAL with err on anything else. */
int hosts_fleet_parse(struct hosts_fleet *f, const char *text, char *err, size_t errsz);
/* Rank k's host in service, NULL when unknown. */
const char *hosts_fleet_rank(const struct hosts_fleet *f, int k);

#endif
