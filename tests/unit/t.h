/* t.h: the unit tests' few assertion macros. A failed check prints file:line and the values, and
 * the test goes on; t_done() returns the exit status (1 if any check failed). Paths to data come
 * from the environment meson sets: BATON_SRC (source tree), BATON_SHARED (../shared),
 * BATON_BUILD (build tree). */
#ifndef BATON_T_H
#define BATON_T_H

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int t_failures;
static int t_checks;

#define CHECK(cond)                                                                          \
    do {                                                                                     \
        t_checks++;                                                                          \
        if (!(cond)) {                                                                       \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);         \
            t_failures++;                                                                    \
        }                                                                                    \
    } while (0)

#define CHECK_INT(a, b)                                                                      \
    do {                                                                                     \
        long long t_a_ = (long long)(a), t_b_ = (long long)(b);                              \
        t_checks++;                                                                          \
        if (t_a_ != t_b_) {                                                                  \
            fprintf(stderr, "%s:%d: CHECK failed: %s == %s (%lld != %lld)\n", __FILE__,      \
                    __LINE__, #a, #b, t_a_, t_b_);                                           \
            t_failures++;                                                                    \
        }                                                                                    \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                                \
    do {                                                                                     \
        double t_a_ = (double)(a), t_b_ = (double)(b);                                       \
        t_checks++;                                                                          \
        if (!(fabs(t_a_ - t_b_) <= (tol))) {                                                 \
            fprintf(stderr, "%s:%d: CHECK failed: %s ~ %s (%.9g vs %.9g, tol %g)\n",         \
                    __FILE__, __LINE__, #a, #b, t_a_, t_b_, (double)(tol));                  \
            t_failures++;                                                                    \
        }                                                                                    \
    } while (0)

#define CHECK_STR(a, b)                                                                      \
    do {                                                                                     \
        const char *t_a_ = (a), *t_b_ = (b);                                                 \
        t_checks++;                                                                          \
        if (!t_a_ || !t_b_ || strcmp(t_a_, t_b_) != 0) {                                     \
            fprintf(stderr, "%s:%d: CHECK failed: %s == %s (\"%s\" vs \"%s\")\n", __FILE__,  \
                    __LINE__, #a, #b, t_a_ ? t_a_ : "(null)", t_b_ ? t_b_ : "(null)");       \
            t_failures++;                                                                    \
        }                                                                                    \
    } while (0)

/* Path under an environment directory, e.g. t_path("BATON_SHARED", "models/x.gguf"). */
static inline const char *t_path(const char *env, const char *rel)
{
    static char buf[8][4096];
    static int k;
    const char *d = getenv(env);
    char *p = buf[k++ & 7];
    snprintf(p, 4096, "%s/%s", d ? d : ".", rel);
    return p;
}

static inline int t_done(void)
{
    if (t_checks == 0) {
        fprintf(stderr, "no checks ran\n");
        return 1;
    }
    fprintf(stderr, "%d checks, %d failed\n", t_checks, t_failures);
    return t_failures ? 1 : 0;
}

#endif
