#!/usr/bin/env bash
# Builds the filter and starts Envoy with it on http://127.0.0.1:10000, in front of the
# bundled mock provider (offline), or in front of OpenAI when OPENAI_API_KEY is set.
# Env: OPENAI_API_KEY, AI_PROXY_LISTEN_PORT (10000),
#      AI_PROXY_ADMIN_PORT (9901), MOCK_PORT (8081).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_rust
ensure_envoy
build_wasm
say "building the mock provider and the bootstrap renderer"
cargo build --locked -q -p integration --bins

RUN_DIR="$ROOT/.run"
mkdir -p "$RUN_DIR"
chmod 700 "$RUN_DIR"
LISTEN="${AI_PROXY_LISTEN_PORT:-10000}"
export AI_PROXY_LISTEN_PORT="$LISTEN" MOCK_PORT="${MOCK_PORT:-8081}"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM

if [ -z "${OPENAI_API_KEY:-}" ]; then
    "$ROOT/target/debug/mock-llm" "$MOCK_PORT" &
    pids+=($!)
fi
# The bootstrap may hold the API key: it is written owner-only, and the key never goes on
# a command line.
"$ROOT/target/debug/demo-bootstrap" "$RUN_DIR/demo.yaml"

cat >&2 <<MSG

Try it (in another terminal):

  curl -s http://127.0.0.1:$LISTEN/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}]}'

  curl -sN http://127.0.0.1:$LISTEN/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Count to five"}]}'

  curl -s http://127.0.0.1:$LISTEN/v1/embeddings -H 'content-type: application/json' \\
    -d '{"input":"hello world","model":"text-embedding-3-small"}'

Admin: http://127.0.0.1:${AI_PROXY_ADMIN_PORT:-9901}/   Stop: Ctrl-C

MSG
"$ENVOY" -c "$RUN_DIR/demo.yaml" --concurrency "${ENVOY_CONCURRENCY:-2}" --disable-hot-restart \
    --log-level "${ENVOY_LOG_LEVEL:-info}" --component-log-level "wasm:info" &
pids+=($!)
wait "${pids[-1]}"
