//! envoy-ai-proxy: a Proxy-Wasm HTTP filter for Envoy that puts OpenAI-style APIs in front
//! of LLM providers.
//!
//! Everything that decides is plain Rust, tested natively; only `host` talks to Envoy.
//!
//! The life of a request (`exchange`): Envoy's callbacks arrive as `effect::Input`s and the
//! exchange answers with `effect::Effect`s that `host` applies one by one through
//! `batch::drive` (a callback's request-header edits become one write of the map).
//! 1. Request headers: drop any client routing header, check method, content type and size
//!    (`exchange::request`), hold the headers.
//! 2. Body: parse once (`body`, located by `scan`), tell the API apart (`protocol`), read the quotas
//!    (`quota`) and health (`health::shared`), pick an instance (`exchange::pick`,
//!    `balancer`), shape the request for it (`protocol::openai`) as edits, send it on.
//! 3. Response headers: classify the outcome once (`outcome`); a retriable failure starts
//!    the next attempt as a callout (`exchange::response`, `fallback`), Envoy's own
//!    plain-text replies become JSON errors (`error`).
//! 4. Response body: read usage and the model as it passes (`usage`, `sse`; the answers'
//!    fields read by `answer`), dropping the usage event a client did not ask for.
//! 5. End: charge the tokens to the instance that answered (`quota`), set access-log values
//!    and metrics (`exchange::account`, `metrics`).
//!
//! Around it: `config` (parsed and validated once), `root` (configure, tick, probes from
//! `health::prober`), `store` (shared data with compare-and-swap), `provider` (presets as
//! data), `ratelimit` (windows and quotas), `clusters` (the Envoy clusters a configuration
//! needs, for generated bootstraps), `wire` (the proxy-wasm header map encoding), `contexts`
//! (which context a callback or a callout's answer goes to).

// The lints that keep the VM from panicking are in Cargo.toml; test code may panic.
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

// Benchmark-only cost switches, applied by the host layer (wasm32); tested natively.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub(crate) mod ablate;
pub mod answer;
pub mod balancer;
// Used by the host layer only (wasm32); tested natively.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub(crate) mod batch;
pub mod body;
pub mod clusters;
pub mod config;
// Used by the host layer only (wasm32); tested natively.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub(crate) mod contexts;
pub mod effect;
pub(crate) mod error;
pub mod exchange;
pub(crate) mod fallback;
pub mod headers;
pub(crate) mod health;
pub(crate) mod json;
pub mod metrics;
pub(crate) mod outcome;
pub mod protocol;
pub(crate) mod provider;
pub mod quota;
pub mod ratelimit;
pub mod root;
pub(crate) mod scan;
pub(crate) mod sort;
pub mod sse;
pub mod store;
pub(crate) mod text;
pub mod usage;
// Used by the host layer only (wasm32); tested natively.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub(crate) mod wire;

#[cfg(test)]
mod testing;

#[cfg(target_arch = "wasm32")]
mod host;
