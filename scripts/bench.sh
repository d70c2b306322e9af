#!/usr/bin/env bash
# What the filter costs over plain Envoy, on this machine: builds the filter and a no-op
# Wasm filter, installs wrk if needed, and prints the table (integration/src/bin/bench.rs).
# Env: BENCH_SECONDS (5), BENCH_ROUNDS (3), BENCH_CONNECTIONS (16), BENCH_VARIANTS,
# BENCH_PIN. Takes about 3 minutes.
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
say "building the no-op Wasm filter (the floor)"
CARGO_TARGET_DIR="$ROOT/target" cargo build --locked --release --target wasm32-wasip1 \
    --manifest-path "$ROOT/bench/noop-filter/Cargo.toml"
say "native micro-benchmarks of the hot paths"
cargo bench --locked -p envoy-ai-proxy --bench hot_paths
say "building the benchmark driver"
cargo build --locked --release -q -p integration --bin bench
say "running (plain Envoy, no-op Wasm filter, the AI proxy; interleaved rounds)"
# With two cores or more, Envoy gets CPU 1 and wrk + the mock CPU 0, so Envoy's CPU per
# request is measured without them competing (BENCH_PIN= to turn it off).
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null && [ -z "${BENCH_PIN+set}" ]; then
    BENCH_PIN=1 taskset -c 0 "$ROOT/target/release/bench"
else
    "$ROOT/target/release/bench"
fi
