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
        CHECK_STR(c.server.host, "127.0.0.1");
        CHECK_INT(c.server.port, 8080);
        CHECK_INT(c.server.listen_fd, -1);
        CHECK_INT(c.stage.parallel, 4);
        CHECK_INT(c.server.queue, 64);
        CHECK_INT(c.stage.prefill_chunk, 256);
        CHECK_INT(c.server.max_body, 1 << 20);
        CHECK(c.stage.model == NULL);
        CHECK(c.server.api_key == NULL);
        CHECK_INT(c.stage.log_level, CFG_LOG_UNSET);
        CHECK_INT(c.stage.cache_type, CFG_CACHE_F16);
        CHECK_INT(c.launch.ranks, 1);
        CHECK(!c.launch.dry_run);
        CHECK(c.run.temp == 0.8);
        cfg_free(&c);
        CHECK(c.server.host == NULL);
    }
    /* seconds with fractions (CFG_SEC, stored as milliseconds) and the fault defaults */
    {
        char *argv[] = {"srv", NULL};
        CHECK_INT(load(&c, argv, NULL, err), 0);
        CHECK_INT(c.stage.heartbeat_interval_ms, 1000);
        CHECK_INT(c.stage.heartbeat_misses, 3);
        CHECK_INT(c.stage.step_timeout_ms, 30000);
        CHECK_INT(c.server.drain_timeout_ms, 30000);
        cfg_free(&c);
        char *argv2[] = {"srv", "--heartbeat-interval",
                         "0.2", "--step-timeout",
                         "2.5", "--drain-timeout",
                         "0",   "--heartbeat-misses",
                         "5",   NULL};
        CHECK_INT(load(&c, argv2, NULL, err), 0);
        CHECK_INT(c.stage.heartbeat_interval_ms, 200);
        CHECK_INT(c.stage.step_timeout_ms, 2500);
        CHECK_INT(c.server.drain_timeout_ms, 0);
        CHECK_INT(c.stage.heartbeat_misses, 5);
        cfg_free(&c);
        char *env[] = {"BATON_HEARTBEAT_INTERVAL=.05", NULL};
        CHECK_INT(load(&c, argv, env, err), 0);
        CHECK_INT(c.stage.heartbeat_interval_ms, 50);
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
        CHECK_STR(c.stage.model, "a.gguf");
        CHECK_INT(c.server.port, 9000);
        CHECK_INT(c.stage.ctx_size, 512);
        CHECK_INT(c.stage.threads, 3);
        CHECK_INT(c.server.max_body, 64 * 1024);
        CHECK_STR(c.server.api_key, "sekrit");
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
        CHECK_INT(c.server.port, 7003); /* flag */
        CHECK_INT(c.stage.parallel, 3); /* env over file */
        CHECK_INT(c.server.queue, 5);   /* file over default */
        CHECK_STR(c.server.model_alias, "my model");
        CHECK_INT(c.stage.prefill_chunk, 256); /* default */
        CHECK_STR(c.config, path);
        cfg_free(&c);
        /* the file named by env */
        char envcfg[128];
        snprintf(envcfg, sizeof(envcfg), "BATON_CONFIG=%s", path);
        char *argv2[] = {"srv", NULL};
        char *env2[] = {envcfg, NULL};
        CHECK_INT(load(&c, argv2, env2, err), 0);
        CHECK_INT(c.server.port, 7001);
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
    /* typed options: float, enum, bool; the launcher's view of argv */
    {
        char *argv[] = {"srv",          "--temp", "0.25",      "--log-level", "warn",
                        "--cache-type", "f32",    "--dry-run", "--ranks",     "3",
                        "--device",     "cuda:1", NULL};
        CHECK_INT(load(&c, argv, NULL, err), 0);
        CHECK(c.run.temp == 0.25);
        CHECK_INT(c.stage.log_level, CFG_LOG_WARN);
        CHECK_INT(c.stage.cache_type, CFG_CACHE_F32);
        CHECK(c.launch.dry_run);
        CHECK_INT(c.launch.ranks, 3);
        CHECK_INT(cfg_device(&c.stage), 1);
        cfg_free(&c);
        char *env[] = {"BATON_DRY_RUN=no", "BATON_TEMP=1e-1", NULL};
        char *argv2[] = {"srv", NULL};
        CHECK_INT(load(&c, argv2, env, err), 0);
        CHECK(!c.launch.dry_run);
        CHECK(c.run.temp == 0.1);
        cfg_free(&c);
        static const char *bad_temp[] = {"nan", "inf", "-0.5", "101", "1x", "", " 1"};
        for (size_t i = 0; i < sizeof(bad_temp) / sizeof(bad_temp[0]); i++) {
            char *a[] = {"srv", "--temp", (char *)bad_temp[i], NULL};
            CHECK_INT(load(&c, a, NULL, err), BT_EINVAL);
            CHECK(strstr(err, "option temp") != NULL);
            cfg_free(&c);
        }
        char *argv3[] = {"srv", "--dry-run=maybe", NULL};
        CHECK_INT(load(&c, argv3, NULL, err), BT_EINVAL);
        CHECK(strstr(err, "dry-run") && strstr(err, "maybe"));
        cfg_free(&c);
        char *argv4[] = {"srv", "--cache-type", "q8", NULL};
        CHECK_INT(load(&c, argv4, NULL, err), BT_EINVAL);
        CHECK(strstr(err, "cache-type") && strstr(err, "f16|f32"));
        cfg_free(&c);
        char *argv5[] = {"srv", "--device", "gpu0", NULL};
        CHECK_INT(load(&c, argv5, NULL, err), BT_EINVAL);
        CHECK(strstr(err, "option device") != NULL);
        cfg_free(&c);
        char *argv6[] = {"srv", "--chat-template", "no-such-family", NULL};
        CHECK_INT(load(&c, argv6, NULL, err), BT_EINVAL);
        CHECK(strstr(err, "option chat-template") != NULL);
        cfg_free(&c);
        /* cfg_flag_at: the option an argument names and how many entries it takes */
        char *l[] = {"baton",     "--ranks",     "2",   "-m", "x.gguf",
                     "--dry-run", "--hosts=a,b", "pos", NULL};
        int n;
        CHECK(strcmp(cfg_flag_at(8, l, 1, &n)->name, "ranks") == 0 && n == 2);
        CHECK(strcmp(cfg_flag_at(8, l, 3, &n)->name, "model") == 0 && n == 2);
        CHECK(strcmp(cfg_flag_at(8, l, 5, &n)->name, "dry-run") == 0 && n == 1);
        CHECK(strcmp(cfg_flag_at(8, l, 6, &n)->name, "hosts") == 0 && n == 1);
        CHECK(cfg_flag_at(8, l, 7, &n) == NULL && n == 1);
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
        char env[80], env2[80];
        CHECK(strncmp(cfg_env_name(o, env, sizeof(env)), "BATON_", 6) == 0);
        CHECK(strchr(env, '-') == NULL);
        CHECK(o->doc && *o->doc);
        CHECK(o->group < CFG_G_COUNT);
        for (int k = 0; k < i; k++) {
            CHECK(strcmp(o->name, cfg_opts[k].name) != 0);
            CHECK(strcmp(env, cfg_env_name(&cfg_opts[k], env2, sizeof(env2))) != 0);
            CHECK(!o->shortopt || o->shortopt != cfg_opts[k].shortopt);
        }
        if (o->type == CFG_INT || o->type == CFG_SIZE || o->type == CFG_SEC)
            CHECK(o->min <= o->max);
        if (o->type == CFG_FLOAT) CHECK(o->fmin <= o->fmax);
        if (o->type == CFG_ENUM) CHECK(o->enums && strchr(o->enums, '|'));
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
        CHECK_INT(c.server.port, 8080);
        cfg_free(&c);
    }
    return t_done();
}
