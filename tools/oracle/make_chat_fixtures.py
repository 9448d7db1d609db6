#!/usr/bin/env python3
"""Render chat templates with real Jinja and store the results as fixtures for tests/unit/test_chat.c.

    /opt/oracle/bin/python tools/oracle/make_chat_fixtures.py

Reads every template in ../shared/chat-templates/ (real templates of instruct models) and in
tools/oracle/templates/ (classic family templates written down from their published form where
the shared folder has none), renders each over the conversations below the way Hugging Face
transformers does (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols,
raise_exception, strftime_now, tools=None) and writes tests/fixtures/chat/:

    conversations.txt   the conversations, once
    <template>.txt      one per template: where it lives, the family baton should detect, the
                        bos/eos strings and date used, then one result per (conversation,
                        add_generation_prompt): the exact output or the exception's message
    index.txt           the fixture files, one a line

Format: text lines "key args..."; a line ending in a byte count N ("msg user 5", "expect 120",
"raises 40") is followed by exactly N bytes and a newline, so any bytes survive.

Tool-use templates are rendered WITHOUT tools, as HF does when a request has none; several of
them then raise or print a tool preamble. Such templates get only a few cases (they exist to
show that baton's family renderer is NOT exact for them; the C test lists them as unsupported).
"""

import datetime
import json
import os
import sys

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.path.join(ROOT, "..", "shared", "chat-templates")
OWN = os.path.join(ROOT, "tools", "oracle", "templates")
OUT = os.path.join(ROOT, "tests", "fixtures", "chat")

# Synthetic special-token strings: a renderer that hard-codes "<s>" where the template says
# bos_token (or the reverse) fails against these.
BOS = "<|BOS|>"
EOS = "<|EOS|>"
# strftime_now() returns this moment (a day < 10 checks the zero padding of %d).
NOW = datetime.datetime(2025, 3, 5, 10, 30, 0)

# (file, source, family baton must detect, full): full=False renders only the first few
# conversations (tool-use templates that baton does not reproduce; keeps the fixtures small).
TEMPLATES = [
    ("CohereForAI-c4ai-command-r-plus-tool_use.jinja", "shared", "command-r", False),
    ("CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja", "shared", "command-r", False),
    ("NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja", "shared", "chatml", False),
    ("NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja", "shared", "chatml", False),
    ("Qwen-Qwen2.5-7B-Instruct.jinja", "shared", "qwen2.5", True),
    ("deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja", "shared", "deepseek-r1", True),
    ("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", "shared", "deepseek-r1", True),
    ("fireworks-ai-llama-3-firefunction-v2.jinja", "shared", "llama3", False),
    ("google-gemma-2-2b-it.jinja", "shared", "gemma", True),
    ("llama-cpp-deepseek-r1.jinja", "shared", "deepseek-r1-eos", True),
    ("meetkai-functionary-medium-v3.1.jinja", "shared", "llama3", False),
    ("meetkai-functionary-medium-v3.2.jinja", "shared", "llama3", False),
    ("meta-llama-Llama-3.1-8B-Instruct.jinja", "shared", "llama3.1", True),
    ("meta-llama-Llama-3.2-3B-Instruct.jinja", "shared", "llama3.2", True),
    ("meta-llama-Llama-3.3-70B-Instruct.jinja", "shared", "llama3.1", True),
    ("microsoft-Phi-3.5-mini-instruct.jinja", "shared", "phi3", True),
    ("mistralai-Mistral-Nemo-Instruct-2407.jinja", "shared", "mistral-v3-tekken", True),
    # Newer families baton does not render yet (issues 17 and 18: thinking, harmony, tools):
    # short fixtures, listed as unsupported in test_chat.c until their renderers exist;
    # "unknown": not recognised at all (baton falls back to chatml).
    ("Mistral-Small-3.2-24B-Instruct-2506.jinja", "shared", "mistral-v7", False),
    ("Qwen-Qwen3-0.6B.jinja", "shared", "chatml", False),
    ("Qwen3.5-4B.jinja", "shared", "chatml", False),
    ("deepseek-ai-DeepSeek-V3.1.jinja", "shared", "deepseek-r1", False),
    ("google-gemma-4-31B-it.jinja", "shared", "unknown", False),
    ("openai-gpt-oss-120b.jinja", "shared", "unknown", False),
    ("CohereForAI-c4ai-command-r-plus.jinja", "oracle", "command-r", True),
    ("HuggingFaceH4-zephyr-7b-beta.jinja", "oracle", "zephyr", True),
    ("deepseek-ai-DeepSeek-V2-Chat.jinja", "oracle", "deepseek2", True),
    ("deepseek-ai-DeepSeek-V3.jinja", "oracle", "deepseek3", True),
    ("deepseek-ai-deepseek-coder-33b-instruct.jinja", "oracle", "deepseek", True),
    ("google-gemma-3-it.jinja", "oracle", "gemma3", True),
    ("ibm-granite-granite-3.0-8b-instruct.jinja", "oracle", "granite", True),
    ("meta-llama-Llama-2-7b-chat-hf.jinja", "oracle", "llama2", True),
    ("meta-llama-Meta-Llama-3-8B-Instruct.jinja", "oracle", "llama3", True),
    ("mistralai-Mistral-7B-Instruct-v0.2.jinja", "oracle", "mistral-v0", True),
    ("mistralai-Mistral-7B-Instruct-v0.3.jinja", "oracle", "mistral-v3", True),
    ("mistralai-Mistral-Large-Instruct-2411-basic.jinja", "oracle", "mistral-v7", True),
    ("mistralai-cookbook-v1.jinja", "oracle", "mistral-v1", True),
    ("openchat-openchat-3.5-0106.jinja", "oracle", "openchat", True),
    ("teknium-OpenHermes-2.5-Mistral-7B.jinja", "oracle", "chatml", True),
    ("vicuna-v1.1.jinja", "oracle", "vicuna", True),
]
SHORT_CASES = 3


def S(c):
    return {"role": "system", "content": c}


def U(c):
    return {"role": "user", "content": c}


def A(c):
    return {"role": "assistant", "content": c}


# (name, messages, add_generation_prompt values)
CONVERSATIONS = [
    ("user", [U("Hello")], (True, False)),
    ("system-user", [S("You are a helpful assistant."), U("What is the capital of France?")],
     (True,)),
    ("multi-turn", [S("Be brief."), U("Hi"), A("Hello! How can I help?"), U("Tell me a joke.")],
     (True, False)),
    ("multi-turn-no-system", [U("Hi"), A("Hello!"), U("What is 2+2?")], (True,)),
    ("ends-with-assistant", [S("Answer in one word."), U("Sky colour?"), A("Blue")],
     (True, False)),
    ("non-ascii", [S("Tu es un assistant serviable. 日本語で答えて。"),
                   U("Ça va ? 🙂 Привет, мир! ﷽ e\u0301")], (True,)),
    ("empty-content", [S(""), U("")], (True,)),
    ("empty-turns", [U(""), A(""), U("x")], (True,)),
    ("whitespace", [S("  padded system \n"), U("\t\u3000 spaced user \u00a0\n"),
                    A("\n answer with spaces\x1f  "), U("\u2028\u2003last\u0085")], (True,)),
    ("think", [U("Why?"), A("<think>\nLet me think.\n</think>\n\nBecause."), U("And then?"),
               A("a</think>b</think>c"), U("Done?")], (True,)),
    ("markup", [U("{{ not jinja }} {% raw %} %s %n %% <|im_end|> [INST] \\ \" ' <<SYS>>")],
     (True,)),
    ("system-mid", [U("Hi"), A("Hello"), S("Now speak French."), U("Bonjour")], (True,)),
    ("two-systems", [S("first system"), S("second system"), U("q")], (True,)),
    ("system-only", [S("only a system prompt")], (True, False)),
    ("user-user", [U("a"), U("b")], (True,)),
    ("assistant-first", [A("I start."), U("ok")], (True,)),
]


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def strftime_now(fmt):
    return NOW.strftime(fmt)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def make_env():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def render(tmpl, messages, agp):
    try:
        out = tmpl.render(messages=messages, add_generation_prompt=agp, bos_token=BOS,
                          eos_token=EOS, tools=None, documents=None)
        return ("expect", out)
    except jinja2.exceptions.TemplateError as e:  # raise_exception and undefined names
        return ("raises", str(e) or type(e).__name__)
    except Exception as e:  # TypeError etc. from templates that need tools
        return ("raises", "%s: %s" % (type(e).__name__, e))


def blob(key, args, data):
    b = data.encode("utf-8")
    head = "%s %s%d\n" % (key, (args + " ") if args else "", len(b))
    return head.encode("utf-8") + b + b"\n"


def main():
    os.makedirs(OUT, exist_ok=True)
    env = make_env()

    with open(os.path.join(OUT, "conversations.txt"), "wb") as f:
        f.write(b"# generated by tools/oracle/make_chat_fixtures.py; do not edit\n")
        for name, msgs, _ in CONVERSATIONS:
            f.write(("conv %s %d\n" % (name, len(msgs))).encode())
            for m in msgs:
                f.write(blob("msg", m["role"], m["content"]))

    index = []
    for fname, source, family, full in TEMPLATES:
        path = os.path.join(SHARED if source == "shared" else OWN, fname)
        with open(path, encoding="utf-8") as f:
            src = f.read()
        tmpl = env.from_string(src)
        stem = fname[:-len(".jinja")]
        out = bytearray()
        out += b"# generated by tools/oracle/make_chat_fixtures.py; do not edit\n"
        out += ("template %s %s\n" % (source, fname)).encode()
        out += ("family %s\n" % family).encode()
        out += ("date %s\n" % NOW.strftime("%Y-%m-%d")).encode()
        out += blob("bos", "", BOS)
        out += blob("eos", "", EOS)
        convs = CONVERSATIONS if full else CONVERSATIONS[:SHORT_CASES]
        for name, msgs, agps in convs:
            for agp in agps:
                kind, text = render(tmpl, msgs, agp)
                out += ("case %s %d\n" % (name, 1 if agp else 0)).encode()
                out += blob(kind, "", text)
        with open(os.path.join(OUT, stem + ".txt"), "wb") as f:
            f.write(out)
        index.append(stem + ".txt")

    with open(os.path.join(OUT, "index.txt"), "w") as f:
        f.write("# generated by tools/oracle/make_chat_fixtures.py; do not edit\n")
        for name in index:
            f.write(name + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
