/* test_stage: the layer split between pipeline stages (even by bytes with the head on the last
 * stage, against a brute-force optimum; --split specs and their errors) and loading one stage
 * with progress and cancellation, on stories260K. */
#include "gguf.h"
#include "log.h"
#include "model.h"
#include "stage.h"
#include "t.h"

#define MAXL 12

/* The smallest possible heaviest stage over every split of lb into n stages (brute force). */
static uint64_t best_max(const uint64_t *lb, int n_layer, uint64_t head, int n, int from)
{
    if (n == 1) {
        uint64_t c = head;
        for (int i = from; i < n_layer; i++) c += lb[i];
        return c;
    }
    uint64_t best = UINT64_MAX, c = 0;
    for (int end = from + 1; end <= n_layer - (n - 1); end++) {
        c += lb[end - 1];
        uint64_t rest = best_max(lb, n_layer, head, n - 1, end);
        uint64_t m = c > rest ? c : rest;
        if (m < best) best = m;
    }
    return best;
}

static uint64_t split_max(const uint64_t *lb, int n_layer, uint64_t head, int n,
                          const struct stage_range *r)
{
    uint64_t mx = 0;
    for (int k = 0; k < n; k++) {
        uint64_t c = r[k].l1 == n_layer ? head : 0;
        for (int i = r[k].l0; i < r[k].l1; i++) c += lb[i];
        if (c > mx) mx = c;
    }
    return mx;
}

static int covers(const struct stage_range *r, int n, int n_layer)
{
    if (r[0].l0 != 0 || r[n - 1].l1 != n_layer) return 0;
    for (int k = 0; k < n; k++) {
        if (r[k].l1 <= r[k].l0) return 0;
        if (k && r[k].l0 != r[k - 1].l1) return 0;
    }
    return 1;
}

struct prog {
    int calls, monotonic, cancel_at;
    float last;
};

static int on_progress(void *arg, float f)
{
    struct prog *p = arg;
    p->calls++;
    if (f < p->last || f < 0 || f > 1) p->monotonic = 0;
    p->last = f;
    return p->cancel_at && p->calls >= p->cancel_at;
}

int main(void)
{
    struct stage_range r[STAGE_MAX];
    char err[256];

    /* uniform layers: as even as layer counts allow */
    {
        uint64_t lb[22];
        for (int i = 0; i < 22; i++) lb[i] = 100;
        CHECK_INT(stage_split_bytes(lb, 22, 0, 2, r), BT_OK);
        CHECK_INT(r[0].l1, 11);
        CHECK_INT(stage_split_bytes(lb, 22, 0, 3, r), BT_OK);
        CHECK(covers(r, 3, 22));
        for (int k = 0; k < 3; k++) CHECK(r[k].l1 - r[k].l0 == 7 || r[k].l1 - r[k].l0 == 8);
        CHECK_INT(stage_split_bytes(lb, 22, 0, 22, r), BT_OK);
        for (int k = 0; k < 22; k++) CHECK_INT(r[k].l1 - r[k].l0, 1);
        CHECK_INT(stage_split_bytes(lb, 22, 0, 23, r), BT_EINVAL);
        CHECK_INT(stage_split_bytes(lb, 22, 0, 1, r), BT_OK);
        CHECK(r[0].l0 == 0 && r[0].l1 == 22);
        /* a head of 1.5 layers (tinyllama's proportion) makes the last stage shorter */
        CHECK_INT(stage_split_bytes(lb, 22, 150, 2, r), BT_OK);
        CHECK_INT(r[0].l1, 12);
        CHECK_INT(split_max(lb, 22, 150, 2, r), 1200);
        CHECK_INT(stage_split_bytes(lb, 22, 150, 4, r), BT_OK);
        CHECK(covers(r, 4, 22));
        CHECK_INT(split_max(lb, 22, 150, 4, r), best_max(lb, 22, 150, 4, 0));
        CHECK(r[3].l1 - r[3].l0 < r[0].l1 - r[0].l0);
    }
    /* random sizes: contiguous cover, and the heaviest stage within one layer of the optimum */
    {
        uint64_t seed = 12345, lb[MAXL];
        int exact = 0, total = 0;
        for (int trial = 0; trial < 400; trial++) {
            int nl = 2 + (int)(seed % (MAXL - 1)), n = 1 + (int)((seed >> 8) % 4);
            if (n > nl) n = nl;
            uint64_t maxl = 0;
            for (int i = 0; i < nl; i++) {
                seed = seed * 6364136223846793005ull + 1442695040888963407ull;
                lb[i] = 10 + (seed >> 33) % 1000;
                if (lb[i] > maxl) maxl = lb[i];
            }
            uint64_t head = (seed >> 20) % 1500;
            CHECK_INT(stage_split_bytes(lb, nl, head, n, r), BT_OK);
            CHECK(covers(r, n, nl));
            uint64_t got = split_max(lb, nl, head, n, r), opt = best_max(lb, nl, head, n, 0);
            CHECK(got >= opt && got <= opt + maxl);
            exact += got == opt;
            total++;
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        }
        fprintf(stderr, "even split: optimal in %d of %d random cases\n", exact, total);
        CHECK(exact * 10 >= total * 8); /* nearly always the optimum */
    }
    /* --split specs */
    {
        CHECK_INT(stage_parse_spec("8,7,7", 22, 3, r, err, sizeof(err)), BT_OK);
        CHECK(r[0].l0 == 0 && r[0].l1 == 8 && r[1].l1 == 15 && r[2].l0 == 15 && r[2].l1 == 22);
        CHECK_INT(stage_parse_spec("1,1,20", 22, 3, r, err, sizeof(err)), BT_OK);
        CHECK_INT(r[2].l0, 2);
        CHECK_INT(stage_parse_spec("8,7", 22, 3, r, err, sizeof(err)), BT_EINVAL);
        CHECK(strstr(err, "2 stages, but there are 3 ranks"));
        CHECK_INT(stage_parse_spec("8,7,8", 22, 3, r, err, sizeof(err)), BT_EINVAL);
        CHECK(strstr(err, "more than the 22 layers"));
        CHECK_INT(stage_parse_spec("8,7,6", 22, 3, r, err, sizeof(err)), BT_EINVAL);
        CHECK(strstr(err, "adds up to 21 layers, the model has 22"));
        CHECK_INT(stage_parse_spec("0,11,11", 22, 3, r, err, sizeof(err)), BT_EINVAL);
        CHECK(strstr(err, "1..22"));
        CHECK_INT(stage_parse_spec("8,7,7,", 22, 3, r, err, sizeof(err)), BT_EINVAL);
        CHECK_INT(stage_parse_spec("8,,14", 22, 3, r, err, sizeof(err)), BT_EINVAL);
        CHECK_INT(stage_parse_spec("8;7;7", 22, 3, r, err, sizeof(err)), BT_EINVAL);
        CHECK_INT(stage_parse_spec("", 22, 1, r, err, sizeof(err)), BT_EINVAL);
        CHECK_INT(stage_parse_spec("8,7,7,1", 23, 3, r, err, sizeof(err)), BT_EINVAL);
        CHECK(strstr(err, "more than 3 stages"));
    }
    /* on a real model: split and load with progress */
    struct gguf *g = NULL;
    CHECK_INT(gguf_open(t_path("BATON_SHARED", "models/stories260K.gguf"), &g, err, sizeof(err)),
              BT_OK);
    if (g) {
        CHECK_INT(stage_split(g, 1, NULL, r, err, sizeof(err)), BT_OK);
        CHECK(r[0].l0 == 0 && r[0].l1 == 5);
        CHECK_INT(stage_split(g, 5, "", r, err, sizeof(err)), BT_OK);
        CHECK(covers(r, 5, 5));
        CHECK_INT(stage_split(g, 6, NULL, r, err, sizeof(err)), BT_EINVAL);
        CHECK(strstr(err, "6 ranks but the model has only 5 layers"));
        CHECK_INT(stage_split(g, 2, "4,1", r, err, sizeof(err)), BT_OK);
        CHECK(r[0].l1 == 4 && r[1].l0 == 4);
        CHECK(stage_head_bytes(g) > 0);

        struct model *m = NULL;
        struct prog p = {.monotonic = 1};
        CHECK_INT(stage_load(g, 2, 5, on_progress, &p, &m, err, sizeof(err)), BT_OK);
        CHECK(m && m->l0 == 2 && m->l1 == 5 && m->last && !m->first);
        CHECK(p.calls >= 2 && p.monotonic && p.last == 1.0f);
        model_free(m);
        m = NULL;
        p = (struct prog){.monotonic = 1, .cancel_at = 2};
        CHECK_INT(stage_load(g, 0, 3, on_progress, &p, &m, err, sizeof(err)), BT_ERR);
        CHECK(m == NULL && strstr(err, "cancelled"));
        CHECK_INT(stage_load(g, 0, 3, NULL, NULL, &m, err, sizeof(err)), BT_OK);
        CHECK(m && m->first && !m->last);
        model_free(m);
        gguf_close(g);
    }
    return t_done();
}
