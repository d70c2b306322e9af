//! The plugin configuration as users write it (serde types, APISIX field names), before validation.

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

/// Top level of the plugin configuration. Unknown fields are refused so that a typo never
/// silently turns a feature off. Every field is read `apart` (below); `default` keeps an
/// absent field `None`, as it is without `deserialize_with`. (With a default for every
/// field serde would also read a JSON array as the fields in order: `parse_with` refuses
/// anything but an object first.)
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default, deserialize_with = "apart")]
    pub provider: Option<String>,
    #[serde(default, deserialize_with = "apart")]
    pub auth: Option<RawAuth>,
    #[serde(default, deserialize_with = "apart")]
    pub options: Option<Map<String, Value>>,
    #[serde(default, deserialize_with = "apart")]
    #[serde(rename = "override")]
    pub override_: Option<RawOverride>,
    #[serde(default, deserialize_with = "apart")]
    pub cluster: Option<String>,
    #[serde(default, deserialize_with = "apart")]
    pub timeout: Option<u64>,
    #[serde(default, deserialize_with = "apart")]
    pub max_req_body_size: Option<u64>,
    #[serde(default, deserialize_with = "apart")]
    pub cluster_header: Option<String>,

    // Many-instance mode (APISIX `ai-proxy-multi`).
    #[serde(default, deserialize_with = "apart")]
    pub instances: Option<Vec<RawInstance>>,
    #[serde(default, deserialize_with = "apart")]
    pub balancer: Option<RawBalancer>,
    /// Read as any JSON, told apart by `read` (as `fallback_strategy`): serde's untagged
    /// enum fails with no position in the text, so its field could not be named.
    #[serde(default, deserialize_with = "apart", rename = "fallback_strategy")]
    pub fallback_strategy_json: Option<Value>,
    #[serde(skip)]
    pub fallback_strategy: Option<RawFallbackStrategy>,
    #[serde(default, deserialize_with = "apart")]
    pub fallback_http_statuses: Option<Vec<u16>>,
    #[serde(default, deserialize_with = "apart")]
    pub max_retries: Option<u32>,
    #[serde(default, deserialize_with = "apart")]
    pub retry_on_failure_within_ms: Option<u64>,
    #[serde(default, deserialize_with = "apart")]
    pub consumer_header: Option<String>,
    #[serde(default, deserialize_with = "apart")]
    pub require_consumer: Option<bool>,
    #[serde(default, deserialize_with = "apart")]
    pub logging: Option<RawLogging>,
    #[serde(default, deserialize_with = "apart")]
    pub rate_limiting: Option<RawRateLimiting>,
    #[serde(default, deserialize_with = "apart")]
    pub consumers: Option<Vec<RawConsumer>>,

    // APISIX connection settings. They belong to the Envoy cluster, not to the filter: they
    // are recognised only to be refused with a pointer to the Envoy equivalent.
    #[serde(default, deserialize_with = "apart")]
    pub ssl_verify: Option<Value>,
    #[serde(default, deserialize_with = "apart")]
    pub keepalive: Option<Value>,
    #[serde(default, deserialize_with = "apart")]
    pub keepalive_timeout: Option<Value>,
    #[serde(default, deserialize_with = "apart")]
    pub keepalive_pool: Option<Value>,
}

/// `auth`: headers and query parameters added to every upstream request. Values stay
/// `Value` here so that type errors are reported by our own code, which never echoes them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub header: Option<Map<String, Value>>,
    pub query: Option<Map<String, Value>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOverride {
    pub endpoint: Option<String>,
}

/// One entry of `instances`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInstance {
    pub name: String,
    pub provider: String,
    pub priority: Option<i64>,
    pub weight: Option<u32>,
    pub auth: Option<RawAuth>,
    pub options: Option<Map<String, Value>>,
    #[serde(rename = "override")]
    pub override_: Option<RawOverride>,
    pub cluster: Option<String>,
    pub checks: Option<RawChecks>,
}

/// `checks` of an instance (APISIX upstream health checks).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawChecks {
    pub active: Option<RawActive>,
    pub passive: Option<RawPassive>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawActive {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub timeout: Option<f64>,
    pub http_path: Option<String>,
    pub host: Option<String>,
    pub req_headers: Option<Vec<String>>,
    /// Probe method (default GET) and body: a provider has no health endpoint, so a probe
    /// is often a tiny chat request.
    pub http_method: Option<String>,
    pub http_req_body: Option<Value>,
    pub healthy: Option<RawHealthy>,
    pub unhealthy: Option<RawUnhealthy>,
    // APISIX fields that Envoy's cluster decides: refused with a pointer.
    pub port: Option<Value>,
    pub https_verify_certificate: Option<Value>,
    pub concurrency: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthy {
    pub interval: Option<f64>,
    pub successes: Option<u32>,
    pub http_statuses: Option<Vec<u16>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUnhealthy {
    pub interval: Option<f64>,
    pub http_failures: Option<u32>,
    pub tcp_failures: Option<u32>,
    pub timeouts: Option<u32>,
    pub http_statuses: Option<Vec<u16>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPassive {
    pub unhealthy: Option<RawUnhealthy>,
    /// Seconds an instance stays out once tripped (not an APISIX field).
    pub cooldown: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBalancer {
    pub algorithm: Option<String>,
    pub hash_on: Option<String>,
    pub key: Option<String>,
}

/// `fallback_strategy`: one string, or an array of strings.
#[derive(Debug)]
pub enum RawFallbackStrategy {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogging {
    pub summaries: Option<bool>,
    pub payloads: Option<bool>,
}

/// APISIX `ai-rate-limiting`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimiting {
    pub limit: Option<u64>,
    pub time_window: Option<u64>,
    pub instances: Option<Vec<RawInstanceLimit>>,
    pub limit_strategy: Option<String>,
    pub rejected_code: Option<u16>,
    pub rejected_msg: Option<String>,
    pub show_limit_quota_header: Option<bool>,
    /// Route level only: the shared rate limit service, and reservations.
    pub service: Option<RawService>,
    pub reserve: Option<String>,
    pub default_reserve: Option<u64>,
}

/// `rate_limiting.service`: a rate limit service holding one budget for many Envoys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub cluster: Option<String>,
    pub domain: Option<String>,
    pub protocol: Option<String>,
    pub timeout_ms: Option<u64>,
    pub failure_mode_deny: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInstanceLimit {
    pub name: String,
    pub limit: u64,
    pub time_window: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsumer {
    pub name: String,
    pub rate_limiting: RawRateLimiting,
}

/// A field's value, deserialized in a function of its own (`deserialize_with`); fields of
/// one type share it. Without it the derive code of the top-level struct is one function
/// holding every field's code, and the memory V8 needs to compile the module follows its
/// largest functions ("Round 5" in docs/performance.md). Errors and their paths are the same
/// (`configuration_errors_read_as_serde_gives_them` in the tests).
#[inline(never)]
fn apart<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    T::deserialize(d)
}
