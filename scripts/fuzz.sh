#!/usr/bin/env bash
# Fuzzes the filter's parsers (docs/fuzzing.md): builds the cargo-fuzz targets in fuzz/ and
# runs each for a bounded time, one process at a time, starting from the committed seeds
# (fuzz/corpus/<target>/) plus what earlier runs found (fuzz/work/<target>/, not
# committed). Prints executions, exec/s, coverage and features per target; exits non-zero
# when a target fails an oracle (the input is in fuzz/artifacts/<target>/).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     # default: 60 s, every target
#
# Environment: FUZZ_SANITIZER (default none; `address` works too, through RUSTC_BOOTSTRAP
# on the stable toolchain), FUZZ_ARGS (more libFuzzer flags, e.g. -runs=10000000),
# FUZZ_KEEP_GOING=1 (go on after a failure: libFuzzer's -fork=1 -ignore_crashes=1, every
# failing input kept; for long runs), CARGO_FUZZ_ROOT (where cargo-fuzz is installed;
# default ~/.cache/envoy-ai-proxy/cargo-fuzz-VERSION), FUZZ_TARGET_DIR (the build; default
# ~/.cache/envoy-ai-proxy/fuzz-target, outside the clone).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

SECONDS_PER_TARGET="${1:-60}"
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(config body sse usage)
SANITIZER="${FUZZ_SANITIZER:-none}"

CARGO_FUZZ_VERSION="0.13.2"
CARGO_FUZZ_ROOT="${CARGO_FUZZ_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/envoy-ai-proxy/cargo-fuzz-$CARGO_FUZZ_VERSION}"

# cargo-fuzz, pinned, installed outside the clone on first use.
ensure_cargo_fuzz() {
    if "$CARGO_FUZZ_ROOT/bin/cargo-fuzz" --version 2>/dev/null | grep -q " $CARGO_FUZZ_VERSION\$"; then
        return
    fi
    say "installing cargo-fuzz $CARGO_FUZZ_VERSION into $CARGO_FUZZ_ROOT"
    cargo install --quiet --locked cargo-fuzz --version "=$CARGO_FUZZ_VERSION" --root "$CARGO_FUZZ_ROOT"
}

ensure_rust
ensure_cargo_fuzz
export PATH="$CARGO_FUZZ_ROOT/bin:$PATH"
# Sanitizers are -Z flags: the pinned stable toolchain accepts them only with
# RUSTC_BOOTSTRAP. Without a sanitizer, cargo-fuzz needs nothing unstable.
if [ "$SANITIZER" != none ]; then export RUSTC_BOOTSTRAP=1; fi

# The build (mostly libFuzzer's C++ and the dependencies) is kept outside the clone, so a
# fresh clone (CI's) rebuilds only the filter's crate and the targets.
FUZZ_TARGET_DIR="${FUZZ_TARGET_DIR:-${AI_PROXY_CACHE:-$HOME/.cache/envoy-ai-proxy}/fuzz-target}"
say "building the fuzz targets (sanitizer: $SANITIZER, target dir $FUZZ_TARGET_DIR)"
t=$SECONDS
cargo fuzz build --sanitizer "$SANITIZER" --target-dir "$FUZZ_TARGET_DIR"
printf '    build: %ss\n' "$((SECONDS - t))" >&2

summary=()
failed=()
for target in "${TARGETS[@]}"; do
    work="fuzz/work/$target"
    log="fuzz/work/$target.log"
    mkdir -p "$work"
    flags=(-max_total_time="$SECONDS_PER_TARGET" -max_len=4096 -timeout=10 -print_final_stats=1)
    [ -f "fuzz/$target.dict" ] && flags+=(-dict="fuzz/$target.dict")
    [ "${FUZZ_KEEP_GOING:-}" = 1 ] && flags+=(-fork=1 -ignore_crashes=1)
    say "fuzzing $target for ${SECONDS_PER_TARGET}s"
    t=$SECONDS
    status=ok
    # New inputs go to the first folder (work), never into the committed seeds.
    # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
    cargo fuzz run --sanitizer "$SANITIZER" --target-dir "$FUZZ_TARGET_DIR" "$target" "$work" "fuzz/corpus/$target" -- \
        "${flags[@]}" ${FUZZ_ARGS:-} >"$log" 2>&1 || status=FAILED
    if grep -q "panicked at" "$log"; then
        status=FAILED
        # One line per distinct failure: the assertion (cut short of the input it shows).
        grep -A1 "panicked at" "$log" | grep -v "^--$\|panicked at" | cut -c1-160 | sort | uniq -c >&2
    elif [ "$status" = FAILED ] || grep -q "ERROR: libFuzzer\|SUMMARY: " "$log"; then
        status=FAILED
        tail -n 30 "$log" >&2
    fi
    [ "$status" = ok ] || failed+=("$target")
    last="$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)"
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
    [ -n "$runs" ] || runs="$(sed -n 's/^#\([0-9]*\).*/\1/p' <<<"$last")"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)"
    [ -n "$rate" ] || rate="$((${runs:-0} / (SECONDS - t > 0 ? SECONDS - t : 1)))"
    cov="$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")"
    ft="$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")"
    corpus="$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")"
    summary+=("$(printf '%-7s %-6s %12s execs %6ss %8s exec/s  cov %6s  ft %6s  corpus %5s' \
        "$target" "$status" "${runs:-?}" "$((SECONDS - t))" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corpus:-?}")")
done

say "fuzzing summary (${SECONDS_PER_TARGET}s per target, sanitizer $SANITIZER, logs in fuzz/work/)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "failed: ${failed[*]} (inputs in fuzz/artifacts/<target>/; reproduce with" \
        "cargo fuzz run --sanitizer $SANITIZER <target> <input>)" >&2
    exit 1
fi
