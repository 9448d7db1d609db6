/* chat: chat-template families — detection from a GGUF's tokenizer.chat_template and rendering
 * of a conversation into the prompt text the model was trained on.
 *
 * baton has no Jinja engine. It recognises the template's family by distinctive markers and
 * renders with a small hand-written renderer per family. For the templates the family names
 * (see docs/chat-templates.md and the fixtures in tests/fixtures/chat/) the output is byte-exact
 * with what Hugging Face transformers renders through Jinja for the same messages, including
 * the template's errors: a conversation the real template rejects (roles that do not
 * alternate, a system message where none is allowed) fails here with BT_EINVAL and the
 * template's own message. Tools, tool calls and multimodal content are not rendered.
 *
 * Inputs are hostile (the template from a file, messages from HTTP clients): templates are
 * only searched, never executed; message text is copied verbatim (it may contain template
 * syntax or special-token text; tokenization decides what that means).
 *
 * Ownership: chat_render* returns a malloc'd string the caller frees; every other pointer is
 * borrowed for the duration of the call. Strings returned by chat_family_name/_base are static.
 * Threads: no global state; every function may be called from any thread. */
#ifndef BATON_CHAT_H
#define BATON_CHAT_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

/* A family is one exact rendering; a model family with templates that render differently gets
 * one entry per variant (llama3 / llama3.1 / llama3.2). chat_family_base() gives the coarse
 * family the variant belongs to (DESIGN §7: llama2, llama3, chatml, mistral, phi3, gemma,
 * zephyr, deepseek, ...). */
enum chat_family {
    CHAT_UNKNOWN = 0,
    CHAT_CHATML,            /* <|im_start|>role\n...<|im_end|>\n (OpenHermes, Yi, ...) */
    CHAT_QWEN2_5,           /* chatml + Qwen2.5's default system prompt */
    CHAT_LLAMA2,            /* Llama-2-chat: <s>[INST] <<SYS>>...<</SYS>> ... [/INST] */
    CHAT_MISTRAL_V0,        /* Mistral-7B-Instruct v0.1/v0.2 original: no system role */
    CHAT_MISTRAL_V1,        /* " [INST] " with system in the first user turn */
    CHAT_MISTRAL_V3,        /* "[INST] " with system in the last user turn (v0.3) */
    CHAT_MISTRAL_V3_TEKKEN, /* "[INST]" without spaces (Nemo) */
    CHAT_MISTRAL_V7,        /* [SYSTEM_PROMPT] ... [/SYSTEM_PROMPT][INST] ...[/INST] */
    CHAT_LLAMA3,            /* Llama 3.0: headers + <|eot_id|> */
    CHAT_LLAMA3_1,          /* Llama 3.1/3.3: system block with the fixed date 26 Jul 2024 */
    CHAT_LLAMA3_2,          /* Llama 3.2: system block with today's date (strftime_now) */
    CHAT_PHI3,              /* Phi-3.5: <|user|>\n...<|end|>\n */
    CHAT_GEMMA,             /* Gemma 1/2: no system role */
    CHAT_GEMMA3,            /* Gemma 3: system text prefixed to the first user turn */
    CHAT_ZEPHYR,            /* <|user|>\n...</s>\n (zephyr-7b-beta, TinyLlama-chat) */
    CHAT_DEEPSEEK,          /* deepseek-coder: ### Instruction: / ### Response: */
    CHAT_DEEPSEEK2,         /* DeepSeek-V2: User: / Assistant: */
    CHAT_DEEPSEEK3,         /* DeepSeek-V3: <｜User｜> / <｜Assistant｜> */
    CHAT_DEEPSEEK_R1,       /* R1 (distills): V3 + <think> stripped from history + <think>\n */
    CHAT_DEEPSEEK_R1_EOS, /* R1 as llama.cpp ships it: user turns end in <｜end▁of▁sentence｜> */
    CHAT_COMMAND_R,       /* Cohere Command-R (without tools) */
    CHAT_VICUNA,          /* USER: / ASSISTANT: */
    CHAT_OPENCHAT,        /* GPT4 Correct User: ...<|end_of_turn|> */
    CHAT_GRANITE,         /* <|start_of_role|>role<|end_of_role|>...<|end_of_text|>\n */
    CHAT_FAMILY_COUNT
};

/* The family used when a template is not recognised (callers log the fallback). */
#define CHAT_FALLBACK CHAT_CHATML

/* One message. role: "system", "user" or "assistant" (anything else is BT_EINVAL).
 * content: UTF-8 text, NUL-terminated; may be empty, never NULL. */
struct chat_msg {
    const char *role;
    const char *content;
};

struct chat_opts {
    bool add_generation_prompt; /* end with the opening of an assistant turn */
    const char *bos;            /* the model's BOS/EOS token text; NULL = "" */
    const char *eos;
    const struct tm *today; /* date printed by templates that call strftime_now (llama3.2);
                               NULL = the local date now */
};

/* The family of a Jinja template string, by distinctive markers; a family name (or alias) is
 * accepted too. CHAT_UNKNOWN for NULL or unrecognised text. Never fails. */
int chat_detect(const char *tmpl);

/* "chatml", "llama3.1", ...; "unknown" for CHAT_UNKNOWN or an out-of-range value. */
const char *chat_family_name(int family);
/* Coarse family: "llama3" for llama3.1, "mistral" for mistral-v3, ...; "unknown" if invalid. */
const char *chat_family_base(int family);
/* Family by name or alias ("chatml", "llama3.1", "mistral-nemo", ...); CHAT_UNKNOWN if none. */
int chat_family_from_name(const char *name);
/* All names accepted by chat_family_from_name, space-separated (for --help and errors). */
const char *chat_family_names(void);

/* Choose the family for a model. override (--chat-template; NULL or "" for none) is a family
 * name or a Jinja template; otherwise the GGUF's template (may be NULL) is detected. An
 * unrecognised template gives CHAT_FALLBACK with *fell_back = true (the caller logs it, with
 * the model's name); an override that is neither a name nor a template is BT_EINVAL. */
int chat_select(const char *override, const char *gguf_tmpl, int *family, bool *fell_back,
                char *err, size_t errsz);

/* Render msgs[0..n) with family's template into *out (malloc'd, NUL-terminated, caller frees;
 * NULL on failure). BT_EINVAL: bad family, n < 1, NULL/unknown role or NULL content, or a
 * conversation the family's template rejects (err says why); BT_ENOMEM. */
int chat_render_ex(int family, const struct chat_msg *msgs, int n, const struct chat_opts *opts,
                   char **out, char *err, size_t errsz);

/* chat_render_ex with today = the local date now. */
int chat_render(int family, const struct chat_msg *msgs, int n, bool add_generation_prompt,
                const char *bos, const char *eos, char **out, char *err, size_t errsz);

#endif
