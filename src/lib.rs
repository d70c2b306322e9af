//! envoy-ai-proxy: a Proxy-Wasm HTTP filter for Envoy that puts one OpenAI-style API in front
//! of LLM providers.
//!
//! Everything that decides is plain Rust, tested natively; only `host` talks to Envoy.
//! - `config`: the plugin configuration, parsed and validated once.
//! - `clusters`: the Envoy clusters a configuration needs (for generated bootstraps).
//! - `provider`: provider defaults, endpoints, and request shaping.
//! - `body`: the client's JSON body, located and patched in place.
//! - `balancer`: priority groups, weighted round robin, consistent hashing.
//! - `fallback`: which failed answers go to the next instance, and the final answer.
//! - `flow`: the per-request decisions, phase by phase.
//! - `health`: active-probe and passive health state machines.
//! - `metrics`: metric names (instance and model as tags) and their registry.
//! - `ratelimit`: token limits in fixed windows, counted with compare-and-swap.
//! - `sse`: server-sent events framed across chunk boundaries.
//! - `usage`: token usage and the reported model, read from responses as they pass.
//! - `wire`: the proxy-wasm header map encoding.
//! - `error`: the errors the filter answers itself (OpenAI-style JSON).
//! - `host` (wasm32 only): the proxy-wasm contexts, the only code making host calls.

// The VM must never panic: a panic kills it and every later request on that worker fails.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented
    )
)]

pub mod balancer;
pub mod body;
pub mod clusters;
pub mod config;
pub mod error;
pub mod fallback;
pub mod flow;
pub mod health;
pub mod metrics;
pub mod provider;
pub mod ratelimit;
pub mod sse;
pub mod usage;
pub mod wire;

#[cfg(target_arch = "wasm32")]
mod host;
