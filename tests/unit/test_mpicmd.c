/* test_mpicmd: the MPMD mpiexec command line of `baton serve` and `baton run` (server/mpicmd.h):
 * its sections, the listening socket's descriptor, the length cap and --dry-run's quoting. */
#include "mpicmd.h"
#include "t.h"

#include "log.h"

/* The command line as one string, through mpicmd_print. */
static const char *printed(const struct mpicmd *cmd)
{
    static char buf[4096];
    FILE *f = fmemopen(buf, sizeof(buf), "w");
    if (!f) return "";
    mpicmd_print(cmd, f);
    fclose(f);
    return buf;
}

int main(void)
{
    static struct mpicmd cmd;
    struct mpicmd_argv pass = {.n = 0};
    CHECK_INT(mpicmd_push(&pass, "-m"), BT_OK);
    CHECK_INT(mpicmd_push(&pass, "model.gguf"), BT_OK);
    struct mpicmd_spec sp = {.mpiexec = "mpiexec",
                             .serve = true,
                             .hosts = "h1,h2",
                             .ranks = 3,
                             .self = "/b/baton",
                             .server = "/b/baton-server",
                             .rankd = "/b/baton-rankd",
                             .pass = &pass};
    CHECK_INT(mpicmd_build(&cmd, &sp), BT_OK);
    CHECK_STR(printed(&cmd),
              "mpiexec -disable-auto-cleanup -hosts h1,h2 -n 1 /b/baton --wrap --report -- "
              "/b/baton-server --listen-fd FD -m model.gguf : -n 2 /b/baton --wrap -- "
              "/b/baton-rankd -m model.gguf\n");
    CHECK(cmd.argv.v[cmd.argv.n] == NULL);
    mpicmd_set_listen_fd(&cmd, 7);
    CHECK(strstr(printed(&cmd), " --listen-fd 7 -m ") != NULL);

    /* a re-split over fewer hosts (supervise.h): the tail after every section's options */
    const char *tail[] = {"--split=", NULL};
    sp.hosts = "h1:1,h3:1";
    sp.ranks = 2;
    sp.tail = tail;
    CHECK_INT(mpicmd_build(&cmd, &sp), BT_OK);
    CHECK_STR(printed(&cmd),
              "mpiexec -disable-auto-cleanup -hosts h1:1,h3:1 -n 1 /b/baton --wrap --report -- "
              "/b/baton-server --listen-fd FD -m model.gguf --split= : -n 1 /b/baton --wrap -- "
              "/b/baton-rankd -m model.gguf --split=\n");
    sp.tail = NULL;

    /* run, one rank, a hostfile: --oneshot, no cleanup flag, no second section */
    sp.serve = false;
    sp.hosts = NULL;
    sp.hostfile = "hosts.txt";
    sp.ranks = 1;
    CHECK_INT(mpicmd_build(&cmd, &sp), BT_OK);
    CHECK_STR(printed(&cmd), "mpiexec -f hosts.txt -n 1 /b/baton --wrap --report -- "
                             "/b/baton-server --oneshot -m model.gguf\n");

    /* quoting for a shell: spaces, quotes, an empty argument */
    pass.n = 0;
    mpicmd_push(&pass, "-p");
    mpicmd_push(&pass, "it's a $test");
    mpicmd_push(&pass, "");
    mpicmd_push(&pass, "a=b,c:d@e%f+g");
    CHECK_INT(mpicmd_build(&cmd, &sp), BT_OK);
    CHECK(strstr(printed(&cmd), "--oneshot -p 'it'\\''s a $test' '' a=b,c:d@e%f+g\n") != NULL);

    /* too long: BT_EFULL, never past the cap */
    pass.n = 0;
    for (int i = 0; i < MPICMD_MAX_ARGS; i++) mpicmd_push(&pass, "x");
    CHECK_INT(pass.n, MPICMD_MAX_ARGS);
    CHECK_INT(mpicmd_push(&pass, "y"), BT_EFULL);
    CHECK_INT(mpicmd_build(&cmd, &sp), BT_EFULL);
    CHECK(cmd.argv.n <= MPICMD_MAX_ARGS);
    CHECK(cmd.argv.v[cmd.argv.n] == NULL);
    return t_done();
}
