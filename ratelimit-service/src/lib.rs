//! A test rate limit service for envoy-ai-proxy: a stand-in for the released Limitador server
//! (Envoy RLS v3 `ShouldRateLimit`, Kuadrant's `CheckRateLimit`/`Report`, and the newer
//! `Reserve`/`Commit`), built on the published `limitador` crate, with an envoyproxy/ratelimit
//! flavor of `ShouldRateLimit`. This file owns the module layout and the re-exports that the
//! tests and clients use.

pub mod cli;
pub mod envoy_config;
pub mod envoy_flavor;
pub mod envoy_store;
pub mod kuadrant;
pub mod limitador_flavor;
pub mod server;

/// The Envoy RLS v3 messages, client and server stubs (from `envoy-types`).
pub mod rls {
    pub use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
    pub use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
    pub use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
    pub use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
        Code, DescriptorStatus, RateLimit,
    };
    pub use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
    pub use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
        RateLimitService, RateLimitServiceServer,
    };
    pub use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
    pub use envoy_types::pb::google::protobuf::{Duration, UInt64Value};

    /// A descriptor from `(key, value)` entries, in order.
    pub fn descriptor(entries: &[(&str, &str)]) -> RateLimitDescriptor {
        RateLimitDescriptor {
            entries: entries
                .iter()
                .map(|(k, v)| Entry {
                    key: (*k).to_string(),
                    value: (*v).to_string(),
                })
                .collect(),
            ..Default::default()
        }
    }

    /// A response with `code` and nothing else (what Limitador answers outside `ShouldRateLimit`).
    pub fn bare_response(code: Code) -> RateLimitResponse {
        RateLimitResponse {
            overall_code: code.into(),
            ..Default::default()
        }
    }
}
