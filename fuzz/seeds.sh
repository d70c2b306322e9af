#!/usr/bin/env bash
# Writes the seed corpus (fuzz/corpus/<target>/seed-*) from the repository's own files:
# the plugin configurations of examples/ (and of the APISIX routes there), and the
# recorded provider answers and streams of fixtures/. Each seed is one input in the layout
# of fuzz/src/input.rs: a byte n, n control bytes, then the payload. Run it again when the
# fixtures change; inputs that a run found are kept elsewhere (scripts/fuzz.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
C=fuzz/corpus
rm -f "$C"/*/seed-*
mkdir -p "$C"/{config,body,sse,usage}

# seed TARGET NAME CONTROL PAYLOAD_FILE: CONTROL is a printf format of the control bytes.
seed() {
    local ctl
    ctl="$(printf "$3" | od -An -v -tx1 | tr -d ' \n')"
    { printf "\\x$(printf '%02x' $((${#ctl} / 2)))"; printf "$3"; cat "$4"; } >"$C/$1/seed-$2"
}

# config: the configuration itself, no control bytes.
for f in examples/*.json; do
    cp "$f" "$C/config/seed-$(basename "$f")"
done
for f in examples/apisix/*/route.json; do
    python3 - "$f" "$C/config/seed-apisix-$(basename "$(dirname "$f")").json" <<'PY'
import json, sys
route = json.load(open(sys.argv[1]))
plugins = route.get("plugins", {})
conf = plugins.get("ai-proxy-multi") or plugins.get("ai-proxy")
json.dump(conf, open(sys.argv[2], "w"), indent=2)
PY
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
printf '%s' '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}]}' >"$tmp/chat.json"
printf '%s' '{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Count to five"}]}' >"$tmp/stream.json"
printf '%s' '{"input":"hello world","model":"text-embedding-3-small"}' >"$tmp/embeddings.json"

# body: the client's requests (from README.md) and the providers' JSON answers; some with
# edits (control bytes: how many, then per edit the kind of key and of value).
for f in "$tmp"/*.json fixtures/openai/*.json fixtures/anthropic/*.json; do
    name="$(basename "$(dirname "$f")")-$(basename "$f")"
    case "$f" in "$tmp"/*) name="request-$(basename "$f")" ;; esac
    seed body "$name" '' "$f"
done
seed body edits-request-chat.json '\x04\x00\x00\x00\x02\x02\x01\x01\x01\x03\x05\x05\x00\x03\x03\x05\x00' "$tmp/chat.json"
seed body edits-request-stream.json '\x03\x01\x01\x00\x02\x00\x03\x06\x41\x42\x43\x01\x00\x00' "$tmp/stream.json"

# sse: the streams whole, byte by byte, and in cut pieces with some events dropped.
for f in fixtures/openai/*.sse fixtures/anthropic/*.sse; do
    seed sse "$(basename "$(dirname "$f")")-$(basename "$f")" '' "$f"
done
seed sse bytes-openai-chat_stream_usage.sse '\x01\x00\x55\x55\x55\x55\x55\x55\x55\x55' fixtures/openai/chat_stream_usage.sse
seed sse cuts-anthropic-stream_text.sse '\x02\x03\x00\x00\x00\x65\x00\x00\x00\x66\x00\x00\x01\x01\xf0\x0f\x00\x00\x00\x00\x00\x00' fixtures/anthropic/stream_text.sse

# usage: control bytes sse?, drop the usage event?, collect text?, then the chunking.
for f in fixtures/openai/*.sse fixtures/anthropic/*.sse; do
    seed usage "sse-$(basename "$(dirname "$f")")-$(basename "$f")" '\x01\x01\x01\x01\x04' "$f"
done
for f in fixtures/openai/*.json fixtures/anthropic/*.json; do
    seed usage "json-$(basename "$(dirname "$f")")-$(basename "$f")" '\x00\x00\x01\x02\x01\x00\x00\x00\x40' "$f"
done
ls "$C"/* | grep -c seed- | xargs printf 'seeds written: %s\n'
