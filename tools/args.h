/* args: the option table of the tools that run a model (baton-cli, baton-bench).
 *
 * Each tool describes its options as one table of struct args_opt (names, kind, where the value
 * goes, bounds) and args_parse walks argv against it, so the tools read values, report mistakes
 * and treat --help the same way:
 *   -h / --help                         args_parse returns 1 (the caller prints its usage)
 *   an option without its value         "PROG: OPT needs a value (or is unknown)"
 *   an option not in the table          "PROG: unknown option OPT"
 *   a value out of bounds or malformed  "PROG: bad value for OPT: 'VALUE'"
 *   a bad --device                      "PROG: " and dev_parse's text
 * Every message goes to stderr, once, where the mistake is found.
 *
 * Ownership: string values point into argv. Threads: none (start-up only). */
#ifndef BATON_TOOLS_ARGS_H
#define BATON_TOOLS_ARGS_H

#include <stdbool.h>
#include <stdint.h>

enum args_kind {
    ARGS_FLAG,     /* bool = true; takes no value */
    ARGS_STR,      /* const char *, borrowed from argv */
    ARGS_INT,      /* int in [lo, hi], decimal */
    ARGS_FLOAT,    /* float, anything strtof reads whole but NaN */
    ARGS_U64,      /* uint64_t, decimal */
    ARGS_KV_TYPE,  /* uint32_t: BT_F16 or BT_F32, spelled f16 or f32 */
    ARGS_DEVICE,   /* int: DEV_CPU or a CUDA index, spelled cpu or cuda:N (device.h) */
    ARGS_INT_LIST, /* int[max]: comma-separated ints in [lo, hi]; the count goes to *n */
};

struct args_opt {
    const char *name; /* "-m" */
    const char *alt;  /* "--model", or NULL */
    enum args_kind kind;
    void *dst;   /* where the value goes (the type the kind says) */
    long lo, hi; /* ARGS_INT, ARGS_INT_LIST: the bounds */
    int max;     /* ARGS_INT_LIST: room in dst */
    int *n;      /* ARGS_INT_LIST: how many were given */
    bool *given; /* set when the option appears; may be NULL */
};

/* Parse argv[1..argc) against opts[n_opts] into their dst. Returns 0, 1 for -h/--help (nothing
 * after it is read), or BT_EINVAL with the message printed (prog: the tool's name). */
int args_parse(const char *prog, int argc, char **argv, const struct args_opt *opts, int n_opts);

#endif
