//! The validated, compiled plugin configuration: parsed once in `on_configure`, shared
//! read-only by every request. No host calls here.

mod checks;
mod instance;
mod policy;
mod raw;
mod read;
mod secrets;
mod shape;

use std::fmt;

use crate::balancer::key::KeySource;
use crate::balancer::{Algorithm, Balancer, Slot};
use crate::fallback::Policy;
use crate::health::{Active, Passive};
use crate::provider::{Provider, Target};
use crate::ratelimit::{Limit, Strategy};

pub use raw::RawConfig;
pub use secrets::{references, Secrets};

use instance::{
    check_token, compile_instance, compile_instances, header_name_field, InstanceParts,
};
use policy::{compile_balancer, compile_fallback};

/// Default per-attempt upstream timeout (APISIX `timeout`), in milliseconds.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// The longest `timeout`: 24 hours (callout timeouts are 32-bit milliseconds in the ABI).
pub const MAX_TIMEOUT_MS: u64 = 86_400_000;
/// Default limit on the client's request body.
/// (16 MiB: the shipped bootstraps' Envoy buffer limit is twice that, so an oversized body,
/// chunked or not, gets the filter's JSON 413 rather than Envoy's plain-text one.)
pub const DEFAULT_MAX_REQ_BODY_SIZE: usize = 16 * 1024 * 1024;
/// Default request header that carries the chosen cluster to the route.
pub const DEFAULT_CLUSTER_HEADER: &str = "x-ai-proxy-cluster";
/// Default request header that carries the consumer name (set by an auth filter).
pub const DEFAULT_CONSUMER_HEADER: &str = "x-consumer";

/// Headers that the filter or Envoy own; configuring them as auth headers is refused.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "upgrade",
    "proxy-connection",
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-rq-per-try-timeout-ms",
];

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// One entry in single-provider mode.
    pub instances: Vec<Instance>,
    pub balancer: Balancer,
    /// Where the consistent-hashing key comes from (`chash` only).
    pub hash_key: Option<KeySource>,
    pub fallback: Policy,
    pub timeout_ms: u64,
    pub max_req_body_size: usize,
    /// Lower-cased name of the routing header.
    pub cluster_header: String,
    /// Lower-cased name of the header that carries the consumer name.
    pub consumer_header: String,
    /// Refuse requests without a consumer (an authenticating filter must have named one).
    pub require_consumer: bool,
    pub logging: Logging,
    pub rate_limits: RateLimits,
    /// Top-level body keys the filter reads or sets: `model`, `stream`, `stream_options`
    /// and every configured option (a client key differing only in case is refused).
    pub owned_keys: Vec<String>,
}

/// The token limits: the route's, for every request, and each consumer's, for its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimits {
    pub route: Option<LimitSet>,
    pub consumers: Vec<(String, LimitSet)>,
    /// `rate_limiting.service`: the counters live there instead of in shared data.
    pub service: Option<Service>,
    /// `rate_limiting.reserve: "max_tokens"`: admit only when an upper-bound estimate fits.
    pub reserve: bool,
    /// Completion tokens reserved for a request that sets no `max_tokens`.
    pub default_reserve: u64,
}

/// The wire protocol of a rate limit service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RlsProtocol {
    /// Kuadrant's `CheckRateLimit` / `Report` (Limitador), `Reserve` / `Commit` to reserve.
    Limitador,
    /// Envoy's RLS v3 `ShouldRateLimit` (any rate limit service).
    Envoy,
}

/// `rate_limiting.service`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub cluster: String,
    pub domain: String,
    pub protocol: RlsProtocol,
    pub timeout_ms: u64,
    pub failure_mode_deny: bool,
}

impl RateLimits {
    pub fn any(&self) -> bool {
        self.route.is_some() || !self.consumers.is_empty()
    }

    pub fn consumer(&self, name: &str) -> Option<&LimitSet> {
        self.consumers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s)
    }
}

/// One `rate_limiting` block, compiled against the instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitSet {
    /// Indexed like `Config::instances`.
    pub per_instance: Vec<Option<Limit>>,
    pub strategy: Strategy,
    pub rejected_code: u16,
    pub rejected_msg: Option<String>,
    pub show_headers: bool,
}

/// `logging`: what the filter writes to Envoy's log per request (at info level).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Logging {
    /// One JSON line: model, instance, status, duration, time to first token, tokens.
    pub summaries: bool,
    /// The request's messages (or input) and the response text.
    pub payloads: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub name: String,
    /// The name as a stat-name label (`metrics::label`), and the names of its quota headers
    /// (`X-AI-RateLimit-{Limit,Remaining,Reset}-<name>`): made once, not per request.
    pub label: String,
    pub quota_header_names: [String; 3],
    pub provider: Provider,
    /// Higher first (many-instance mode; 0 otherwise).
    pub priority: i64,
    pub weight: u32,
    /// Envoy cluster the request is routed to.
    pub cluster: String,
    /// Where requests go: `:authority` and the full `:path` (query included) per API kind.
    pub target: Target,
    /// Auth headers with lower-cased names, in configuration order.
    pub auth_headers: Vec<(String, String)>,
    /// Whether any auth (header or query) is configured: then the gateway owns the upstream
    /// credentials and the client's own `authorization` is not forwarded.
    pub has_auth: bool,
    /// `options` as (key, compact JSON text of the value), in configuration order.
    pub options: Vec<(String, String)>,
    pub active_check: Option<Active>,
    pub passive_check: Option<Passive>,
}

/// Why a configuration was refused. `path` names the field (`auth.header.Authorization`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    // Made once per pair of argument types, not at each of the configuration's hundred-odd
    // error sites ("Round 14" in docs/performance.md).
    #[inline(never)]
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() || self.path == "." {
            write!(f, "{}", self.message)
        } else {
            write!(f, "field `{}`: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Parses and validates the plugin configuration (JSON bytes), leaving `$env://`
/// references as written (for tools; the filter resolves them, see [`parse_with`]).
pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
    parse_with(bytes, Secrets::Keep)
}

/// Test-only (feature `reference-derive`): `text` read as `parse` reads it, and by serde's
/// derive code, each as what it read (`Debug`) or its error. The `config` fuzz target
/// holds the two equal.
#[cfg(feature = "reference-derive")]
pub fn read_twice(text: &str) -> [Result<String, ConfigError>; 2] {
    [read::read(text), read::read_by_derive(text)].map(|r| r.map(|raw| format!("{raw:?}")))
}

/// Parses and validates the plugin configuration, resolving `$env://` references.
pub fn parse_with(bytes: &[u8], secrets: Secrets<'_>) -> Result<Config, ConfigError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| ConfigError::new("", "the configuration is not valid UTF-8"))?;
    if text.trim().is_empty() {
        return Err(ConfigError::new(
            "",
            "the configuration is empty: at least `provider` is required",
        ));
    }
    // Only an object: serde would read an array as the fields in order (`RawConfig`).
    if text.trim_start().starts_with('[') {
        return Err(ConfigError::new(
            "",
            "the configuration must be a JSON object (the fields by name), not an array",
        ));
    }
    let mut raw = read::read(text)?;
    secrets::resolve_all(&mut raw, secrets)?;
    compile(&raw)
}

#[inline(never)] // compiled on its own: see "Round 5" in docs/performance.md
/// The configuration as read, checked and compiled. Read by reference, so that no way out
/// drops what it read (each such drop is code: "Round 14" in docs/performance.md).
fn compile(raw: &RawConfig) -> Result<Config, ConfigError> {
    for (field, present, envoy) in [
        (
            "ssl_verify",
            raw.ssl_verify.is_some(),
            "the cluster's `transport_socket` (UpstreamTlsContext with a `validation_context`)",
        ),
        (
            "keepalive",
            raw.keepalive.is_some(),
            "the cluster's connection pool (`common_http_protocol_options`)",
        ),
        (
            "keepalive_timeout",
            raw.keepalive_timeout.is_some(),
            "the cluster's `common_http_protocol_options.idle_timeout`",
        ),
        (
            "keepalive_pool",
            raw.keepalive_pool.is_some(),
            "the cluster's `circuit_breakers` / `max_requests_per_connection`",
        ),
    ] {
        if present {
            return Err(ConfigError::new(
                field,
                format!("is an Envoy cluster setting, not a filter setting: configure {envoy} (see docs/config.md)"),
            ));
        }
    }

    let timeout_ms = raw.timeout.unwrap_or(DEFAULT_TIMEOUT_MS);
    if !(1..=MAX_TIMEOUT_MS).contains(&timeout_ms) {
        return Err(ConfigError::new(
            "timeout",
            format!("must be between 1 and {MAX_TIMEOUT_MS} (milliseconds: 24 hours)"),
        ));
    }
    let max_req_body_size = match raw.max_req_body_size {
        None => DEFAULT_MAX_REQ_BODY_SIZE,
        Some(0) => {
            return Err(ConfigError::new(
                "max_req_body_size",
                "must be at least 1 (bytes)",
            ))
        }
        Some(n) => usize::try_from(n).map_err(|_| {
            ConfigError::new("max_req_body_size", "is larger than this platform supports")
        })?,
    };
    let cluster_header = header_name_field(
        "cluster_header",
        raw.cluster_header.as_deref(),
        DEFAULT_CLUSTER_HEADER,
    )?;
    let consumer_header = header_name_field(
        "consumer_header",
        raw.consumer_header.as_deref(),
        DEFAULT_CONSUMER_HEADER,
    )?;
    if consumer_header == cluster_header {
        return Err(ConfigError::new(
            "consumer_header",
            "must differ from `cluster_header`",
        ));
    }

    let (instances, balancer, hash_key, fallback) = match &raw.instances {
        Some(list) => {
            for (field, present) in [
                ("provider", raw.provider.is_some()),
                ("auth", raw.auth.is_some()),
                ("options", raw.options.is_some()),
                ("override", raw.override_.is_some()),
                ("cluster", raw.cluster.is_some()),
            ] {
                if present {
                    return Err(ConfigError::new(
                        field,
                        "belongs inside each instance when `instances` is used",
                    ));
                }
            }
            let instances = compile_instances(list, &cluster_header)?;
            let (algorithm, hash_key) = compile_balancer(raw.balancer.as_ref())?;
            let slots: Vec<Slot> = instances
                .iter()
                .map(|i| Slot {
                    name: &i.name,
                    priority: i.priority,
                    weight: i.weight,
                })
                .collect();
            let balancer = Balancer::new(algorithm, &slots);
            let fallback = compile_fallback(
                raw.fallback_strategy.as_ref(),
                raw.fallback_http_statuses.as_deref(),
                raw.max_retries,
                raw.retry_on_failure_within_ms,
                instances.len(),
            )?;
            (instances, balancer, hash_key, fallback)
        }
        None => {
            for (field, present) in [
                ("balancer", raw.balancer.is_some()),
                ("fallback_strategy", raw.fallback_strategy.is_some()),
                (
                    "fallback_http_statuses",
                    raw.fallback_http_statuses.is_some(),
                ),
                ("max_retries", raw.max_retries.is_some()),
                (
                    "retry_on_failure_within_ms",
                    raw.retry_on_failure_within_ms.is_some(),
                ),
            ] {
                if present {
                    return Err(ConfigError::new(
                        field,
                        "needs `instances`: with a single provider there is nothing to balance or fall back to",
                    ));
                }
            }
            let provider_name = raw.provider.as_deref().ok_or_else(|| {
                ConfigError::new(
                    "provider",
                    "is required (openai, deepseek, openai-compatible), or give `instances`",
                )
            })?;
            let instance = compile_instance(
                "",
                InstanceParts {
                    name: provider_name,
                    provider: provider_name,
                    priority: 0,
                    weight: 1,
                    auth: raw.auth.as_ref(),
                    options: raw.options.as_ref(),
                    endpoint: raw.override_.as_ref().and_then(|o| o.endpoint.as_deref()),
                    cluster: raw.cluster.as_deref(),
                    checks: None,
                },
                &cluster_header,
            )?;
            let balancer = Balancer::new(
                Algorithm::RoundRobin,
                &[Slot {
                    name: &instance.name,
                    priority: 0,
                    weight: 1,
                }],
            );
            (vec![instance], balancer, None, Policy::default())
        }
    };

    let (route_limits, service, reserve) = match &raw.rate_limiting {
        Some(r) => policy::compile_route_limits(r, &instances)?,
        None => (None, None, None),
    };
    let mut consumers: Vec<(String, LimitSet)> = Vec::new();
    for (i, c) in raw.consumers.iter().flatten().enumerate() {
        let at = format!("consumers[{i}]");
        check_token(&c.name).map_err(|m| ConfigError::new(format!("{at}.name"), m))?;
        if consumers.iter().any(|(n, _)| *n == c.name) {
            return Err(ConfigError::new(
                format!("{at}.name"),
                format!("`{}` is listed twice", c.name),
            ));
        }
        let set = policy::compile_consumer_limits(
            &format!("{at}.rate_limiting"),
            &c.rate_limiting,
            &instances,
            route_limits.as_ref(),
        )?;
        consumers.push((c.name.clone(), set));
    }
    if let Some(s) = &service {
        if instances.iter().any(|i| i.cluster == s.cluster) {
            return Err(ConfigError::new(
                "rate_limiting.service.cluster",
                "is an instance's cluster: the rate limit service needs its own (HTTP/2)",
            ));
        }
    }
    let (reserve, default_reserve) = reserve.unwrap_or((false, policy::DEFAULT_RESERVE));
    if (service.is_some() || reserve) && route_limits.is_none() && consumers.is_empty() {
        return Err(ConfigError::new(
            "rate_limiting",
            "gives no limit: set `limit` and `time_window`, `instances`, or consumers' limits",
        ));
    }
    let rate_limits = RateLimits {
        route: route_limits,
        consumers,
        service,
        reserve,
        default_reserve,
    };

    let mut owned_keys: Vec<String> = ["model", "stream", "stream_options"]
        .iter()
        .map(|k| k.to_string())
        .collect();
    for (key, _) in instances.iter().flat_map(|i| &i.options) {
        if !owned_keys.contains(key) {
            owned_keys.push(key.clone());
        }
    }
    Ok(Config {
        owned_keys,
        instances,
        balancer,
        hash_key,
        fallback,
        timeout_ms,
        max_req_body_size,
        cluster_header,
        consumer_header,
        require_consumer: raw.require_consumer.unwrap_or(false),
        logging: raw
            .logging
            .as_ref()
            .map(|l| Logging {
                summaries: l.summaries.unwrap_or(false),
                payloads: l.payloads.unwrap_or(false),
            })
            .unwrap_or_default(),
        rate_limits,
    })
}

#[cfg(test)]
mod tests;
