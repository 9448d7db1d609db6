/* baton-info: print what a GGUF file holds (architecture, hyperparameters, tensor types and
 * sizes, tokenizer, chat template), or the reader's error for a malformed file.
 *
 * Usage: baton-info [-v] FILE.gguf   (-v: also every metadata record and every tensor)
 * Exit status: 0 ok, 1 the file cannot be read or is malformed, 2 bad usage. */
#include "gguf.h"
#include "log.h"
#include "quant.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fputs("usage: baton-info [-v] FILE.gguf\n"
          "Print a GGUF model's architecture, hyperparameters, tensor types and sizes,\n"
          "tokenizer and chat template. A malformed file gives one error line and exit 1.\n"
          "  -v, --verbose   also list every metadata record and every tensor\n"
          "  -h, --help      this text\n",
          f);
}

/* Print bytes of a file string, control characters escaped; at most `max` bytes (0: all). */
static void put_str(const struct gguf_str *s, uint64_t max)
{
    uint64_t n = max && s->len > max ? max : s->len;
    for (uint64_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s->data[i];
        if (c == '\n')
            fputs("\\n", stdout);
        else if (c == '\\')
            fputs("\\\\", stdout);
        else if (c < 0x20 || c == 0x7f)
            printf("\\x%02x", c);
        else
            putchar(c);
    }
    if (n < s->len) printf("... (%" PRIu64 " bytes)", s->len);
}

static void put_value(const struct gguf_kv *kv)
{
    switch (kv->type) {
    case GGUF_TYPE_UINT8:
    case GGUF_TYPE_UINT16:
    case GGUF_TYPE_UINT32:
    case GGUF_TYPE_UINT64:
        printf("%" PRIu64, kv->v.u64);
        break;
    case GGUF_TYPE_INT8:
    case GGUF_TYPE_INT16:
    case GGUF_TYPE_INT32:
    case GGUF_TYPE_INT64:
        printf("%" PRId64, kv->v.i64);
        break;
    case GGUF_TYPE_FLOAT32:
    case GGUF_TYPE_FLOAT64:
        printf("%g", kv->v.f64);
        break;
    case GGUF_TYPE_BOOL:
        fputs(kv->v.u64 ? "true" : "false", stdout);
        break;
    case GGUF_TYPE_STRING:
        putchar('"');
        put_str(&kv->v.str, 120);
        putchar('"');
        break;
    case GGUF_TYPE_ARRAY: {
        printf("[%" PRIu64 " x %s]", kv->arr_n, gguf_vtype_name(kv->arr_type));
        uint64_t show = kv->arr_n < 4 ? kv->arr_n : 4;
        for (uint64_t i = 0; i < show; i++) {
            struct gguf_str s;
            int64_t v;
            double d;
            fputs(i ? ", " : " ", stdout);
            if (gguf_arr_str(kv, i, &s) == 0) {
                putchar('"');
                put_str(&s, 40);
                putchar('"');
            } else if (gguf_arr_i64(kv, i, &v) == 0) {
                printf("%" PRId64, v);
            } else if (gguf_arr_f64(kv, i, &d) == 0) {
                printf("%g", d);
            } else {
                fputs("?", stdout); /* u64 above INT64_MAX */
            }
        }
        if (show < kv->arr_n) fputs(", ...", stdout);
        break;
    }
    default:
        fputs("?", stdout);
    }
}

/* "label: value" for an optional key (prefixed by "ARCH." when arch is given). */
static void line_kv(const struct gguf *g, const char *label, const char *arch, const char *key)
{
    char full[256];
    if (arch)
        snprintf(full, sizeof(full), "%s.%s", arch, key);
    else
        snprintf(full, sizeof(full), "%s", key);
    const struct gguf_kv *kv = gguf_find_kv(g, full);
    printf("%-22s ", label);
    if (!kv)
        fputs("-", stdout);
    else if (kv->type == GGUF_TYPE_STRING)
        put_str(&kv->v.str, 200);
    else
        put_value(kv);
    putchar('\n');
}

static void human(uint64_t n, char *buf, size_t sz)
{
    if (n >= (1ull << 30))
        snprintf(buf, sz, "%.2f GiB", (double)n / (double)(1ull << 30));
    else if (n >= (1ull << 20))
        snprintf(buf, sz, "%.2f MiB", (double)n / (double)(1ull << 20));
    else if (n >= 1024)
        snprintf(buf, sz, "%.2f KiB", (double)n / 1024.0);
    else
        snprintf(buf, sz, "%" PRIu64 " B", n);
}

/* The file, then the architecture's hyperparameters and rope scaling (when it names one). */
static void print_header(const struct gguf *g, const char *a)
{
    char hb[64];
    human(gguf_file_size(g), hb, sizeof(hb));
    printf("%-22s %s\n", "file:", gguf_path(g));
    printf("%-22s %" PRIu64 " bytes (%s)\n", "file size:", gguf_file_size(g), hb);
    printf("%-22s %u\n", "GGUF version:", gguf_version(g));
    printf("%-22s %" PRIu64 "\n", "alignment:", gguf_alignment(g));
    printf("%-22s %" PRId64 "\n", "metadata records:", gguf_n_kv(g));
    printf("%-22s %016" PRIx64 "\n", "identity:", gguf_identity(g));
    printf("%-22s %s\n", "architecture:", a ? a : "-");
    line_kv(g, "name:", NULL, "general.name");
    line_kv(g, "file type:", NULL, "general.file_type");
    if (!a) return;
    line_kv(g, "context length:", a, "context_length");
    line_kv(g, "embedding length:", a, "embedding_length");
    line_kv(g, "block count:", a, "block_count");
    line_kv(g, "feed-forward length:", a, "feed_forward_length");
    line_kv(g, "head count:", a, "attention.head_count");
    line_kv(g, "head count kv:", a, "attention.head_count_kv");
    line_kv(g, "rope dimension count:", a, "rope.dimension_count");
    line_kv(g, "rope freq base:", a, "rope.freq_base");
    line_kv(g, "rms eps:", a, "attention.layer_norm_rms_epsilon");
    char key[256];
    snprintf(key, sizeof(key), "%s.rope.scaling.type", a);
    bool scaling = gguf_find_kv(g, key) != NULL;
    if (scaling) {
        line_kv(g, "rope scaling:", a, "rope.scaling.type");
        line_kv(g, "rope scaling factor:", a, "rope.scaling.factor");
        line_kv(g, "rope orig. context:", a, "rope.scaling.original_context_length");
    }
    if (gguf_find_tensor(g, "rope_freqs.weight")) {
        printf("%-22s %s\n", scaling ? "rope freq factors:" : "rope scaling:",
               "per-dimension factors (rope_freqs.weight, llama3 style)");
        scaling = true;
    }
    if (!scaling) printf("%-22s none\n", "rope scaling:");
}

/* Tensor count and bytes by type. */
static void print_tensor_types(const struct gguf *g)
{
    char hb[64];
    uint64_t count[BT_TYPE_COUNT + 1] = {0}, bytes[BT_TYPE_COUNT + 1] = {0}, total = 0;
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const struct gguf_tensor *t = gguf_tensor_at(g, i);
        uint32_t ty = t->type < BT_TYPE_COUNT ? t->type : BT_TYPE_COUNT;
        count[ty]++;
        bytes[ty] += t->nbytes;
        total += t->nbytes;
    }
    printf("%-22s %" PRId64 "\n", "tensors:", gguf_n_tensors(g));
    for (uint32_t ty = 0; ty <= BT_TYPE_COUNT; ty++) {
        if (!count[ty]) continue;
        human(bytes[ty], hb, sizeof(hb));
        printf("  %s: %" PRIu64 " (%s)\n", bt_type_name(ty), count[ty], hb);
    }
    human(total, hb, sizeof(hb));
    printf("%-22s %" PRIu64 " bytes (%s)\n", "total tensor bytes:", total, hb);
}

/* Vocabulary, tokenizer keys and the chat template in full. */
static void print_tokenizer(const struct gguf *g)
{
    struct gguf_str s;
    uint32_t et;
    uint64_t n;
    if (gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n) == 0)
        printf("%-22s %" PRIu64 "\n", "vocabulary size:", n);
    else
        printf("%-22s -\n", "vocabulary size:");
    line_kv(g, "tokenizer model:", NULL, "tokenizer.ggml.model");
    line_kv(g, "pre-tokenizer:", NULL, "tokenizer.ggml.pre");
    line_kv(g, "BOS id:", NULL, "tokenizer.ggml.bos_token_id");
    line_kv(g, "EOS id:", NULL, "tokenizer.ggml.eos_token_id");
    if (gguf_get_str(g, "tokenizer.chat_template", &s) == 0) {
        printf("%-22s %" PRIu64 " bytes\n", "chat template:", s.len);
        fwrite(s.data, 1, (size_t)s.len, stdout);
        if (!s.len || s.data[s.len - 1] != '\n') putchar('\n');
        printf("%-22s\n", "(end of chat template)");
    } else {
        printf("%-22s none\n", "chat template:");
    }
}

/* -v: every metadata record and every tensor. */
static void print_records(const struct gguf *g)
{
    printf("\nmetadata:\n");
    for (int64_t i = 0; i < gguf_n_kv(g); i++) {
        const struct gguf_kv *kv = gguf_kv_at(g, i);
        printf("  %-40s %-6s ", kv->key, gguf_vtype_name(kv->type));
        put_value(kv);
        putchar('\n');
    }
    printf("\ntensors (offset from the data section at %" PRIu64 "):\n", gguf_data_offset(g));
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const struct gguf_tensor *t = gguf_tensor_at(g, i);
        printf("  %-40s %-5s [", t->name, bt_type_name(t->type));
        for (uint32_t d = 0; d < t->n_dims; d++) printf(d ? ", %" PRId64 : "%" PRId64, t->ne[d]);
        printf("] offset %" PRIu64 " bytes %" PRIu64 "\n", t->offset, t->nbytes);
    }
}

static void print_info(const struct gguf *g, int verbose)
{
    char arch[128] = "";
    struct gguf_str s;
    const char *a = NULL;

    if (gguf_get_str(g, "general.architecture", &s) == 0 && s.len && s.len < sizeof(arch) &&
        !memchr(s.data, 0, s.len)) {
        memcpy(arch, s.data, s.len);
        arch[s.len] = 0;
        a = arch;
    }
    print_header(g, a);
    print_tensor_types(g);
    print_tokenizer(g);
    if (verbose) print_records(g);
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    int verbose = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "-v") || !strcmp(argv[i], "--verbose")) {
            verbose = 1;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "baton-info: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        } else if (path) {
            fprintf(stderr, "baton-info: one file at a time\n");
            return 2;
        } else {
            path = argv[i];
        }
    }
    if (!path) {
        usage(stderr);
        return 2;
    }
    char err[1024];
    struct gguf *g = NULL;
    if (gguf_open(path, &g, err, sizeof(err)) != 0) {
        fprintf(stderr, "baton-info: %s\n", err);
        return 1;
    }
    print_info(g, verbose);
    gguf_close(g);
    return fflush(stdout) == 0 ? 0 : 1;
}
