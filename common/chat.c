/* chat: chat-template family detection and rendering. See chat.h. */
#include "chat.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

enum chat_role { ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT, ROLE_BAD };

/* ---- output buffer: grows geometrically; an allocation failure is sticky and reported once at
 * the end, so renderers append without checking every call ---- */

struct chat_buf {
    char *p;
    size_t len, cap;
    bool oom;
};

static void buf_putn(struct chat_buf *b, const char *s, size_t n)
{
    if (b->oom || n == 0) return;
    if (n > SIZE_MAX - 1 - b->len) {
        b->oom = true;
        return;
    }
    size_t need = b->len + n + 1;
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_put(struct chat_buf *b, const char *s)
{
    buf_putn(b, s, strlen(s));
}

/* ---- Python's str.strip() (Jinja's |trim): removes the code points for which str.isspace()
 * is true from both ends. They are matched as UTF-8 byte sequences, so invalid UTF-8 is simply
 * not whitespace. ---- */

static const char *const chat_spaces[] = {
    "\t",           "\n",           "\v",           "\f",           "\r",
    "\x1c",         "\x1d",         "\x1e",         "\x1f",         " ",
    "\xc2\x85",     /* U+0085 NEL */
    "\xc2\xa0",     /* U+00A0 NBSP */
    "\xe1\x9a\x80", /* U+1680 */
    "\xe2\x80\x80", "\xe2\x80\x81", "\xe2\x80\x82", "\xe2\x80\x83", "\xe2\x80\x84",
    "\xe2\x80\x85", "\xe2\x80\x86", "\xe2\x80\x87", "\xe2\x80\x88", "\xe2\x80\x89",
    "\xe2\x80\x8a",                                 /* U+2000..U+200A */
    "\xe2\x80\xa8", "\xe2\x80\xa9",                 /* U+2028, U+2029 */
    "\xe2\x80\xaf", "\xe2\x81\x9f", "\xe3\x80\x80", /* U+202F, U+205F, U+3000 */
};

/* Length of the whitespace sequence that s[0..n) starts (at_end: ends) with, or 0. */
static size_t space_len(const char *s, size_t n, bool at_end)
{
    for (size_t i = 0; i < sizeof(chat_spaces) / sizeof(chat_spaces[0]); i++) {
        size_t k = strlen(chat_spaces[i]);
        if (k <= n && memcmp(at_end ? s + n - k : s, chat_spaces[i], k) == 0) return k;
    }
    return 0;
}

static void buf_put_stripped(struct chat_buf *b, const char *s, size_t n)
{
    size_t k;
    while (n > 0 && (k = space_len(s, n, false)) > 0) s += k, n -= k;
    while (n > 0 && (k = space_len(s, n, true)) > 0) n -= k;
    buf_putn(b, s, n);
}

static void buf_put_trim(struct chat_buf *b, const char *s)
{
    buf_put_stripped(b, s, strlen(s));
}

/* ---- rendering context ---- */

struct chat_ctx {
    int family;
    const struct chat_msg *m;
    int n;
    const struct chat_opts *o;
    const char *bos, *eos; /* never NULL */
    char *err;
    size_t errsz;
};

typedef int (*chat_render_fn)(const struct chat_ctx *c, struct chat_buf *b);

static int msg_role(const struct chat_msg *m)
{
    if (!m->role) return ROLE_BAD;
    if (strcmp(m->role, "system") == 0) return ROLE_SYSTEM;
    if (strcmp(m->role, "user") == 0) return ROLE_USER;
    if (strcmp(m->role, "assistant") == 0) return ROLE_ASSISTANT;
    return ROLE_BAD;
}

static int role_at(const struct chat_ctx *c, int i)
{
    return msg_role(&c->m[i]);
}

static const char *text_at(const struct chat_ctx *c, int i)
{
    return c->m[i].content;
}

static const char *const MSG_ALTERNATE =
    "Conversation roles must alternate user/assistant/user/assistant/...";
static const char *const MSG_ALTERNATE_AFTER_SYSTEM =
    "After the optional system message, conversation roles must alternate "
    "user/assistant/user/assistant/...";
static const char *const MSG_ONLY_USER_ASSISTANT =
    "Only user and assistant roles are supported, with the exception of an initial optional "
    "system message!";

/* The template's raise_exception(msg), with the message index for context. */
static int reject(const struct chat_ctx *c, int i, const char *msg)
{
    return bt_errf(c->err, c->errsz, BT_EINVAL, "chat template %s: %s (message %d, role '%s')",
                   chat_family_name(c->family), msg, i, c->m[i].role);
}

/* The Llama-2/Gemma/Command-R alternation test over msgs[from..n):
 * (role == user) must equal (position is even); other roles pass at odd positions. */
static int check_alternation(const struct chat_ctx *c, int from, const char *msg)
{
    for (int i = from; i < c->n; i++)
        if ((role_at(c, i) == ROLE_USER) != ((i - from) % 2 == 0)) return reject(c, i, msg);
    return 0;
}

/* First message's text if it is a system message, else NULL. */
static const char *leading_system(const struct chat_ctx *c)
{
    return role_at(c, 0) == ROLE_SYSTEM ? text_at(c, 0) : NULL;
}

/* ---- one renderer per family ---- */

static void chatml_turn(const struct chat_ctx *c, struct chat_buf *b, int i)
{
    buf_put(b, "<|im_start|>");
    buf_put(b, c->m[i].role);
    buf_put(b, "\n");
    buf_put(b, text_at(c, i));
    buf_put(b, "<|im_end|>\n");
}

static int render_chatml(const struct chat_ctx *c, struct chat_buf *b)
{
    for (int i = 0; i < c->n; i++) chatml_turn(c, b, i);
    if (c->o->add_generation_prompt) buf_put(b, "<|im_start|>assistant\n");
    return 0;
}

static int render_qwen2_5(const struct chat_ctx *c, struct chat_buf *b)
{
    const char *sys = leading_system(c);
    buf_put(b, "<|im_start|>system\n");
    buf_put(b, sys ? sys : "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.");
    buf_put(b, "<|im_end|>\n");
    for (int i = sys ? 1 : 0; i < c->n; i++) chatml_turn(c, b, i);
    if (c->o->add_generation_prompt) buf_put(b, "<|im_start|>assistant\n");
    return 0;
}

static int render_llama2(const struct chat_ctx *c, struct chat_buf *b)
{
    const char *sys = leading_system(c);
    int from = sys ? 1 : 0, rc = check_alternation(c, from, MSG_ALTERNATE);
    if (rc) return rc;
    for (int i = from; i < c->n; i++) {
        int role = role_at(c, i);
        if (role == ROLE_SYSTEM) continue; /* a later system message prints nothing */
        /* the system block joins the first turn's text before strip(), as in the template */
        struct chat_buf t = {0};
        if (i == from && sys) {
            buf_put(&t, "<<SYS>>\n");
            buf_put(&t, sys);
            buf_put(&t, "\n<</SYS>>\n\n");
        }
        buf_put(&t, text_at(c, i));
        if (role == ROLE_USER) {
            buf_put(b, c->bos);
            buf_put(b, "[INST] ");
            buf_put_stripped(b, t.p ? t.p : "", t.len);
            buf_put(b, " [/INST]");
        } else {
            buf_put(b, " ");
            buf_put_stripped(b, t.p ? t.p : "", t.len);
            buf_put(b, " ");
            buf_put(b, c->eos);
        }
        if (t.oom) b->oom = true;
        free(t.p);
    }
    return 0;
}

static int render_mistral_v0(const struct chat_ctx *c, struct chat_buf *b)
{
    buf_put(b, c->bos);
    for (int i = 0; i < c->n; i++) {
        int role = role_at(c, i);
        if ((role == ROLE_USER) != (i % 2 == 0)) return reject(c, i, MSG_ALTERNATE);
        if (role == ROLE_USER) {
            buf_put(b, "[INST] ");
            buf_put(b, text_at(c, i));
            buf_put(b, " [/INST]");
        } else if (role == ROLE_ASSISTANT) {
            buf_put(b, text_at(c, i));
            buf_put(b, c->eos);
        } else {
            return reject(c, i, "Only user and assistant roles are supported!");
        }
    }
    return 0;
}

static int render_mistral_v1(const struct chat_ctx *c, struct chat_buf *b)
{
    const char *sys = leading_system(c);
    int from = sys ? 1 : 0;
    buf_put(b, c->bos);
    for (int i = from; i < c->n; i++) {
        int role = role_at(c, i);
        if ((role == ROLE_USER) != ((i - from) % 2 == 0))
            return reject(c, i, MSG_ALTERNATE_AFTER_SYSTEM);
        if (role == ROLE_USER) {
            buf_put(b, " [INST] ");
            if (i == from && sys) {
                buf_put(b, sys);
                buf_put(b, "\n\n");
            }
            buf_put(b, text_at(c, i));
            buf_put(b, " [/INST]");
        } else if (role == ROLE_ASSISTANT) {
            buf_put(b, " ");
            buf_put(b, text_at(c, i));
            buf_put(b, c->eos);
        } else {
            return reject(c, i, MSG_ONLY_USER_ASSISTANT);
        }
    }
    return 0;
}

/* v3 and v3-tekken: the system message goes into the LAST message when that is a user turn
 * (and is dropped otherwise); alternation is checked before anything is printed. */
static int render_mistral_v3(const struct chat_ctx *c, struct chat_buf *b)
{
    bool tekken = c->family == CHAT_MISTRAL_V3_TEKKEN;
    const char *sys = leading_system(c);
    int from = sys ? 1 : 0, rc = check_alternation(c, from, MSG_ALTERNATE_AFTER_SYSTEM);
    if (rc) return rc;
    buf_put(b, c->bos);
    for (int i = from; i < c->n; i++) {
        int role = role_at(c, i);
        if (role == ROLE_USER) {
            buf_put(b, tekken ? "[INST]" : "[INST] ");
            if (i == c->n - 1 && sys) {
                buf_put(b, sys);
                buf_put(b, "\n\n");
            }
            buf_put(b, text_at(c, i));
            buf_put(b, "[/INST]");
        } else if (role == ROLE_ASSISTANT) {
            if (tekken) {
                buf_put(b, text_at(c, i));
            } else {
                buf_put(b, " ");
                buf_put_trim(b, text_at(c, i));
            }
            buf_put(b, c->eos);
        } else {
            return reject(c, i, MSG_ONLY_USER_ASSISTANT);
        }
    }
    return 0;
}

static int render_mistral_v7(const struct chat_ctx *c, struct chat_buf *b)
{
    buf_put(b, c->bos);
    for (int i = 0; i < c->n; i++) {
        switch (role_at(c, i)) {
        case ROLE_USER:
            buf_put(b, "[INST] ");
            buf_put(b, text_at(c, i));
            buf_put(b, "[/INST]");
            break;
        case ROLE_SYSTEM:
            buf_put(b, "[SYSTEM_PROMPT] ");
            buf_put(b, text_at(c, i));
            buf_put(b, "[/SYSTEM_PROMPT]");
            break;
        default:
            buf_put(b, " ");
            buf_put(b, text_at(c, i));
            buf_put(b, c->eos);
            break;
        }
    }
    return 0;
}

static void llama3_turn(const struct chat_ctx *c, struct chat_buf *b, int i)
{
    buf_put(b, "<|start_header_id|>");
    buf_put(b, c->m[i].role);
    buf_put(b, "<|end_header_id|>\n\n");
    buf_put_trim(b, text_at(c, i));
    buf_put(b, "<|eot_id|>");
}

static int render_llama3(const struct chat_ctx *c, struct chat_buf *b)
{
    buf_put(b, c->bos);
    for (int i = 0; i < c->n; i++) llama3_turn(c, b, i);
    if (c->o->add_generation_prompt)
        buf_put(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    return 0;
}

/* "%d %b %Y" in the C locale, as strftime_now("%d %b %Y") prints it. */
static int format_today(const struct chat_ctx *c, char *out, size_t outsz)
{
    static const char *const mon[12] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm now;
    const struct tm *t = c->o->today;
    if (!t) {
        time_t s = time(NULL);
        if (!localtime_r(&s, &now))
            return bt_errf(c->err, c->errsz, BT_ERR, "chat template: cannot read the date");
        t = &now;
    }
    if (t->tm_mon < 0 || t->tm_mon > 11 || t->tm_mday < 1 || t->tm_mday > 31 ||
        t->tm_year < -1900 || t->tm_year > 9999 - 1900)
        return bt_errf(c->err, c->errsz, BT_EINVAL, "chat template: bad date %d-%d-%d",
                       t->tm_year + 1900, t->tm_mon + 1, t->tm_mday);
    snprintf(out, outsz, "%02d %s %d", t->tm_mday, mon[t->tm_mon], t->tm_year + 1900);
    return 0;
}

/* 3.1 and 3.2: a system turn with the knowledge cutoff and a date always comes first; the
 * caller's first system message (trimmed) is appended to it. */
static int render_llama3_dated(const struct chat_ctx *c, struct chat_buf *b)
{
    char date[32] = "26 Jul 2024"; /* 3.1's default date_string */
    if (c->family == CHAT_LLAMA3_2) {
        int rc = format_today(c, date, sizeof(date));
        if (rc) return rc;
    }
    const char *sys = leading_system(c);
    buf_put(b, c->bos);
    buf_put(b, "<|start_header_id|>system<|end_header_id|>\n\n"
               "Cutting Knowledge Date: December 2023\nToday Date: ");
    buf_put(b, date);
    buf_put(b, "\n\n");
    if (sys) buf_put_trim(b, sys);
    buf_put(b, "<|eot_id|>");
    for (int i = sys ? 1 : 0; i < c->n; i++) llama3_turn(c, b, i);
    if (c->o->add_generation_prompt)
        buf_put(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    return 0;
}

static int render_phi3(const struct chat_ctx *c, struct chat_buf *b)
{
    for (int i = 0; i < c->n; i++) {
        int role = role_at(c, i);
        if (role == ROLE_SYSTEM && text_at(c, i)[0] == '\0') continue; /* empty system: none */
        buf_put(b, role == ROLE_SYSTEM ? "<|system|>\n"
                   : role == ROLE_USER ? "<|user|>\n"
                                       : "<|assistant|>\n");
        buf_put(b, text_at(c, i));
        buf_put(b, "<|end|>\n");
    }
    buf_put(b, c->o->add_generation_prompt ? "<|assistant|>\n" : c->eos);
    return 0;
}

/* Gemma 2 rejects a leading system message; Gemma 3 prefixes its text to the first turn. */
static int render_gemma(const struct chat_ctx *c, struct chat_buf *b)
{
    bool v3 = c->family == CHAT_GEMMA3;
    const char *sys = leading_system(c);
    if (sys && !v3) return reject(c, 0, "System role not supported");
    int from = sys ? 1 : 0, rc = check_alternation(c, from, MSG_ALTERNATE);
    if (rc) return rc;
    buf_put(b, c->bos);
    for (int i = from; i < c->n; i++) {
        buf_put(b, "<start_of_turn>");
        buf_put(b, role_at(c, i) == ROLE_ASSISTANT ? "model" : c->m[i].role);
        buf_put(b, "\n");
        if (i == from && sys) {
            buf_put(b, sys);
            buf_put(b, "\n\n");
        }
        buf_put_trim(b, text_at(c, i));
        buf_put(b, "<end_of_turn>\n");
    }
    if (c->o->add_generation_prompt) buf_put(b, "<start_of_turn>model\n");
    return 0;
}

static int render_zephyr(const struct chat_ctx *c, struct chat_buf *b)
{
    for (int i = 0; i < c->n; i++) {
        int role = role_at(c, i);
        buf_put(b, role == ROLE_SYSTEM ? "<|system|>\n"
                   : role == ROLE_USER ? "<|user|>\n"
                                       : "<|assistant|>\n");
        buf_put(b, text_at(c, i));
        buf_put(b, c->eos);
        buf_put(b, "\n");
    }
    if (c->o->add_generation_prompt) buf_put(b, "<|assistant|>\n");
    return 0;
}

static int render_deepseek(const struct chat_ctx *c, struct chat_buf *b)
{
    bool has_system = false;
    for (int i = 0; i < c->n; i++) has_system |= role_at(c, i) == ROLE_SYSTEM;
    buf_put(b, c->bos);
    if (!has_system)
        buf_put(b, "You are an AI programming assistant, utilizing the Deepseek Coder model, "
                   "developed by Deepseek Company, and you only answer questions related to "
                   "computer science. For politically sensitive questions, security and privacy "
                   "issues, and other non-computer science questions, you will refuse to "
                   "answer\n");
    for (int i = 0; i < c->n; i++) {
        int role = role_at(c, i);
        if (role == ROLE_SYSTEM) {
            buf_put(b, text_at(c, i));
        } else if (role == ROLE_USER) {
            buf_put(b, "### Instruction:\n");
            buf_put(b, text_at(c, i));
            buf_put(b, "\n");
        } else {
            buf_put(b, "### Response:\n");
            buf_put(b, text_at(c, i));
            buf_put(b, "\n<|EOT|>\n");
        }
    }
    if (c->o->add_generation_prompt) buf_put(b, "### Response:\n");
    return 0;
}

static int render_deepseek2(const struct chat_ctx *c, struct chat_buf *b)
{
    buf_put(b, c->bos);
    for (int i = 0; i < c->n; i++) {
        int role = role_at(c, i);
        if (role == ROLE_USER) {
            buf_put(b, "User: ");
            buf_put(b, text_at(c, i));
            buf_put(b, "\n\n");
        } else if (role == ROLE_ASSISTANT) {
            buf_put(b, "Assistant: ");
            buf_put(b, text_at(c, i));
            buf_put(b, c->eos);
        } else {
            buf_put(b, text_at(c, i));
            buf_put(b, "\n\n");
        }
    }
    if (c->o->add_generation_prompt) buf_put(b, "Assistant:");
    return 0;
}

/* Text after the last "</think>" (all of s if there is none): R1 drops earlier reasoning. */
static const char *after_think(const char *s)
{
    static const char tag[] = "</think>";
    const char *r = s;
    for (const char *p = strstr(s, tag); p; p = strstr(p + 1, tag)) r = p + sizeof(tag) - 1;
    return r;
}

/* V3 and R1: the LAST system message's text comes first, with no marker; then
 * <｜User｜>/<｜Assistant｜> turns. */
static int render_deepseek3(const struct chat_ctx *c, struct chat_buf *b)
{
    bool r1 = c->family == CHAT_DEEPSEEK_R1 || c->family == CHAT_DEEPSEEK_R1_EOS;
    bool user_eos = c->family == CHAT_DEEPSEEK_R1_EOS;
    const char *sys = "";
    for (int i = 0; i < c->n; i++)
        if (role_at(c, i) == ROLE_SYSTEM) sys = text_at(c, i);
    buf_put(b, c->bos);
    buf_put(b, sys);
    for (int i = 0; i < c->n; i++) {
        int role = role_at(c, i);
        if (role == ROLE_USER) {
            buf_put(b, "<｜User｜>");
            buf_put(b, text_at(c, i));
            if (user_eos) buf_put(b, "<｜end▁of▁sentence｜>");
        } else if (role == ROLE_ASSISTANT) {
            buf_put(b, "<｜Assistant｜>");
            buf_put(b, r1 ? after_think(text_at(c, i)) : text_at(c, i));
            buf_put(b, "<｜end▁of▁sentence｜>");
        }
    }
    if (c->o->add_generation_prompt)
        buf_put(b, r1 ? "<｜Assistant｜><think>\n" : "<｜Assistant｜>");
    return 0;
}

static int render_command_r(const struct chat_ctx *c, struct chat_buf *b)
{
    const char *sys = leading_system(c);
    int from = sys ? 1 : 0, rc = check_alternation(c, from, MSG_ALTERNATE);
    if (rc) return rc;
    buf_put(b, c->bos);
    if (sys) {
        buf_put(b, "<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>");
        buf_put(b, sys);
        buf_put(b, "<|END_OF_TURN_TOKEN|>");
    }
    for (int i = from; i < c->n; i++) {
        int role = role_at(c, i);
        if (role == ROLE_SYSTEM) continue;
        buf_put(b, role == ROLE_USER ? "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>"
                                     : "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>");
        buf_put_trim(b, text_at(c, i));
        buf_put(b, "<|END_OF_TURN_TOKEN|>");
    }
    if (c->o->add_generation_prompt) buf_put(b, "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>");
    return 0;
}

static int render_vicuna(const struct chat_ctx *c, struct chat_buf *b)
{
    for (int i = 0; i < c->n; i++) {
        int role = role_at(c, i);
        if (role == ROLE_SYSTEM) {
            buf_put(b, text_at(c, i));
            buf_put(b, "\n\n");
        } else if (role == ROLE_USER) {
            buf_put(b, "USER: ");
            buf_put(b, text_at(c, i));
            buf_put(b, "\n");
        } else {
            buf_put(b, "ASSISTANT: ");
            buf_put(b, text_at(c, i));
            buf_put(b, "</s>\n");
        }
    }
    if (c->o->add_generation_prompt) buf_put(b, "ASSISTANT:");
    return 0;
}

static int render_openchat(const struct chat_ctx *c, struct chat_buf *b)
{
    buf_put(b, c->bos);
    for (int i = 0; i < c->n; i++) {
        int role = role_at(c, i);
        buf_put(b, role == ROLE_SYSTEM ? "GPT4 Correct System: "
                   : role == ROLE_USER ? "GPT4 Correct User: "
                                       : "GPT4 Correct Assistant: ");
        buf_put(b, text_at(c, i));
        buf_put(b, "<|end_of_turn|>");
    }
    if (c->o->add_generation_prompt) buf_put(b, "GPT4 Correct Assistant:");
    return 0;
}

static int render_granite(const struct chat_ctx *c, struct chat_buf *b)
{
    for (int i = 0; i < c->n; i++) {
        buf_put(b, "<|start_of_role|>");
        buf_put(b, c->m[i].role);
        buf_put(b, "<|end_of_role|>");
        buf_put(b, text_at(c, i));
        buf_put(b, "<|end_of_text|>\n");
    }
    if (c->o->add_generation_prompt) buf_put(b, "<|start_of_role|>assistant<|end_of_role|>");
    return 0;
}

/* ---- the family table ---- */

struct chat_family_info {
    const char *name;
    const char *base;
    const char *alias; /* a second accepted name, or NULL */
    chat_render_fn render;
};

static const struct chat_family_info chat_families[CHAT_FAMILY_COUNT] = {
    [CHAT_UNKNOWN] = {"unknown", "unknown", NULL, NULL},
    [CHAT_CHATML] = {"chatml", "chatml", NULL, render_chatml},
    [CHAT_QWEN2_5] = {"qwen2.5", "chatml", NULL, render_qwen2_5},
    [CHAT_LLAMA2] = {"llama2", "llama2", NULL, render_llama2},
    [CHAT_MISTRAL_V0] = {"mistral-v0", "mistral", NULL, render_mistral_v0},
    [CHAT_MISTRAL_V1] = {"mistral-v1", "mistral", NULL, render_mistral_v1},
    [CHAT_MISTRAL_V3] = {"mistral-v3", "mistral", NULL, render_mistral_v3},
    [CHAT_MISTRAL_V3_TEKKEN] = {"mistral-v3-tekken", "mistral", "mistral-nemo", render_mistral_v3},
    [CHAT_MISTRAL_V7] = {"mistral-v7", "mistral", NULL, render_mistral_v7},
    [CHAT_LLAMA3] = {"llama3", "llama3", NULL, render_llama3},
    [CHAT_LLAMA3_1] = {"llama3.1", "llama3", "llama3.3", render_llama3_dated},
    [CHAT_LLAMA3_2] = {"llama3.2", "llama3", NULL, render_llama3_dated},
    [CHAT_PHI3] = {"phi3", "phi3", "phi3.5", render_phi3},
    [CHAT_GEMMA] = {"gemma", "gemma", "gemma2", render_gemma},
    [CHAT_GEMMA3] = {"gemma3", "gemma", NULL, render_gemma},
    [CHAT_ZEPHYR] = {"zephyr", "zephyr", NULL, render_zephyr},
    [CHAT_DEEPSEEK] = {"deepseek", "deepseek", "deepseek-coder", render_deepseek},
    [CHAT_DEEPSEEK2] = {"deepseek2", "deepseek", NULL, render_deepseek2},
    [CHAT_DEEPSEEK3] = {"deepseek3", "deepseek", "deepseek-v3", render_deepseek3},
    [CHAT_DEEPSEEK_R1] = {"deepseek-r1", "deepseek", NULL, render_deepseek3},
    [CHAT_DEEPSEEK_R1_EOS] = {"deepseek-r1-eos", "deepseek", NULL, render_deepseek3},
    [CHAT_COMMAND_R] = {"command-r", "command-r", NULL, render_command_r},
    [CHAT_VICUNA] = {"vicuna", "vicuna", NULL, render_vicuna},
    [CHAT_OPENCHAT] = {"openchat", "openchat", NULL, render_openchat},
    [CHAT_GRANITE] = {"granite", "granite", NULL, render_granite},
};

static const char chat_names_list[] =
    "chatml qwen2.5 llama2 mistral-v0 mistral-v1 mistral-v3 mistral-v3-tekken mistral-nemo "
    "mistral-v7 llama3 llama3.1 llama3.3 llama3.2 phi3 phi3.5 gemma gemma2 gemma3 zephyr "
    "deepseek deepseek-coder deepseek2 deepseek3 deepseek-v3 deepseek-r1 deepseek-r1-eos "
    "command-r vicuna openchat granite";

/* ---- detection: the first rule whose markers all occur (and whose `unless` does not) wins;
 * order matters where one family's markers are a subset of another's ---- */

struct chat_rule {
    int family;
    const char *all[3];
    const char *unless;
};

static const struct chat_rule chat_rules[] = {
    {CHAT_QWEN2_5, {"<|im_start|>", "You are Qwen, created by Alibaba Cloud."}, "<|im_sep|>"},
    {CHAT_CHATML, {"<|im_start|>"}, "<|im_sep|>"}, /* not Phi-4 */
    {CHAT_MISTRAL_V7, {"[INST]", "[SYSTEM_PROMPT]"}, NULL},
    {CHAT_LLAMA2, {"[INST]", "<<SYS>>"}, NULL},
    {CHAT_MISTRAL_V3_TEKKEN, {"[INST]", "\"[INST]\""}, NULL},
    {CHAT_MISTRAL_V1, {"[INST]", "' [INST] '"}, NULL},
    {CHAT_MISTRAL_V3, {"[INST]", "[AVAILABLE_TOOLS]"}, NULL},
    {CHAT_MISTRAL_V0, {"[INST]"}, NULL},
    {CHAT_LLAMA3_2, {"<|start_header_id|>", "Today Date: ", "strftime_now"}, NULL},
    {CHAT_LLAMA3_1, {"<|start_header_id|>", "Today Date: "}, NULL},
    {CHAT_LLAMA3, {"<|start_header_id|>", "<|end_header_id|>"}, NULL},
    {CHAT_GEMMA3, {"<start_of_turn>", "first_user_prefix"}, NULL},
    {CHAT_GEMMA, {"<start_of_turn>"}, NULL},
    {CHAT_PHI3, {"<|assistant|>", "<|end|>"}, NULL},
    {CHAT_ZEPHYR, {"<|user|>", "<|assistant|>", "eos_token"}, "[gMASK]"}, /* not ChatGLM */
    {CHAT_DEEPSEEK_R1_EOS,
     {"<｜User｜>", "</think>", "'<｜User｜>' + message['content'] + '<｜end▁of▁sentence｜>'"},
     NULL},
    {CHAT_DEEPSEEK_R1, {"<｜User｜>", "</think>"}, NULL},
    {CHAT_DEEPSEEK3, {"<｜User｜>", "<｜Assistant｜>"}, NULL},
    {CHAT_DEEPSEEK2, {"'Assistant: ' + message['content'] + eos_token"}, NULL},
    {CHAT_DEEPSEEK, {"### Instruction:", "<|EOT|>"}, NULL},
    {CHAT_COMMAND_R, {"<|START_OF_TURN_TOKEN|>", "<|USER_TOKEN|>"}, NULL},
    {CHAT_OPENCHAT, {"GPT4 Correct "}, NULL},
    {CHAT_VICUNA, {"USER: ", "ASSISTANT: "}, "SYSTEM: "},
    {CHAT_GRANITE, {"<|start_of_role|>"}, NULL},
};

const char *chat_family_name(int family)
{
    if (family < 0 || family >= CHAT_FAMILY_COUNT) return "unknown";
    return chat_families[family].name;
}

const char *chat_family_base(int family)
{
    if (family < 0 || family >= CHAT_FAMILY_COUNT) return "unknown";
    return chat_families[family].base;
}

const char *chat_family_names(void)
{
    return chat_names_list;
}

int chat_family_from_name(const char *name)
{
    if (!name) return CHAT_UNKNOWN;
    for (int f = 1; f < CHAT_FAMILY_COUNT; f++) {
        const struct chat_family_info *fi = &chat_families[f];
        if (strcmp(name, fi->name) == 0 || (fi->alias && strcmp(name, fi->alias) == 0)) return f;
    }
    return CHAT_UNKNOWN;
}

int chat_detect(const char *tmpl)
{
    if (!tmpl) return CHAT_UNKNOWN;
    int f = chat_family_from_name(tmpl);
    if (f != CHAT_UNKNOWN) return f;
    for (size_t r = 0; r < sizeof(chat_rules) / sizeof(chat_rules[0]); r++) {
        const struct chat_rule *rule = &chat_rules[r];
        bool ok = !rule->unless || !strstr(tmpl, rule->unless);
        for (int k = 0; ok && k < 3 && rule->all[k]; k++) ok = strstr(tmpl, rule->all[k]) != NULL;
        if (ok) return rule->family;
    }
    return CHAT_UNKNOWN;
}

int chat_select(const char *override, const char *gguf_tmpl, int *family, bool *fell_back,
                char *err, size_t errsz)
{
    if (!family) return bt_errf(err, errsz, BT_EINVAL, "chat_select: no output");
    *family = CHAT_UNKNOWN;
    if (fell_back) *fell_back = false;
    const char *tmpl = gguf_tmpl;
    if (override && override[0]) {
        int f = chat_family_from_name(override);
        if (f != CHAT_UNKNOWN) {
            *family = f;
            return 0;
        }
        if (!strstr(override, "{{") && !strstr(override, "{%"))
            return bt_errf(err, errsz, BT_EINVAL,
                           "unknown chat template '%.64s' (a Jinja template or one of: %s)",
                           override, chat_names_list);
        tmpl = override;
    }
    int f = chat_detect(tmpl);
    if (f == CHAT_UNKNOWN) {
        f = CHAT_FALLBACK;
        if (fell_back) *fell_back = true;
    }
    *family = f;
    return 0;
}

int chat_render_ex(int family, const struct chat_msg *msgs, int n, const struct chat_opts *opts,
                   char **out, char *err, size_t errsz)
{
    static const struct chat_opts defaults = {0};
    struct chat_buf b = {0};
    int rc;
    if (!out) return bt_errf(err, errsz, BT_EINVAL, "chat_render: no output");
    *out = NULL;
    if (family <= CHAT_UNKNOWN || family >= CHAT_FAMILY_COUNT)
        return bt_errf(err, errsz, BT_EINVAL, "chat_render: bad template family %d", family);
    if (!msgs || n < 1) return bt_errf(err, errsz, BT_EINVAL, "chat_render: no messages to render");
    for (int i = 0; i < n; i++) {
        if (msg_role(&msgs[i]) == ROLE_BAD)
            return bt_errf(err, errsz, BT_EINVAL,
                           "chat_render: message %d: unknown role '%.32s' (system, user or "
                           "assistant)",
                           i, msgs[i].role ? msgs[i].role : "(none)");
        if (!msgs[i].content)
            return bt_errf(err, errsz, BT_EINVAL, "chat_render: message %d: no content", i);
    }
    if (!opts) opts = &defaults;
    struct chat_ctx c = {
        .family = family,
        .m = msgs,
        .n = n,
        .o = opts,
        .bos = opts->bos ? opts->bos : "",
        .eos = opts->eos ? opts->eos : "",
        .err = err,
        .errsz = errsz,
    };
    rc = chat_families[family].render(&c, &b);
    if (rc) goto fail;
    if (!b.oom && !b.p) b.p = calloc(1, 1); /* an empty prompt is still a string */
    if (b.oom || !b.p) {
        rc = bt_errf(err, errsz, BT_ENOMEM, "chat_render: out of memory (%zu bytes)", b.len);
        goto fail;
    }
    *out = b.p;
    return 0;
fail:
    free(b.p);
    return rc;
}

int chat_render(int family, const struct chat_msg *msgs, int n, bool add_generation_prompt,
                const char *bos, const char *eos, char **out, char *err, size_t errsz)
{
    struct chat_opts o = {
        .add_generation_prompt = add_generation_prompt,
        .bos = bos,
        .eos = eos,
        .today = NULL,
    };
    return chat_render_ex(family, msgs, n, &o, out, err, errsz);
}
