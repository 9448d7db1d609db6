/* test_config: baton-server's option table: defaults, flags, env, config file, precedence,
 * bad values (an error naming the option), and config/baton.conf.example kept in sync. */
#include "config.h"
#include "log.h"
#include "t.h"

#include <unistd.h>

static int load(struct cfg *c, char **argv, char **env, char *err)
{
    int argc = 0;
    while (argv[argc]) argc++;
    return cfg_load(c, argc, argv, env, err, 256);
}

static const char *write_tmp(const char *text)
{
    static char path[64];
    snprintf(path, sizeof(path), "/tmp/baton-test-config-%d.conf", (int)getpid());
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

int main(void)
{
    struct cfg c;
    char err[256];

    /* defaults */
    {
        char *argv[] = {"srv", NULL};
        CHECK_INT(load(&c, argv, NULL, err), 0);
        CHECK_STR(c.host, "127.0.0.1");
        CHECK_INT(c.port, 8080);
        CHECK_INT(c.listen_fd, -1);
        CHECK_INT(c.parallel, 4);
        CHECK_INT(c.queue, 64);
        CHECK_INT(c.prefill_chunk, 256);
        CHECK_INT(c.max_body, 1 << 20);
        CHECK(c.model == NULL);
        CHECK(c.api_key == NULL);
        CHECK(c.log_level == NULL);
        cfg_free(&c);
        CHECK(c.host == NULL);
    }
    /* seconds with fractions (CFG_SEC, stored as milliseconds) and the fault defaults */
    {
        char *argv[] = {"srv", NULL};
        CHECK_INT(load(&c, argv, NULL, err), 0);
        CHECK_INT(c.heartbeat_interval_ms, 1000);
        CHECK_INT(c.heartbeat_misses, 3);
        CHECK_INT(c.step_timeout_ms, 30000);
        CHECK_INT(c.drain_timeout_ms, 30000);
        cfg_free(&c);
        char *argv2[] = {"srv", "--heartbeat-interval",
                         "0.2", "--step-timeout",
                         "2.5", "--drain-timeout",
                         "0",   "--heartbeat-misses",
                         "5",   NULL};
        CHECK_INT(load(&c, argv2, NULL, err), 0);
        CHECK_INT(c.heartbeat_interval_ms, 200);
        CHECK_INT(c.step_timeout_ms, 2500);
        CHECK_INT(c.drain_timeout_ms, 0);
        CHECK_INT(c.heartbeat_misses, 5);
        cfg_free(&c);
        char *env[] = {"BATON_HEARTBEAT_INTERVAL=.05", NULL};
        CHECK_INT(load(&c, argv, env, err), 0);
        CHECK_INT(c.heartbeat_interval_ms, 50);
        cfg_free(&c);
        static const char *bad[] = {"-1", "1e3", "0.0001", "abc", "", "1.2.3", "0.001"};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            char *a[] = {"srv", "--heartbeat-interval", (char *)bad[i], NULL};
            CHECK_INT(load(&c, a, NULL, err), BT_EINVAL);
            CHECK(strstr(err, "heartbeat-interval") != NULL);
            cfg_free(&c);
        }
    }
    /* flags: long, --x=y, short */
    {
        char *argv[] = {"srv", "-m",         "a.gguf", "--port=9000", "--ctx-size", "512", "-t",
                        "3",   "--max-body", "64K",    "--api-key",   "sekrit",     NULL};
        CHECK_INT(load(&c, argv, NULL, err), 0);
        CHECK_STR(c.model, "a.gguf");
        CHECK_INT(c.port, 9000);
        CHECK_INT(c.ctx_size, 512);
        CHECK_INT(c.threads, 3);
        CHECK_INT(c.max_body, 64 * 1024);
        CHECK_STR(c.api_key, "sekrit");
        cfg_free(&c);
    }
    /* precedence: flag > env > file > default */
    {
        const char *path = write_tmp("# comment\n\n port = 7001\nparallel=2\n"
                                     "model-alias = \"my model\"\nqueue = 5\n");
        char cfgarg[128];
        snprintf(cfgarg, sizeof(cfgarg), "--config=%s", path);
        char *argv[] = {"srv", cfgarg, "--port", "7003", NULL};
        char *env[] = {"BATON_PORT=7002", "BATON_PARALLEL=3", "OTHER=1", NULL};
        CHECK_INT(load(&c, argv, env, err), 0);
        CHECK_INT(c.port, 7003);  /* flag */
        CHECK_INT(c.parallel, 3); /* env over file */
        CHECK_INT(c.queue, 5);    /* file over default */
        CHECK_STR(c.model_alias, "my model");
        CHECK_INT(c.prefill_chunk, 256); /* default */
        CHECK_STR(c.config, path);
        cfg_free(&c);
        /* the file named by env */
        char envcfg[128];
        snprintf(envcfg, sizeof(envcfg), "BATON_CONFIG=%s", path);
        char *argv2[] = {"srv", NULL};
        char *env2[] = {envcfg, NULL};
        CHECK_INT(load(&c, argv2, env2, err), 0);
        CHECK_INT(c.port, 7001);
        cfg_free(&c);
        unlink(path);
    }
    /* errors name the option, the value and where it came from */
    {
        char *argv[] = {"srv", "--port", "70000", NULL};
        CHECK_INT(load(&c, argv, NULL, err), BT_EINVAL);
        CHECK(strstr(err, "option port") && strstr(err, "70000") && strstr(err, "flag"));
        cfg_free(&c);
        char *argv2[] = {"srv", NULL};
        char *env[] = {"BATON_PARALLEL=zero", NULL};
        CHECK_INT(load(&c, argv2, env, err), BT_EINVAL);
        CHECK(strstr(err, "option parallel") && strstr(err, "env BATON_PARALLEL"));
        cfg_free(&c);
        char *argv3[] = {"srv", "--bogus", "1", NULL};
        CHECK_INT(load(&c, argv3, NULL, err), BT_EINVAL);
        CHECK(strstr(err, "--bogus") != NULL);
        cfg_free(&c);
        char *argv4[] = {"srv", "--port", NULL};
        CHECK_INT(load(&c, argv4, NULL, err), BT_EINVAL);
        CHECK(strstr(err, "missing value") != NULL);
        cfg_free(&c);
        char *argv5[] = {"srv", "--log-level", "loud", NULL};
        CHECK_INT(load(&c, argv5, NULL, err), BT_EINVAL);
        CHECK(strstr(err, "log-level") && strstr(err, "debug|info|warn|error"));
        cfg_free(&c);
        char *argv6[] = {"srv", "--max-body", "12Q", NULL};
        CHECK_INT(load(&c, argv6, NULL, err), BT_EINVAL);
        CHECK(strstr(err, "max-body") != NULL);
        cfg_free(&c);
        char *argv7[] = {"srv", "--parallel", "0", NULL};
        CHECK_INT(load(&c, argv7, NULL, err), BT_EINVAL);
        cfg_free(&c);
        const char *path = write_tmp("port = 1\nnot-an-option = 3\n");
        char *argv8[] = {"srv", "--config", (char *)path, NULL};
        CHECK_INT(load(&c, argv8, NULL, err), BT_EINVAL);
        CHECK(strstr(err, ":2:") && strstr(err, "not-an-option"));
        cfg_free(&c);
        path = write_tmp("port 1\n");
        CHECK_INT(load(&c, argv8, NULL, err), BT_EINVAL);
        CHECK(strstr(err, "key = value") != NULL);
        cfg_free(&c);
        path = write_tmp("port = 99999999\n");
        CHECK_INT(load(&c, argv8, NULL, err), BT_EINVAL);
        CHECK(strstr(err, "option port") && strstr(err, ":1"));
        cfg_free(&c);
        unlink(path);
        char *argv9[] = {"srv", "--config", "/nonexistent/baton.conf", NULL};
        CHECK_INT(load(&c, argv9, NULL, err), BT_EINVAL);
        cfg_free(&c);
    }
    /* --help and friends */
    {
        char *argv[] = {"srv", "--help", NULL};
        CHECK_INT(load(&c, argv, NULL, err), 0);
        CHECK_INT(c.help, 1);
        cfg_free(&c);
    }
    /* every option: a unique name and env var, sane bounds, a default within them */
    for (int i = 0; i < cfg_n_opts; i++) {
        const struct cfg_opt *o = &cfg_opts[i];
        CHECK(strncmp(o->env, "BATON_", 6) == 0);
        CHECK(o->doc && *o->doc);
        for (int k = 0; k < i; k++) {
            CHECK(strcmp(o->name, cfg_opts[k].name) != 0);
            CHECK(strcmp(o->env, cfg_opts[k].env) != 0);
        }
        if (o->type != CFG_STR) CHECK(o->min <= o->max);
    }
    /* the example config is exactly what the table generates */
    {
        char *gen = NULL, *file = NULL;
        size_t gen_len = 0;
        FILE *f = open_memstream(&gen, &gen_len);
        cfg_write_example(f);
        fclose(f);
        FILE *e = fopen(t_path("BATON_SRC", "config/baton.conf.example"), "r");
        CHECK(e != NULL);
        if (e) {
            file = calloc(1, gen_len + 2);
            size_t n = fread(file, 1, gen_len + 1, e);
            fclose(e);
            CHECK_INT(n, gen_len);
            CHECK(memcmp(file, gen, gen_len) == 0);
            if (n != gen_len || memcmp(file, gen, gen_len) != 0)
                fprintf(stderr, "config/baton.conf.example is out of date: regenerate it with "
                                "`baton-server --print-config-example > "
                                "config/baton.conf.example`\n");
        }
        for (int i = 0; i < cfg_n_opts; i++) {
            char key[80];
            snprintf(key, sizeof(key), "\n#%s =", cfg_opts[i].name);
            CHECK(file && strstr(file, key) != NULL);
        }
        free(file);
        free(gen);
        /* and the example itself loads (all keys commented out: only defaults) */
        char *argv[] = {"srv", "--config", (char *)t_path("BATON_SRC", "config/baton.conf.example"),
                        NULL};
        CHECK_INT(load(&c, argv, NULL, err), 0);
        CHECK_INT(c.port, 8080);
        cfg_free(&c);
    }
    return t_done();
}
