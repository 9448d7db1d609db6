/* test_hosts: host lists (--hosts, --spare-hosts, the hostfile with its spare marker), the bad
 * input they refuse, the layout of --ranks over the hosts (hydra's counts, contiguous), and the
 * fleet line the supervisor hands rank 0 (server/hosts.h). */
#include "hosts.h"
#include "t.h"

#include "log.h"

#include <stdio.h>
#include <string.h>

static struct hosts_list L;
static char err[512];

static int list(const char *text, bool spare)
{
    return hosts_parse_list(&L, text, spare, "option hosts", err, sizeof(err));
}

static void test_lists(void)
{
    L.n = 0;
    CHECK_INT(list("h1,h2:2,node-3.example_x", false), 0);
    CHECK_INT(L.n, 3);
    CHECK_STR(L.e[0].name, "h1");
    CHECK_INT(L.e[0].slots, 0);
    CHECK_INT(L.e[1].slots, 2);
    CHECK_STR(L.e[2].name, "node-3.example_x");
    CHECK(!L.e[2].spare);
    CHECK_INT(list("h4,h5", true), 0);
    CHECK_INT(L.n, 5);
    CHECK(L.e[4].spare);
    CHECK_INT(hosts_check(&L, err, sizeof(err)), 0);
    CHECK_INT(hosts_find(&L, "h5"), 4);
    CHECK_INT(hosts_find(&L, "h6"), -1);

    /* bad input, each with a message naming it */
    const struct {
        const char *text;
        bool spare;
        const char *says;
    } bad[] = {
        {"", false, "no host"},
        {"h1,,h2", false, "empty host name"},
        {"h1,", false, "empty host name"},
        {":2", false, "empty host name"},
        {"h1:0", false, "NAME:RANKS"},
        {"h1:257", false, "NAME:RANKS"},
        {"h1:2x", false, "NAME:RANKS"},
        {"h1:", false, "NAME:RANKS"},
        {"h1:-1", false, "NAME:RANKS"},
        {"h 1", false, "holds ' '"},
        {"h1;rm", false, "holds ';'"},
        {"fe80::1", false, "NAME:RANKS"},
        {"user@h1", false, "holds '@'"},
        {"h4:1", true, "a spare takes the ranks"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        L.n = 0;
        err[0] = 0;
        CHECK_INT(list(bad[i].text, bad[i].spare), BT_EINVAL);
        if (!strstr(err, bad[i].says)) {
            fprintf(stderr, "'%s': %s (want '%s')\n", bad[i].text, err, bad[i].says);
            CHECK(0);
        }
    }
    char longname[100];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[99] = 0;
    L.n = 0;
    CHECK_INT(list(longname, false), BT_EINVAL);
    CHECK(strstr(err, "longer than 63"));
    /* 64 hosts fit, 65 do not */
    char many[65 * 8] = "";
    for (int i = 0; i < 65; i++) snprintf(many + strlen(many), 8, "%sh%d", i ? "," : "", i);
    L.n = 0;
    CHECK_INT(list(many, false), BT_EINVAL);
    CHECK(strstr(err, "more than 64"));
    *strrchr(many, ',') = 0;
    L.n = 0;
    CHECK_INT(list(many, false), 0);
    CHECK_INT(L.n, 64);

    /* the whole list */
    L.n = 0;
    CHECK_INT(list("h1,h2,h3", false), 0);
    CHECK_INT(list("h4,h2", true), 0);
    CHECK_INT(hosts_check(&L, err, sizeof(err)), BT_EINVAL);
    CHECK(strstr(err, "host h2 is both a regular host and a spare"));
    L.n = 0;
    CHECK_INT(list("h1,h2,h1", false), 0);
    CHECK_INT(hosts_check(&L, err, sizeof(err)), BT_EINVAL);
    CHECK(strstr(err, "host h1 is named twice"));
    L.n = 0;
    CHECK_INT(list("h4,h4", true), 0);
    CHECK_INT(hosts_check(&L, err, sizeof(err)), BT_EINVAL);
    CHECK(strstr(err, "twice as a spare"));
    L.n = 0;
    CHECK_INT(list("h4", true), 0);
    CHECK_INT(hosts_check(&L, err, sizeof(err)), BT_EINVAL);
    CHECK(strstr(err, "no regular host"));
}

static void test_hostfile(void)
{
    L.n = 0;
    CHECK_INT(hosts_parse_file(&L,
                               "# the cluster\n"
                               "node1:2\n"
                               "\n"
                               "  node2\t# one rank\n"
                               "node3 \r\n"
                               "node4 spare\n"
                               "node5\tspare # standby\n"
                               "node6",
                               "hf", err, sizeof(err)),
              0);
    CHECK_INT(L.n, 6);
    CHECK_STR(L.e[0].name, "node1");
    CHECK_INT(L.e[0].slots, 2);
    CHECK_STR(L.e[1].name, "node2");
    CHECK_STR(L.e[2].name, "node3");
    CHECK(!L.e[2].spare);
    CHECK(L.e[3].spare && L.e[4].spare);
    CHECK_STR(L.e[5].name, "node6");
    CHECK(!L.e[5].spare);

    const struct {
        const char *text, *says;
    } bad[] = {
        {"node1\nnode2 spear\n", "hf:2: expected `NAME[:RANKS]` or `NAME spare`"},
        {"node1 spare extra\n", "hf:1: expected"},
        {"node1:2 spare\n", "hf:1: spare host 'node1:2' with a rank count"},
        {"a\nb\nno/de\n", "hf:3: host name 'no/de' holds '/'"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        L.n = 0;
        CHECK_INT(hosts_parse_file(&L, bad[i].text, "hf", err, sizeof(err)), BT_EINVAL);
        if (!strstr(err, bad[i].says)) {
            fprintf(stderr, "%s (want '%s')\n", err, bad[i].says);
            CHECK(0);
        }
    }
    /* a file that cannot be read */
    L.n = 0;
    CHECK_INT(hosts_read_file(&L, "/nonexistent/hosts", err, sizeof(err)), BT_EINVAL);
    CHECK(strstr(err, "cannot open '/nonexistent/hosts'"));
    char path[] = "/tmp/test_hosts.XXXXXX";
    FILE *f = fdopen(mkstemp(path), "w");
    CHECK(f != NULL);
    fputs("a:1\nb spare\n", f);
    fclose(f);
    L.n = 0;
    CHECK_INT(hosts_read_file(&L, path, err, sizeof(err)), 0);
    CHECK_INT(L.n, 2);
    CHECK(L.e[1].spare);
    remove(path);
}

static void test_layout(void)
{
    int c[HOSTS_MAX];
    /* one rank per host, as hydra's default: a, b, c */
    L.n = 0;
    CHECK_INT(list("a,b,c", false), 0);
    CHECK_INT(list("s", true), 0);
    CHECK_INT(hosts_layout(&L, 3, c), 3);
    CHECK(c[0] == 1 && c[1] == 1 && c[2] == 1 && c[3] == 0);
    /* more ranks than slots: hydra goes round again (a gets ranks 0 and 3): a:2, b:1, c:1 */
    CHECK_INT(hosts_layout(&L, 4, c), 3);
    CHECK(c[0] == 2 && c[1] == 1 && c[2] == 1);
    CHECK_INT(hosts_layout(&L, 7, c), 3);
    CHECK(c[0] == 3 && c[1] == 2 && c[2] == 2);
    /* fewer ranks than hosts: c gets none */
    CHECK_INT(hosts_layout(&L, 2, c), 2);
    CHECK(c[0] == 1 && c[1] == 1 && c[2] == 0);
    /* slots */
    L.n = 0;
    CHECK_INT(list("a:2,b:3", false), 0);
    CHECK_INT(hosts_layout(&L, 4, c), 2);
    CHECK(c[0] == 2 && c[1] == 2);
    CHECK_INT(hosts_layout(&L, 6, c), 2);
    CHECK(c[0] == 3 && c[1] == 3); /* a:2 b:3, then a takes the sixth */
    CHECK_INT(hosts_layout(&L, 1, c), 1);
    CHECK(c[0] == 1 && c[1] == 0);
}

static void test_fleet(void)
{
    static struct hosts_fleet f, g;
    char buf[4096];
    memset(&f, 0, sizeof(f));
    const char *in[] = {"h1", "h3", "h4"};
    for (int i = 0; i < 3; i++) snprintf(f.in[f.n_in++], HOSTS_NAME_MAX, "%s", in[i]);
    snprintf(f.evicted[f.n_evicted++], HOSTS_NAME_MAX, "h2");
    snprintf(f.spare[f.n_spare++], HOSTS_NAME_MAX, "h5");
    const unsigned char rh[] = {0, 0, 1, 2};
    memcpy(f.rank_host, rh, sizeof(rh));
    f.n_ranks = 4;
    CHECK_INT(hosts_fleet_format(&f, buf, sizeof(buf)), 0);
    CHECK_STR(buf, "in=h1,h3,h4;evicted=h2;spare=h5;ranks=0,0,1,2;resplit=0");
    CHECK_INT(hosts_fleet_parse(&g, buf, err, sizeof(err)), 0);
    CHECK_INT(g.n_in, 3);
    CHECK_STR(g.in[2], "h4");
    CHECK_INT(g.n_evicted, 1);
    CHECK_STR(g.evicted[0], "h2");
    CHECK_INT(g.n_spare, 1);
    CHECK_INT(g.n_ranks, 4);
    CHECK_STR(hosts_fleet_rank(&g, 1), "h1");
    CHECK_STR(hosts_fleet_rank(&g, 3), "h4");
    CHECK(hosts_fleet_rank(&g, 4) == NULL);
    CHECK(hosts_fleet_rank(&g, -1) == NULL);
    CHECK(!g.resplit);
    CHECK_INT(hosts_fleet_format(&f, buf, 20), BT_EFULL);
    /* empty lists, a re-split */
    CHECK_INT(hosts_fleet_parse(&g, "in=a,b;evicted=;spare=;ranks=0,1;resplit=1", err, sizeof(err)),
              0);
    CHECK(g.resplit && g.n_evicted == 0 && g.n_spare == 0 && g.n_ranks == 2);
    /* anything else is refused */
    const char *bad[] = {
        "",
        "in=a;evicted=;spare=;ranks=0",                /* no resplit= */
        "in=;evicted=;spare=;ranks=;resplit=0",        /* nobody in service */
        "in=a;evicted=;spare=;ranks=1;resplit=0",      /* rank on host 1 of 1 */
        "in=a;evicted=;spare=;ranks=0,;resplit=0",     /* trailing comma */
        "in=a;evicted=;spare=;ranks=0,,0;resplit=0",   /* empty item */
        "in=a;evicted=;spare=;ranks=x;resplit=0",      /* not a number */
        "in=a;evicted=;spare=;ranks=0;resplit=2",      /* not 0 or 1 */
        "in=a;evicted=;spare=;ranks=0;resplit=0;x=1",  /* unknown key */
        "in=a;in=b;evicted=;spare=;ranks=0;resplit=0", /* twice */
        "in=a b;evicted=;spare=;ranks=0;resplit=0",    /* bad name */
        "in=a:2;evicted=;spare=;ranks=0;resplit=0",    /* a count */
        "in=a;evicted=;spare=;ranks=0;resplit=0;",     /* empty item at the end */
        "in=a;evicted=;spare=;ranks=0000;resplit=0",   /* too long */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (hosts_fleet_parse(&g, bad[i], err, sizeof(err)) != BT_EINVAL) {
            fprintf(stderr, "accepted: '%s'\n", bad[i]);
            CHECK(0);
        }
}

int main(void)
{
    test_lists();
    test_hostfile();
    test_layout();
    test_fleet();
    return t_done();
}
