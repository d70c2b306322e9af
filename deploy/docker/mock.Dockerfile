# The bundled mock LLM provider (integration/src/bin/mock-llm.rs) as an image, for
# docker-compose.yaml. Build context: the repository root.
#   docker build -f deploy/docker/mock.Dockerfile -t envoy-ai-proxy-mock .
#
# mock-llm binds 127.0.0.1 only, which other containers cannot reach. Rather than change it,
# the image runs it on 127.0.0.1:8082 and socat forwards 0.0.0.0:8081 to it: other
# containers use mock:8081.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Only what the workspace needs to build (the root crate is a dependency of `integration`;
# `benches/` is listed in its Cargo.toml). Keeps target/ and .venv/ out of the build.
COPY Cargo.toml Cargo.lock rust-toolchain.toml ./
COPY src ./src
COPY benches ./benches
COPY integration ./integration
# rust-toolchain.toml also asks for the wasm32 target and rustfmt/clippy, which this native
# build does not need: use the image's own 1.95.0 toolchain as it is.
ENV RUSTUP_TOOLCHAIN=1.95.0
RUN cargo build --release --locked -p integration --bin mock-llm

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends socat \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/mock-llm /usr/local/bin/mock-llm
RUN useradd --system --no-create-home mock
USER mock
EXPOSE 8081
# The mock in the background on the loopback, socat in the foreground on every interface;
# `exec` makes socat the process that receives docker's stop signal.
CMD ["sh", "-c", "mock-llm 8082 & exec socat TCP-LISTEN:8081,fork,reuseaddr TCP:127.0.0.1:8082"]
