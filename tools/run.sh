#!/usr/bin/env bash
# Install what baton needs (Debian 12, as root), build it, and serve a model: the README's first
# command.
#   tools/run.sh [MODEL.gguf] [baton serve options...]
# Without a model it serves ../shared/models/stories260K.gguf when present, else a small model it
# generates with baton-mkmodel, on a 2-rank pipeline (BATON_RANKS to change), on 127.0.0.1:8080
# (BATON_PORT / --port to change).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

bash tools/deps.sh
[ -f build/build.ninja ] || meson setup build >/dev/null
ninja -C build >/dev/null

model=""
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
    model=$1
    shift
fi
if [ -z "$model" ]; then
    if [ -f "$root/../shared/models/stories260K.gguf" ]; then
        model=$(cd "$root/../shared/models" && pwd)/stories260K.gguf
        echo "run.sh: no model given: serving stories260K (a tiny real Llama) from ../shared/models" >&2
    else
        model=$root/build/default-model.gguf
        if [ ! -f "$model" ]; then
            vocab=$root/../shared/models/vocab/ggml-vocab-llama-spm.gguf
            echo "run.sh: no model given and no ../shared: generating a small random model at $model" >&2
            if [ -f "$vocab" ]; then
                build/baton-mkmodel --preset tiny --type q8_0 --vocab "$vocab" -o "$model"
            else
                echo "run.sh: baton-mkmodel needs a vocabulary GGUF (../shared/models/vocab/); pass a model instead" >&2
                exit 1
            fi
        fi
        echo "run.sh: serving the generated model (random weights: its text is gibberish)" >&2
    fi
fi

ranks=${BATON_RANKS:-2}
[ -x build/baton-rankd ] || ranks=1
port=${BATON_PORT:-8080}
echo "run.sh: baton serve -m $model --ranks $ranks --port $port $*" >&2
echo "run.sh: try:  curl -s http://127.0.0.1:$port/v1/completions -H 'Content-Type: application/json' -d '{\"prompt\": \"Once upon a time\", \"max_tokens\": 64}'" >&2
exec build/baton serve -m "$model" --ranks "$ranks" --port "$port" "$@"
