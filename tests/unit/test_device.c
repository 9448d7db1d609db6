/* device: the --device option (device.h, the config table) and what a CUDA device request does
 * on a machine without one: one clear "no CUDA device: ..." error, the CPU path untouched. Runs
 * everywhere (no GPU needed); on a machine with a GPU the last part checks the device works. */
#include "t.h"

#include "config.h"
#include "cuda.h"
#include "device.h"
#include "forward.h"
#include "gguf.h"
#include "kv.h"
#include "log.h"
#include "model.h"
#include "quant.h"
#include "threadpool.h"

static void test_parse(void)
{
    char err[256];
    int d = 99;
    CHECK_INT(dev_parse("cpu", &d, err, sizeof(err)), 0);
    CHECK_INT(d, DEV_CPU);
    CHECK_INT(dev_parse(NULL, &d, err, sizeof(err)), 0);
    CHECK_INT(d, DEV_CPU);
    CHECK_INT(dev_parse("cuda", &d, err, sizeof(err)), 0);
    CHECK_INT(d, 0);
    CHECK_INT(dev_parse("cuda:0", &d, err, sizeof(err)), 0);
    CHECK_INT(d, 0);
    CHECK_INT(dev_parse("cuda:7", &d, err, sizeof(err)), 0);
    CHECK_INT(d, 7);
    CHECK_INT(dev_parse("cuda:1023", &d, err, sizeof(err)), 0);
    CHECK_INT(d, 1023);
    const char *bad[] = {"",        "gpu",       "cuda:",
                         "cuda:-1", "cuda:1024", "cuda:1x",
                         "CPU",     "cuda:0 ",   "cuda:99999999999999999999",
                         "rocm:0"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = 0;
        CHECK_INT(dev_parse(bad[i], &d, err, sizeof(err)), BT_EINVAL);
        CHECK(strstr(err, "bad device") != NULL);
    }
    char buf[32];
    CHECK_STR(dev_name(DEV_CPU, buf, sizeof(buf)), "cpu");
    CHECK_STR(dev_name(3, buf, sizeof(buf)), "cuda:3");
}

static void test_config(void)
{
    struct cfg c;
    char err[512];
    char *a1[] = {"srv", "-m", "x.gguf"};
    CHECK_INT(cfg_load(&c, 3, a1, NULL, err, sizeof(err)), 0);
    CHECK_STR(c.stage.device, "cpu");
    CHECK_INT(cfg_device(&c.stage), DEV_CPU);
    cfg_free(&c);
    char *a2[] = {"srv", "-m", "x.gguf", "--device", "cuda:1"};
    CHECK_INT(cfg_load(&c, 5, a2, NULL, err, sizeof(err)), 0);
    CHECK_INT(cfg_device(&c.stage), 1);
    cfg_free(&c);
    char *env[] = {"BATON_DEVICE=cuda:2", NULL};
    CHECK_INT(cfg_load(&c, 3, a1, env, err, sizeof(err)), 0);
    CHECK_INT(cfg_device(&c.stage), 2);
    cfg_free(&c);
    char *a3[] = {"srv", "-m", "x.gguf", "--device=gpu0"};
    err[0] = 0;
    CHECK_INT(cfg_load(&c, 4, a3, NULL, err, sizeof(err)), BT_EINVAL);
    CHECK(strstr(err, "device") && strstr(err, "gpu0"));
    cfg_free(&c);
}

/* fwd_new_dev(cuda:0) on stories260K: without a GPU (or without CUDA in the build) one clear
 * error and the kv cache untouched, then the CPU stage still works on the same cache. */
static void test_no_device(void)
{
    char err[512] = "", name[128];
    struct gguf *g = NULL;
    struct model *m = NULL;
    struct kv *kv = NULL;
    struct fwd *f = NULL;
    struct bt_pool *pool = bt_pool_new(1);
    const int have_gpu = cuda_probe(0, name, sizeof(name), NULL, err, sizeof(err)) == 0;
    if (!have_gpu) {
        CHECK(strstr(err, "no CUDA device: ") != NULL);
        if (!cuda_built()) CHECK(strstr(err, "built without") != NULL);
        fprintf(stderr, "cuda_probe(0): %s\n", err);
    }
    if (gguf_open(t_path("BATON_SHARED", "models/stories260K.gguf"), &g, err, sizeof(err)) < 0 ||
        model_load(g, 0, -1, &m, err, sizeof(err)) < 0 ||
        kv_new(m, 1, 64, BT_F16, &kv, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        CHECK(0);
        goto out;
    }
    int rc = fwd_new_dev(m, kv, pool, 0, 8, 1, &f, err, sizeof(err));
    if (!have_gpu) {
        CHECK(rc == BT_ENOTFOUND || rc == BT_EUNSUP);
        CHECK(f == NULL);
        CHECK(strncmp(err, "no CUDA device: ", 16) == 0 || strstr(err, "no CUDA device: "));
        CHECK(kv->k != NULL); /* the host cache is kept when the device is not there */
        fprintf(stderr, "fwd_new_dev(cuda:0): %s\n", err);
        CHECK_INT(fwd_new_dev(m, kv, pool, DEV_CPU, 8, 1, &f, err, sizeof(err)), 0);
    } else {
        CHECK_INT(rc, 0);
        fprintf(stderr, "cuda:0 is %s: fwd_new_dev works\n", name);
    }
    if (f) {
        int32_t tok = 1, pos = 0, seq = 0;
        uint8_t want = 1;
        struct fwd_batch b = {1, &tok, NULL, &pos, &seq, &want, false};
        const float *o;
        int no;
        CHECK_INT(fwd_eval(f, &b, &o, &no, err, sizeof(err)), 0);
        CHECK_INT(no, 1);
    }
    /* a device index far out of range is refused in any build */
    struct kv *kv2 = NULL;
    struct fwd *f2 = NULL;
    if (kv_new(m, 1, 64, BT_F16, &kv2, err, sizeof(err)) == 0) {
        rc = fwd_new_dev(m, kv2, pool, 1000, 8, 1, &f2, err, sizeof(err));
        CHECK(rc < 0 && f2 == NULL && strstr(err, "no CUDA device: "));
    }
    fwd_free(f2);
    kv_free(kv2);
out:
    fwd_free(f);
    kv_free(kv);
    model_free(m);
    gguf_close(g);
    bt_pool_free(pool);
}

int main(void)
{
    bt_log_set_level(BT_LOG_WARN);
    test_parse();
    test_config();
    test_no_device();
    return t_done();
}
