/* mpicmd: the MPMD mpiexec command line (mpicmd.h). */
#include "mpicmd.h"

#include "log.h"

#include <string.h>

int mpicmd_push(struct mpicmd_argv *a, const char *s)
{
    if (a->n >= MPICMD_MAX_ARGS) return BT_EFULL;
    a->v[a->n++] = (char *)s;
    a->v[a->n] = NULL;
    return BT_OK;
}

/* One MPMD section: "-n COUNT SELF --wrap [--report] -- BIN [extra...] PASS... TAIL..." */
static int push_section(struct mpicmd_argv *a, const char *count, const struct mpicmd_spec *sp,
                        bool report, const char *bin, const char *const *extra)
{
    int rc = 0;
    rc |= mpicmd_push(a, "-n");
    rc |= mpicmd_push(a, count);
    rc |= mpicmd_push(a, sp->self);
    rc |= mpicmd_push(a, "--wrap");
    if (report) rc |= mpicmd_push(a, "--report");
    rc |= mpicmd_push(a, "--");
    rc |= mpicmd_push(a, bin);
    for (int i = 0; extra && extra[i]; i++) rc |= mpicmd_push(a, extra[i]);
    for (int i = 0; i < sp->pass->n; i++) rc |= mpicmd_push(a, sp->pass->v[i]);
    for (int i = 0; sp->tail && sp->tail[i]; i++) rc |= mpicmd_push(a, sp->tail[i]);
    return rc ? BT_EFULL : BT_OK;
}

int mpicmd_build(struct mpicmd *cmd, const struct mpicmd_spec *sp)
{
    struct mpicmd_argv *a = &cmd->argv;
    a->n = 0;
    a->v[0] = NULL;
    snprintf(cmd->listen_fd, sizeof(cmd->listen_fd), "FD");
    snprintf(cmd->nrest, sizeof(cmd->nrest), "%d", sp->ranks - 1);
    int rc = mpicmd_push(a, sp->mpiexec);
    if (sp->serve) rc |= mpicmd_push(a, "-disable-auto-cleanup");
    if (sp->hosts) {
        rc |= mpicmd_push(a, "-hosts");
        rc |= mpicmd_push(a, sp->hosts);
    }
    if (sp->hostfile) {
        rc |= mpicmd_push(a, "-f");
        rc |= mpicmd_push(a, sp->hostfile);
    }
    const char *run_extra[] = {"--oneshot", NULL};
    const char *serve_extra[] = {"--listen-fd", cmd->listen_fd, NULL};
    rc |= push_section(a, "1", sp, true, sp->server, sp->serve ? serve_extra : run_extra);
    if (sp->ranks > 1) {
        rc |= mpicmd_push(a, ":");
        rc |= push_section(a, cmd->nrest, sp, false, sp->rankd, NULL);
    }
    return rc ? BT_EFULL : BT_OK;
}

void mpicmd_set_listen_fd(struct mpicmd *cmd, int fd)
{
    snprintf(cmd->listen_fd, sizeof(cmd->listen_fd), "%d", fd);
}

static void print_quoted(const char *s, FILE *f)
{
    static const char plain[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                                "-_./=:,+@%";
    if (*s && strspn(s, plain) == strlen(s)) {
        fputs(s, f);
        return;
    }
    fputc('\'', f);
    for (const char *p = s; *p; p++) {
        if (*p == '\'')
            fputs("'\\''", f);
        else
            fputc(*p, f);
    }
    fputc('\'', f);
}

void mpicmd_print(const struct mpicmd *cmd, FILE *f)
{
    for (int i = 0; i < cmd->argv.n; i++) {
        if (i) fputc(' ', f);
        print_quoted(cmd->argv.v[i], f);
    }
    fputc('\n', f);
}
