#!/usr/bin/env bash
# Builds the filter and starts Envoy with it on http://127.0.0.1:10000, in front of the
# bundled mock provider (offline: envoy/demo.yaml), or in front of OpenAI when
# OPENAI_API_KEY is set (envoy/openai.yaml: the key stays in Envoy's environment).
# Before starting anything it checks that every port it needs is free (and says which is
# not); the "try it" lines come once Envoy is ready; if the mock or Envoy stops, everything
# stops.
# Env: OPENAI_API_KEY, AI_PROXY_LISTEN_PORT (10000), AI_PROXY_ADMIN_PORT (9901),
#      MOCK_PORT (8081, only without OPENAI_API_KEY),
#      AI_PROXY_SKIP_BUILD=1 (use the filter and tools already built in target/).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

LISTEN="${AI_PROXY_LISTEN_PORT:-10000}"
ADMIN="${AI_PROXY_ADMIN_PORT:-9901}"
MOCK="${MOCK_PORT:-8081}"
export AI_PROXY_LISTEN_PORT="$LISTEN" AI_PROXY_ADMIN_PORT="$ADMIN" MOCK_PORT="$MOCK"

# Exits non-zero naming every needed port that something else holds on 127.0.0.1.
check_ports() {
    local needed=("AI_PROXY_LISTEN_PORT=$LISTEN" "AI_PROXY_ADMIN_PORT=$ADMIN")
    if [ -z "${OPENAI_API_KEY:-}" ]; then
        needed+=("MOCK_PORT=$MOCK")
    fi
    python3 - "${needed[@]}" <<'PY'
import socket, sys
taken, seen = [], {}
for spec in sys.argv[1:]:
    var, port = spec.split("=", 1)
    if not port.isdigit() or not 0 < int(port) < 65536:
        sys.exit(f"{var}={port} is not a port number")
    if port in seen:
        sys.exit(f"{var} and {seen[port]} are both {port}: give each its own port")
    seen[port] = var
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", int(port)))
        s.listen()
    except OSError as e:
        taken.append((var, port, e.strerror))
    finally:
        s.close()
if taken:
    for var, port, why in taken:
        print(f"port {port} is taken ({why}): set {var} to a free port, "
              f"e.g. {var}={int(port) + 1} scripts/run.sh", file=sys.stderr)
    sys.exit(1)
PY
}

check_ports || exit 1
ensure_rust
ensure_envoy
if [ "${AI_PROXY_SKIP_BUILD:-}" = 1 ]; then
    for f in "$WASM" "$ROOT/target/debug/mock-llm"; do
        [ -f "$f" ] || {
            echo "AI_PROXY_SKIP_BUILD=1 but $f is missing: run scripts/run.sh once without it" >&2
            exit 1
        }
    done
else
    build_wasm
    say "building the mock provider"
    cargo build --locked -q -p integration --bin mock-llm
fi
# The build may have taken minutes: check again right before starting.
check_ports || exit 1

RUN_DIR="$ROOT/.run"
mkdir -p "$RUN_DIR"
chmod 700 "$RUN_DIR"

pids=()
names=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# The name of the first started process that is no longer running, if any.
dead() {
    local i
    for i in "${!pids[@]}"; do
        kill -0 "${pids[$i]}" 2>/dev/null || { echo "${names[$i]}"; return 0; }
    done
    return 1
}
# Waits until `probe` succeeds; fails if a started process stops or after 60 s.
wait_for() {
    local what="$1" probe="$2" gone
    for _ in $(seq 600); do
        if gone="$(dead)"; then
            echo "$gone stopped before $what was ready: stopping" >&2
            exit 1
        fi
        if eval "$probe"; then return 0; fi
        sleep 0.1
    done
    echo "$what was not ready within 60 s: stopping" >&2
    exit 1
}
http_ok() {
    python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' "$1" \
        2>/dev/null
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if [ -z "${OPENAI_API_KEY:-}" ]; then
    "$ROOT/target/debug/mock-llm" "$MOCK" &
    pids+=($!)
    names+=("the mock provider (port $MOCK)")
    wait_for "the mock provider" "port_open $MOCK"
fi
# The shipped bootstrap as it is, or a copy with the ports asked for. It holds no key: with
# OPENAI_API_KEY, Envoy passes it from its environment to the filter (host_env_keys).
BOOTSTRAP="envoy/demo.yaml"
[ -n "${OPENAI_API_KEY:-}" ] && BOOTSTRAP="envoy/openai.yaml"
if [ "$LISTEN:$ADMIN:$MOCK" != "10000:9901:8081" ]; then
    sed -e "s/port_value: 10000/port_value: $LISTEN/" -e "s/port_value: 9901/port_value: $ADMIN/" \
        -e "s/port_value: 8081/port_value: $MOCK/" "$BOOTSTRAP" > "$RUN_DIR/bootstrap.yaml"
    BOOTSTRAP="$RUN_DIR/bootstrap.yaml"
fi

# Access-log lines are written at once (Envoy's default flush interval is 10 s).
"$ENVOY" -c "$BOOTSTRAP" --concurrency "${ENVOY_CONCURRENCY:-2}" --disable-hot-restart \
    --file-flush-interval-msec 100 \
    --log-level "${ENVOY_LOG_LEVEL:-info}" --component-log-level "wasm:info" &
pids+=($!)
names+=("Envoy")
wait_for "Envoy" "http_ok http://127.0.0.1:$ADMIN/ready"

cat >&2 <<MSG

Envoy is ready. Try it (in another terminal):

  curl -s http://127.0.0.1:$LISTEN/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}]}'

  curl -sN http://127.0.0.1:$LISTEN/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Count to five"}]}'

  curl -s http://127.0.0.1:$LISTEN/v1/embeddings -H 'content-type: application/json' \\
    -d '{"input":"hello world","model":"text-embedding-3-small"}'

Admin: http://127.0.0.1:$ADMIN/   Stop: Ctrl-C

MSG
# Whichever stops first stops the rest (the EXIT trap).
status=0
wait -n "${pids[@]}" || status=$?
gone="$(dead || true)"
echo "${gone:-a process} stopped (status $status): stopping everything" >&2
exit $(( status == 0 ? 1 : status ))
