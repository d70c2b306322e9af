#!/usr/bin/env bash
# Envoy's memory once it has loaded a filter, before any request (docs/performance.md,
# "Round 5" and "Round 6"): starts the real Envoy as the benchmark does (--concurrency 1,
# pinned to CPU 1 where there is one) with FILE.wasm and a plugin configuration, and prints
# its peak RSS (VmHWM) and anonymous RSS in kB after SECONDS (default 6). A configuration
# Envoy refuses makes it exit once the module is compiled: then the last VmHWM read before
# the exit is printed (every 2 ms), which is how the measurement-only copies of
# `compile-memory.mjs --empty-over` are measured (they trap when their code runs).
#
#   scripts/rss-at-start.sh FILE.wasm [CONFIG_JSON] [SECONDS]
#
# CONFIG_JSON defaults to the benchmark's one-provider configuration; pass '' for the
# no-op filter, '{}' for one the filter refuses. Interleave starts of the builds compared:
# one start varies by about 1 MB.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

WASM="$(realpath "${1:?usage: scripts/rss-at-start.sh FILE.wasm [CONFIG_JSON] [SECONDS]}")"
ONE_PROVIDER='{"provider": "openai-compatible", "cluster": "mock", "override": {"endpoint": "http://llm.internal"}, "auth": {"header": {"Authorization": "Bearer sk-bench"}}, "options": {"model": "gpt-4o-mini"}}'
CONFIG="${2-$ONE_PROVIDER}"
WAIT="${3:-6}"
ensure_envoy >/dev/null

dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
python3 - "$WASM" "$CONFIG" > "$dir/envoy.json" <<'PY'
import json, sys
wasm, config = sys.argv[1], sys.argv[2]
wasm_filter = {"name": "envoy.filters.http.wasm", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
    "config": {"name": "f", "root_id": "f", "allow_on_headers_stop_iteration": True,
               "vm_config": {"vm_id": "f", "runtime": "envoy.wasm.runtime.v8",
                             "code": {"local": {"filename": wasm}}},
               "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                 "value": config}}}}
router = {"name": "envoy.filters.http.router", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
hcm = {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    "stat_prefix": "rss",
    "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"],
        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "mock"}}]}]},
    "http_filters": [wasm_filter, router]}}
address = lambda port: {"socket_address": {"address": "127.0.0.1", "port_value": port}}
print(json.dumps({
    "admin": {"address": address(0)},
    "static_resources": {
        "listeners": [{"name": "l", "address": address(0), "filter_chains": [{"filters": [hcm]}]}],
        "clusters": [{"name": "mock", "type": "STATIC", "connect_timeout": "1s",
                      "load_assignment": {"cluster_name": "mock", "endpoints": [{"lb_endpoints": [
                          {"endpoint": {"address": address(9)}}]}]}}]}}))
PY

pin=()
[ "$(nproc)" -gt 1 ] && pin=(taskset -c 1)
"${pin[@]}" "$ENVOY" -c "$dir/envoy.json" --concurrency 1 -l error > "$dir/log" 2>&1 &
pid=$!
hwm=0 anon=0 exited=0
deadline=$((SECONDS + WAIT))
while [ "$SECONDS" -lt "$deadline" ]; do
    # A process that has exited has no memory lines left (a zombie's status has none).
    status="$(cat "/proc/$pid/status" 2>/dev/null)" || { exited=1; break; }
    now="$(awk '/^VmHWM:/ { print $2 }' <<<"$status")"
    [ -n "$now" ] || { exited=1; break; }
    hwm="$now"
    anon="$(awk '/^RssAnon:/ { print $2 }' <<<"$status")"
    sleep 0.002
done
if [ "$exited" = 0 ]; then
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    echo "VmHWM $hwm kB, RssAnon $anon kB (after ${WAIT}s)"
else
    wait "$pid" 2>/dev/null || true
    echo "VmHWM $hwm kB (last read before Envoy exited)"
fi
