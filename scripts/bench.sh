#!/usr/bin/env bash
# What the filter costs in Envoy, on this machine: builds the filter, the no-op Wasm filter
# and the body-read floor (bench/), installs wrk if needed, runs the native micro-benchmarks,
# then the interleaved Envoy runs (integration/src/bin/bench.rs) and prints the tables.
# Env: BENCH_SECONDS (5), BENCH_ROUNDS (3), BENCH_MB_ROUNDS (1), BENCH_CONNECTIONS (64),
# BENCH_STREAMS (30), BENCH_VARIANTS, BENCH_PIN; BENCH_ABLATION=1 also builds the filter
# once per `ablate-*` feature (Cargo.toml; into target/ablation) and measures each build.
# BENCH_MICRO=0 skips the native micro-benchmarks. BENCH_RLS=0 skips the rate limit service
# check (otherwise Redis and the test service are set up as for the tests; the service's
# build is cached outside the clone). About 10 minutes; 23 with the ablation.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_rust
ensure_envoy
if ! command -v wrk >/dev/null; then
    say "installing wrk (Debian package)"
    if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq wrk; else sudo apt-get update -qq && sudo apt-get install -y -qq wrk; fi
fi
build_wasm
for f in noop floor; do
    say "building the $f reference filter (bench/$f-filter)"
    CARGO_TARGET_DIR="$ROOT/target" cargo build --locked --release --target wasm32-wasip1 \
        --manifest-path "$ROOT/bench/$f-filter/Cargo.toml"
done
if [ "${BENCH_ABLATION:-}" = 1 ]; then
    out="$ROOT/target/ablation/builds"
    mkdir -p "$out"
    features="$(sed -n 's/^\(ablate-[a-z-]*\) = \[\]$/\1/p' "$ROOT/Cargo.toml")"
    for feature in $features; do
        say "building the filter with $feature (benchmark only)"
        CARGO_TARGET_DIR="$ROOT/target/ablation" cargo build --locked --release -q \
            --target wasm32-wasip1 -p envoy-ai-proxy --features "$feature"
        if [ -n "${WASM_OPT:-}" ]; then
            "$WASM_OPT" "$ROOT/target/ablation/wasm32-wasip1/release/envoy_ai_proxy.wasm" -o "$out/$feature.wasm"
        else
            cp "$ROOT/target/ablation/wasm32-wasip1/release/envoy_ai_proxy.wasm" "$out/$feature.wasm"
        fi
    done
    export BENCH_ABLATION="$out"
else
    unset BENCH_ABLATION
fi
if [ "${BENCH_RLS:-1}" != 0 ]; then
    ensure_redis
    build_rls
else
    unset RLS_BIN
fi
if [ "${BENCH_MICRO:-1}" != 0 ]; then
    say "native micro-benchmarks of the hot paths"
    cargo bench --locked -p envoy-ai-proxy --bench hot_paths
fi
if [ "${BENCH_CALLGRIND:-}" = 1 ]; then
    command -v valgrind >/dev/null || { say "BENCH_CALLGRIND=1 needs valgrind (Debian package)"; exit 1; }
    # Callgrind runs the Envoy binary itself, not the virtualenv's launcher script.
    if [ -z "${ENVOY_REAL_BIN:-}" ]; then
        real="$(ls "$ROOT"/.venv/lib/python3*/site-packages/envoy/_bin/envoy 2>/dev/null | head -n 1 || true)"
        [ -n "$real" ] || { say "BENCH_CALLGRIND=1: set ENVOY_REAL_BIN to the Envoy binary (not found in .venv)"; exit 1; }
        export ENVOY_REAL_BIN="$real"
    fi
fi
say "building the benchmark driver"
cargo build --locked --release -q -p integration --bin bench
say "running (plain Envoy, no-op filter, body-read floor, the AI proxy; interleaved rounds)"
# With two cores or more, Envoy gets CPU 1 and wrk + the upstream CPU 0, so Envoy's CPU per
# request is measured without them competing (BENCH_PIN= to turn it off).
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null && [ -z "${BENCH_PIN+set}" ]; then
    BENCH_PIN=1 taskset -c 0 "$ROOT/target/release/bench"
else
    "$ROOT/target/release/bench"
fi
