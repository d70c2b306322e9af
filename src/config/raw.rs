//! The plugin configuration as users write it (APISIX field names), before validation: the
//! types, and each built from the JSON `shape` has read and checked.

use serde_json::{Map, Value};

/// Top level of the plugin configuration. Unknown fields are refused so that a typo never
/// silently turns a feature off. (`shape` reads every type here; test builds keep serde's
/// derive code as the reference it is held to, `src/config/read/tests.rs`.)
#[derive(Debug)]
#[cfg_attr(any(test, feature = "reference-derive"), derive(serde::Deserialize))]
#[cfg_attr(any(test, feature = "reference-derive"), serde(deny_unknown_fields))]
pub struct RawConfig {
    pub provider: Option<String>,
    pub auth: Option<RawAuth>,
    pub options: Option<Map<String, Value>>,
    #[cfg_attr(any(test, feature = "reference-derive"), serde(rename = "override"))]
    pub override_: Option<RawOverride>,
    pub cluster: Option<String>,
    pub timeout: Option<u64>,
    pub max_req_body_size: Option<u64>,
    pub cluster_header: Option<String>,

    // Many-instance mode (APISIX `ai-proxy-multi`).
    pub instances: Option<Vec<RawInstance>>,
    pub balancer: Option<RawBalancer>,
    /// Read as any JSON, told apart by `read` (as `fallback_strategy`): serde's untagged
    /// enum fails with no position in the text, so its field could not be named.
    #[cfg_attr(
        any(test, feature = "reference-derive"),
        serde(rename = "fallback_strategy")
    )]
    pub fallback_strategy_json: Option<Value>,
    #[cfg_attr(any(test, feature = "reference-derive"), serde(skip))]
    pub fallback_strategy: Option<RawFallbackStrategy>,
    pub fallback_http_statuses: Option<Vec<u16>>,
    pub max_retries: Option<u32>,
    pub retry_on_failure_within_ms: Option<u64>,
    pub consumer_header: Option<String>,
    pub require_consumer: Option<bool>,
    pub logging: Option<RawLogging>,
    pub rate_limiting: Option<RawRateLimiting>,
    pub consumers: Option<Vec<RawConsumer>>,

    // APISIX connection settings. They belong to the Envoy cluster, not to the filter: they
    // are recognised only to be refused with a pointer to the Envoy equivalent.
    pub ssl_verify: Option<Value>,
    pub keepalive: Option<Value>,
    pub keepalive_timeout: Option<Value>,
    pub keepalive_pool: Option<Value>,
}

/// `auth`: headers and query parameters added to every upstream request. Values stay
/// `Value` here so that type errors are reported by our own code, which never echoes them.
#[derive(Debug, Default)]
#[cfg_attr(any(test, feature = "reference-derive"), derive(serde::Deserialize))]
#[cfg_attr(any(test, feature = "reference-derive"), serde(deny_unknown_fields))]
pub struct RawAuth {
    pub header: Option<Map<String, Value>>,
    pub query: Option<Map<String, Value>>,
}

#[derive(Debug, Default)]
#[cfg_attr(any(test, feature = "reference-derive"), derive(serde::Deserialize))]
#[cfg_attr(any(test, feature = "reference-derive"), serde(deny_unknown_fields))]
pub struct RawOverride {
    pub endpoint: Option<String>,
}

/// One entry of `instances`.
#[derive(Debug)]
#[cfg_attr(any(test, feature = "reference-derive"), derive(serde::Deserialize))]
#[cfg_attr(any(test, feature = "reference-derive"), serde(deny_unknown_fields))]
pub struct RawInstance {
    pub name: String,
    pub provider: String,
    pub priority: Option<i64>,
    pub weight: Option<u32>,
    pub auth: Option<RawAuth>,
    pub options: Option<Map<String, Value>>,
    #[cfg_attr(any(test, feature = "reference-derive"), serde(rename = "override"))]
    pub override_: Option<RawOverride>,
    pub cluster: Option<String>,
    pub checks: Option<RawChecks>,
}

/// `checks` of an instance (APISIX upstream health checks).
#[derive(Debug)]
#[cfg_attr(any(test, feature = "reference-derive"), derive(serde::Deserialize))]
#[cfg_attr(any(test, feature = "reference-derive"), serde(deny_unknown_fields))]
pub struct RawChecks {
    pub active: Option<RawActive>,
    pub passive: Option<RawPassive>,
}

#[derive(Debug)]
#[cfg_attr(any(test, feature = "reference-derive"), derive(serde::Deserialize))]
#[cfg_attr(any(test, feature = "reference-derive"), serde(deny_unknown_fields))]
pub struct RawActive {
    #[cfg_attr(any(test, feature = "reference-derive"), serde(rename = "type"))]
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

#[derive(Debug, Default)]
#[cfg_attr(any(test, feature = "reference-derive"), derive(serde::Deserialize))]
#[cfg_attr(any(test, feature = "reference-derive"), serde(deny_unknown_fields))]
pub struct RawHealthy {
    pub interval: Option<f64>,
    pub successes: Option<u32>,
    pub http_statuses: Option<Vec<u16>>,
}

#[derive(Debug, Default)]
#[cfg_attr(any(test, feature = "reference-derive"), derive(serde::Deserialize))]
#[cfg_attr(any(test, feature = "reference-derive"), serde(deny_unknown_fields))]
pub struct RawUnhealthy {
    pub interval: Option<f64>,
    pub http_failures: Option<u32>,
    pub tcp_failures: Option<u32>,
    pub timeouts: Option<u32>,
    pub http_statuses: Option<Vec<u16>>,
}

#[derive(Debug)]
#[cfg_attr(any(test, feature = "reference-derive"), derive(serde::Deserialize))]
#[cfg_attr(any(test, feature = "reference-derive"), serde(deny_unknown_fields))]
pub struct RawPassive {
    pub unhealthy: Option<RawUnhealthy>,
    /// Seconds an instance stays out once tripped (not an APISIX field).
    pub cooldown: Option<f64>,
}

#[derive(Debug, Default)]
#[cfg_attr(any(test, feature = "reference-derive"), derive(serde::Deserialize))]
#[cfg_attr(any(test, feature = "reference-derive"), serde(deny_unknown_fields))]
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

#[derive(Debug, Default)]
#[cfg_attr(any(test, feature = "reference-derive"), derive(serde::Deserialize))]
#[cfg_attr(any(test, feature = "reference-derive"), serde(deny_unknown_fields))]
pub struct RawLogging {
    pub summaries: Option<bool>,
    pub payloads: Option<bool>,
}

/// APISIX `ai-rate-limiting`.
#[derive(Debug, Default)]
#[cfg_attr(any(test, feature = "reference-derive"), derive(serde::Deserialize))]
#[cfg_attr(any(test, feature = "reference-derive"), serde(deny_unknown_fields))]
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
#[derive(Debug, Default)]
#[cfg_attr(any(test, feature = "reference-derive"), derive(serde::Deserialize))]
#[cfg_attr(any(test, feature = "reference-derive"), serde(deny_unknown_fields))]
pub struct RawService {
    pub cluster: Option<String>,
    pub domain: Option<String>,
    pub protocol: Option<String>,
    pub timeout_ms: Option<u64>,
    pub failure_mode_deny: Option<bool>,
}

#[derive(Debug)]
#[cfg_attr(any(test, feature = "reference-derive"), derive(serde::Deserialize))]
#[cfg_attr(any(test, feature = "reference-derive"), serde(deny_unknown_fields))]
pub struct RawInstanceLimit {
    pub name: String,
    pub limit: u64,
    pub time_window: u64,
}

#[derive(Debug)]
#[cfg_attr(any(test, feature = "reference-derive"), derive(serde::Deserialize))]
#[cfg_attr(any(test, feature = "reference-derive"), serde(deny_unknown_fields))]
pub struct RawConsumer {
    pub name: String,
    pub rate_limiting: RawRateLimiting,
}

// Each type built from the JSON `shape::Read` returned for it: every field has been checked
// (its type, its range, a required one present), and an absent or `null` optional one left
// out, so what is not there is `None`.

/// `v`'s members (none if `v` is not an object, which `shape` does not let through).
fn members(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

#[inline(never)]
fn string(m: &mut Map<String, Value>, key: &str) -> Option<String> {
    match m.remove(key) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

#[inline(never)]
fn number<T: TryFrom<u64> + TryFrom<i64>>(m: &Map<String, Value>, key: &str) -> Option<T> {
    let n = m.get(key)?;
    match n.as_u64() {
        Some(u) => T::try_from(u).ok(),
        None => T::try_from(n.as_i64()?).ok(),
    }
}

#[inline(never)]
fn float(m: &Map<String, Value>, key: &str) -> Option<f64> {
    m.get(key)?.as_f64()
}

#[inline(never)]
fn boolean(m: &Map<String, Value>, key: &str) -> Option<bool> {
    m.get(key)?.as_bool()
}

#[inline(never)]
fn object(m: &mut Map<String, Value>, key: &str) -> Option<Map<String, Value>> {
    m.remove(key).map(members)
}

fn each<T>(m: &mut Map<String, Value>, key: &str, item: fn(Value) -> Option<T>) -> Option<Vec<T>> {
    match m.remove(key) {
        Some(Value::Array(a)) => Some(a.into_iter().filter_map(item).collect()),
        _ => None,
    }
}

#[inline(never)]
fn statuses(m: &mut Map<String, Value>, key: &str) -> Option<Vec<u16>> {
    each(m, key, |v| v.as_u64().and_then(|n| u16::try_from(n).ok()))
}

impl RawConfig {
    pub(super) fn from_json(v: Value) -> RawConfig {
        let mut m = members(v);
        RawConfig {
            provider: string(&mut m, "provider"),
            auth: object(&mut m, "auth").map(RawAuth::from_members),
            options: object(&mut m, "options"),
            override_: object(&mut m, "override").map(RawOverride::from_members),
            cluster: string(&mut m, "cluster"),
            timeout: number(&m, "timeout"),
            max_req_body_size: number(&m, "max_req_body_size"),
            cluster_header: string(&mut m, "cluster_header"),
            instances: each(&mut m, "instances", |v| {
                Some(RawInstance::from_members(members(v)))
            }),
            balancer: object(&mut m, "balancer").map(RawBalancer::from_members),
            fallback_strategy_json: m.remove("fallback_strategy"),
            fallback_strategy: None,
            fallback_http_statuses: statuses(&mut m, "fallback_http_statuses"),
            max_retries: number(&m, "max_retries"),
            retry_on_failure_within_ms: number(&m, "retry_on_failure_within_ms"),
            consumer_header: string(&mut m, "consumer_header"),
            require_consumer: boolean(&m, "require_consumer"),
            logging: object(&mut m, "logging").map(|l| RawLogging {
                summaries: boolean(&l, "summaries"),
                payloads: boolean(&l, "payloads"),
            }),
            rate_limiting: object(&mut m, "rate_limiting").map(RawRateLimiting::from_members),
            consumers: each(&mut m, "consumers", |v| {
                let mut c = members(v);
                Some(RawConsumer {
                    name: string(&mut c, "name").unwrap_or_default(),
                    rate_limiting: RawRateLimiting::from_members(
                        object(&mut c, "rate_limiting").unwrap_or_default(),
                    ),
                })
            }),
            ssl_verify: m.remove("ssl_verify"),
            keepalive: m.remove("keepalive"),
            keepalive_timeout: m.remove("keepalive_timeout"),
            keepalive_pool: m.remove("keepalive_pool"),
        }
    }
}

impl RawAuth {
    fn from_members(mut m: Map<String, Value>) -> RawAuth {
        RawAuth {
            header: object(&mut m, "header"),
            query: object(&mut m, "query"),
        }
    }
}

impl RawOverride {
    fn from_members(mut m: Map<String, Value>) -> RawOverride {
        RawOverride {
            endpoint: string(&mut m, "endpoint"),
        }
    }
}

impl RawInstance {
    fn from_members(mut m: Map<String, Value>) -> RawInstance {
        RawInstance {
            name: string(&mut m, "name").unwrap_or_default(),
            provider: string(&mut m, "provider").unwrap_or_default(),
            priority: number(&m, "priority"),
            weight: number(&m, "weight"),
            auth: object(&mut m, "auth").map(RawAuth::from_members),
            options: object(&mut m, "options"),
            override_: object(&mut m, "override").map(RawOverride::from_members),
            cluster: string(&mut m, "cluster"),
            checks: object(&mut m, "checks").map(|mut c| RawChecks {
                active: object(&mut c, "active").map(RawActive::from_members),
                passive: object(&mut c, "passive").map(|mut p| RawPassive {
                    unhealthy: object(&mut p, "unhealthy").map(RawUnhealthy::from_members),
                    cooldown: float(&p, "cooldown"),
                }),
            }),
        }
    }
}

impl RawActive {
    fn from_members(mut m: Map<String, Value>) -> RawActive {
        RawActive {
            kind: string(&mut m, "type"),
            timeout: float(&m, "timeout"),
            http_path: string(&mut m, "http_path"),
            host: string(&mut m, "host"),
            req_headers: each(&mut m, "req_headers", |v| match v {
                Value::String(s) => Some(s),
                _ => None,
            }),
            http_method: string(&mut m, "http_method"),
            http_req_body: m.remove("http_req_body"),
            healthy: object(&mut m, "healthy").map(|mut h| RawHealthy {
                interval: float(&h, "interval"),
                successes: number(&h, "successes"),
                http_statuses: statuses(&mut h, "http_statuses"),
            }),
            unhealthy: object(&mut m, "unhealthy").map(RawUnhealthy::from_members),
            port: m.remove("port"),
            https_verify_certificate: m.remove("https_verify_certificate"),
            concurrency: m.remove("concurrency"),
        }
    }
}

impl RawUnhealthy {
    fn from_members(mut m: Map<String, Value>) -> RawUnhealthy {
        RawUnhealthy {
            interval: float(&m, "interval"),
            http_failures: number(&m, "http_failures"),
            tcp_failures: number(&m, "tcp_failures"),
            timeouts: number(&m, "timeouts"),
            http_statuses: statuses(&mut m, "http_statuses"),
        }
    }
}

impl RawBalancer {
    fn from_members(mut m: Map<String, Value>) -> RawBalancer {
        RawBalancer {
            algorithm: string(&mut m, "algorithm"),
            hash_on: string(&mut m, "hash_on"),
            key: string(&mut m, "key"),
        }
    }
}

impl RawRateLimiting {
    fn from_members(mut m: Map<String, Value>) -> RawRateLimiting {
        RawRateLimiting {
            limit: number(&m, "limit"),
            time_window: number(&m, "time_window"),
            instances: each(&mut m, "instances", |v| {
                let mut l = members(v);
                Some(RawInstanceLimit {
                    name: string(&mut l, "name").unwrap_or_default(),
                    limit: number(&l, "limit").unwrap_or_default(),
                    time_window: number(&l, "time_window").unwrap_or_default(),
                })
            }),
            limit_strategy: string(&mut m, "limit_strategy"),
            rejected_code: number(&m, "rejected_code"),
            rejected_msg: string(&mut m, "rejected_msg"),
            show_limit_quota_header: boolean(&m, "show_limit_quota_header"),
            service: object(&mut m, "service").map(|mut s| RawService {
                cluster: string(&mut s, "cluster"),
                domain: string(&mut s, "domain"),
                protocol: string(&mut s, "protocol"),
                timeout_ms: number(&s, "timeout_ms"),
                failure_mode_deny: boolean(&s, "failure_mode_deny"),
            }),
            reserve: string(&mut m, "reserve"),
            default_reserve: number(&m, "default_reserve"),
        }
    }
}
