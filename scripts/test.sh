#!/usr/bin/env bash
# Every check, from nothing: toolchain and Envoy set-up, fmt, clippy (native and wasm32),
# unit tests, the wasm build, the benchmark's reference filters built, the integration
# tests against the real Envoy, and a short fuzzing run of every fuzz target (FUZZ_SECONDS
# each, default 15; docs/fuzzing.md).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

started=$SECONDS
results="$(mktemp)"
trap 'rm -f "$results"' EXIT
# Runs cargo test, keeping its "test result:" lines for the total at the end.
cargo_test() { cargo test --locked "$@" 2>&1 | tee -a "$results"; }
# The test rate limit service is its own workspace (ratelimit-service/), built by build_rls.
rls_tests() {
    cargo fmt --manifest-path ratelimit-service/Cargo.toml -- --check
    CARGO_TARGET_DIR="$RLS_TARGET_DIR" cargo test --locked \
        --manifest-path ratelimit-service/Cargo.toml 2>&1 | tee -a "$results"
}
# The fuzz crate (fuzz/, outside the workspace): formatted, then each target briefly.
fuzz_briefly() {
    cargo fmt --manifest-path fuzz/Cargo.toml -- --check
    scripts/fuzz.sh "${FUZZ_SECONDS:-15}"
}
# The library's unit tests again, built for wasm32-wasip1 and run under Node's V8 (the engine
# Envoy embeds): the wasm-only code (the simd128 scan) is tested there as it runs in Envoy.
wasm_unit_tests() {
    local exe
    exe="$(cargo test --locked --release --target wasm32-wasip1 -p envoy-ai-proxy --lib \
        --no-run --message-format=json-render-diagnostics |
        sed -n 's/.*"executable":"\([^"]*\.wasm\)".*/\1/p' | tail -1)"
    [ -n "$exe" ] || { echo "no wasm test program was built" >&2; return 1; }
    node --no-warnings scripts/wasi-run.mjs "$exe" --nocapture 2>&1 | grep -v ' \.\.\. ok$'
}
step() {
    local name="$1"; shift
    local t=$SECONDS
    say "$name"
    "$@"
    printf '    %s: %ss\n' "$name" "$((SECONDS - t))" >&2
}

step "set-up: Rust toolchain" ensure_rust
step "set-up: Envoy" ensure_envoy
step "set-up: Python tools (openai and anthropic SDKs, jsonschema, PyYAML)" ensure_python_tools
step "set-up: Node tools (openai npm package, Vercel AI SDK)" ensure_node_tools
step "set-up: Prometheus (Debian package, for the dashboard test)" ensure_prometheus
step "set-up: Redis (Debian package, run as a plain process by the tests)" ensure_redis
step "set-up: the test rate limit service (limitador crate; built once, cached outside the clone)" build_rls
step "fmt" cargo fmt --all -- --check
step "clippy (native, all targets)" cargo clippy --locked --workspace --all-targets -- -D warnings
step "clippy (wasm32, the filter)" cargo clippy --locked --release --target wasm32-wasip1 -p envoy-ai-proxy --lib -- -D warnings
step "unit tests" cargo_test -p envoy-ai-proxy
step "wasm build" build_wasm
step "unit tests in the wasm build (Node's V8, simd128)" wasm_unit_tests
# Envoy compiles the whole module at load, the largest functions first and several at once:
# its peak RSS follows them and the whole module's compile memory (docs/performance.md,
# "Round 5" to "Round 7"). Budgets in MB of V8's compile zone (Node's V8): the largest
# function, the two largest together, and all functions together.
step "compile memory of the .wasm (Node's V8)" \
    node scripts/compile-memory.mjs "$WASM" 5 3.5 6 155
# The benchmark's reference filters are built by bench.sh only; the floor filter compiles
# src/scan.rs as it is (its `contract+scan` floor), so a change there must keep it building.
reference_filters() {
    local f
    for f in noop floor; do
        CARGO_TARGET_DIR="$ROOT/target" cargo build --locked --release -q --target wasm32-wasip1 \
            --manifest-path "$ROOT/bench/$f-filter/Cargo.toml" || return 1
    done
}
step "the benchmark's reference filters build (bench/)" reference_filters
step "rate limit service: fmt and tests (real Redis)" rls_tests
step "integration tests (real Envoy)" cargo_test -p integration
step "fuzzing (config, body, sse, usage: ${FUZZ_SECONDS:-15}s each)" fuzz_briefly
say "all checks passed in $((SECONDS - started))s"
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$results"
