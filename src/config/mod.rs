//! The validated, compiled plugin configuration: parsed once in `on_configure`, shared
//! read-only by every request. No host calls here.

mod raw;

use std::fmt;

use serde_json::{Map, Value};

use crate::balancer::key::{self, KeySource};
use crate::balancer::{Algorithm, Balancer, Slot};
use crate::fallback::Policy;
use crate::health::{Active, Passive};
use crate::provider::{self, Endpoint, Provider, Target};
use crate::ratelimit::{Limit, Strategy};

pub use raw::RawConfig;

/// Default per-attempt upstream timeout (APISIX `timeout`), in milliseconds.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// Default limit on the client's request body.
pub const DEFAULT_MAX_REQ_BODY_SIZE: usize = 64 * 1024 * 1024;
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
    pub logging: Logging,
    pub rate_limits: RateLimits,
}

/// The token limits: the route's, for every request, and each consumer's, for its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimits {
    pub route: Option<LimitSet>,
    pub consumers: Vec<(String, LimitSet)>,
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

/// Parses and validates the plugin configuration (JSON bytes).
pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| ConfigError::new("", "the configuration is not valid UTF-8"))?;
    if text.trim().is_empty() {
        return Err(ConfigError::new(
            "",
            "the configuration is empty: at least `provider` is required",
        ));
    }
    let de = &mut serde_json::Deserializer::from_str(text);
    let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let mut message = redact(&e.inner().to_string());
        // The position helps with a syntax error; once the field is named it is noise.
        if e.inner().is_data() && path != "." {
            if let Some(at) = message.rfind(" at line ") {
                message.truncate(at);
            }
        }
        ConfigError::new(path, message)
    })?;
    compile(raw)
}

fn compile(raw: RawConfig) -> Result<Config, ConfigError> {
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
    if timeout_ms == 0 {
        return Err(ConfigError::new(
            "timeout",
            "must be at least 1 (milliseconds)",
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
    let cluster_header =
        header_name_field("cluster_header", raw.cluster_header, DEFAULT_CLUSTER_HEADER)?;
    let consumer_header = header_name_field(
        "consumer_header",
        raw.consumer_header,
        DEFAULT_CONSUMER_HEADER,
    )?;
    if consumer_header == cluster_header {
        return Err(ConfigError::new(
            "consumer_header",
            "must differ from `cluster_header`",
        ));
    }

    let (instances, balancer, hash_key, fallback) = match raw.instances {
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
            let (algorithm, hash_key) = compile_balancer(raw.balancer)?;
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
                raw.fallback_strategy,
                raw.fallback_http_statuses,
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
            let provider_name = raw.provider.ok_or_else(|| {
                ConfigError::new(
                    "provider",
                    "is required (openai, deepseek, openai-compatible), or give `instances`",
                )
            })?;
            let instance = compile_instance(
                "",
                InstanceParts {
                    name: provider_name.clone(),
                    provider: provider_name,
                    priority: 0,
                    weight: 1,
                    auth: raw.auth,
                    options: raw.options,
                    endpoint: raw.override_.and_then(|o| o.endpoint),
                    cluster: raw.cluster,
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

    let route_limits = match raw.rate_limiting {
        Some(r) => Some(compile_limits("rate_limiting", r, &instances, None)?),
        None => None,
    };
    let mut consumers: Vec<(String, LimitSet)> = Vec::new();
    for (i, c) in raw.consumers.unwrap_or_default().into_iter().enumerate() {
        let at = format!("consumers[{i}]");
        check_token(&c.name).map_err(|m| ConfigError::new(format!("{at}.name"), m))?;
        if consumers.iter().any(|(n, _)| *n == c.name) {
            return Err(ConfigError::new(
                format!("{at}.name"),
                format!("`{}` is listed twice", c.name),
            ));
        }
        let set = compile_limits(
            &format!("{at}.rate_limiting"),
            c.rate_limiting,
            &instances,
            route_limits.as_ref(),
        )?;
        consumers.push((c.name, set));
    }
    let rate_limits = RateLimits {
        route: route_limits,
        consumers,
    };

    Ok(Config {
        instances,
        balancer,
        hash_key,
        fallback,
        timeout_ms,
        max_req_body_size,
        cluster_header,
        consumer_header,
        logging: raw
            .logging
            .map(|l| Logging {
                summaries: l.summaries.unwrap_or(false),
                payloads: l.payloads.unwrap_or(false),
            })
            .unwrap_or_default(),
        rate_limits,
    })
}

/// A `rate_limiting` block at `at`. `inherit`: the route's block, whose rejection settings
/// a consumer's block takes when it gives none.
fn compile_limits(
    at: &str,
    raw: raw::RawRateLimiting,
    instances: &[Instance],
    inherit: Option<&LimitSet>,
) -> Result<LimitSet, ConfigError> {
    let field = |f: &str| format!("{at}.{f}");
    let every = match (raw.limit, raw.time_window) {
        (Some(limit), Some(window)) => Some(limit_of(
            &field("limit"),
            limit,
            &field("time_window"),
            window,
        )?),
        (None, None) => None,
        (Some(_), None) => {
            return Err(ConfigError::new(
                field("time_window"),
                "is required with `limit`",
            ))
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(
                field("limit"),
                "is required with `time_window`",
            ))
        }
    };
    let mut per_instance = vec![every; instances.len()];
    for (i, entry) in raw.instances.unwrap_or_default().into_iter().enumerate() {
        let f = |x: &str| format!("{at}.instances[{i}].{x}");
        let index = instances
            .iter()
            .position(|inst| inst.name == entry.name)
            .ok_or_else(|| {
                ConfigError::new(f("name"), format!("no instance is named `{}`", entry.name))
            })?;
        let limit = limit_of(
            &f("limit"),
            entry.limit,
            &f("time_window"),
            entry.time_window,
        )?;
        if let Some(slot) = per_instance.get_mut(index) {
            *slot = Some(limit);
        }
    }
    if per_instance.iter().all(Option::is_none) {
        return Err(ConfigError::new(
            at,
            "gives no limit: set `limit` and `time_window`, or `instances`",
        ));
    }
    let strategy = match raw.limit_strategy.as_deref() {
        None => inherit.map_or(Strategy::default(), |s| s.strategy),
        Some(s) => Strategy::parse(s).ok_or_else(|| {
            ConfigError::new(
                field("limit_strategy"),
                format!("unknown strategy `{s}`; supported: total_tokens, prompt_tokens, completion_tokens"),
            )
        })?,
    };
    let rejected_code = raw
        .rejected_code
        .or(inherit.map(|s| s.rejected_code))
        .unwrap_or(429);
    if !(200..=599).contains(&rejected_code) {
        return Err(ConfigError::new(
            field("rejected_code"),
            "must be an HTTP status (200-599)",
        ));
    }
    Ok(LimitSet {
        per_instance,
        strategy,
        rejected_code,
        rejected_msg: raw
            .rejected_msg
            .or_else(|| inherit.and_then(|s| s.rejected_msg.clone())),
        show_headers: raw
            .show_limit_quota_header
            .or(inherit.map(|s| s.show_headers))
            .unwrap_or(true),
    })
}

fn limit_of(
    limit_at: &str,
    limit: u64,
    window_at: &str,
    window: u64,
) -> Result<Limit, ConfigError> {
    if limit == 0 {
        return Err(ConfigError::new(limit_at, "must be at least 1 (tokens)"));
    }
    if window == 0 {
        return Err(ConfigError::new(window_at, "must be at least 1 (seconds)"));
    }
    Ok(Limit {
        limit,
        window_secs: window,
    })
}

/// A configurable header name: a token, not one Envoy or the filter already use.
fn header_name_field(
    field: &str,
    value: Option<String>,
    default: &str,
) -> Result<String, ConfigError> {
    let Some(h) = value else {
        return Ok(default.to_string());
    };
    check_token(&h).map_err(|m| ConfigError::new(field, m))?;
    let lower = h.to_ascii_lowercase();
    if RESERVED_HEADERS.contains(&lower.as_str()) || lower == "authorization" {
        return Err(ConfigError::new(
            field,
            "names a header that Envoy or the filter already use",
        ));
    }
    Ok(lower)
}

fn compile_instances(
    list: Vec<raw::RawInstance>,
    cluster_header: &str,
) -> Result<Vec<Instance>, ConfigError> {
    if list.is_empty() {
        return Err(ConfigError::new(
            "instances",
            "must list at least one instance",
        ));
    }
    let mut out: Vec<Instance> = Vec::with_capacity(list.len());
    for (i, raw) in list.into_iter().enumerate() {
        let prefix = format!("instances[{i}].");
        let name_ok = (1..=100).contains(&raw.name.len())
            && raw
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !name_ok {
            return Err(ConfigError::new(
                format!("{prefix}name"),
                "must be 1-100 characters of [a-zA-Z0-9._-] (it names headers and metrics)",
            ));
        }
        if out.iter().any(|o| o.name == raw.name) {
            return Err(ConfigError::new(
                format!("{prefix}name"),
                format!(
                    "`{}` is used by another instance; names must be unique",
                    raw.name
                ),
            ));
        }
        out.push(compile_instance(
            &prefix,
            InstanceParts {
                name: raw.name,
                provider: raw.provider,
                priority: raw.priority.unwrap_or(0),
                weight: raw.weight.unwrap_or(0),
                auth: raw.auth,
                options: raw.options,
                endpoint: raw.override_.and_then(|o| o.endpoint),
                cluster: raw.cluster,
                checks: raw.checks,
            },
            cluster_header,
        )?);
    }
    Ok(out)
}

fn compile_balancer(
    raw: Option<raw::RawBalancer>,
) -> Result<(Algorithm, Option<KeySource>), ConfigError> {
    let raw = raw.unwrap_or_default();
    match raw.algorithm.as_deref().unwrap_or("roundrobin") {
        "roundrobin" => {
            if raw.hash_on.is_some() || raw.key.is_some() {
                let field = if raw.hash_on.is_some() {
                    "balancer.hash_on"
                } else {
                    "balancer.key"
                };
                return Err(ConfigError::new(field, "applies only to algorithm `chash`"));
            }
            Ok((Algorithm::RoundRobin, None))
        }
        "chash" => {
            let hash_on = raw.hash_on.as_deref().unwrap_or("vars");
            let source = key::compile(hash_on, raw.key.as_deref().unwrap_or(""))
                .map_err(|m| ConfigError::new("balancer", m))?;
            Ok((Algorithm::ConsistentHash, Some(source)))
        }
        other => Err(ConfigError::new(
            "balancer.algorithm",
            format!("unknown algorithm `{other}`; supported: roundrobin, chash"),
        )),
    }
}

fn compile_fallback(
    strategy: Option<raw::RawFallbackStrategy>,
    statuses: Option<Vec<u16>>,
    max_retries: Option<u32>,
    within_ms: Option<u64>,
    instances: usize,
) -> Result<Policy, ConfigError> {
    let mut policy = Policy::default();
    match strategy {
        None => {}
        Some(raw::RawFallbackStrategy::One(s)) => match s.as_str() {
            "instance_health_and_rate_limiting" => policy.rate_limiting = true,
            "http_429" => policy.on_429 = true,
            "http_5xx" => policy.on_5xx = true,
            other => {
                return Err(ConfigError::new(
                    "fallback_strategy",
                    format!(
                        "unknown strategy `{other}`; supported: instance_health_and_rate_limiting, http_429, http_5xx, or an array of rate_limiting, http_429, http_5xx"
                    ),
                ))
            }
        },
        Some(raw::RawFallbackStrategy::Many(list)) => {
            for s in list {
                match s.as_str() {
                    "rate_limiting" | "instance_health_and_rate_limiting" => {
                        policy.rate_limiting = true
                    }
                    "http_429" => policy.on_429 = true,
                    "http_5xx" => policy.on_5xx = true,
                    other => {
                        return Err(ConfigError::new(
                            "fallback_strategy",
                            format!(
                                "unknown strategy `{other}` in the array; supported: rate_limiting, instance_health_and_rate_limiting, http_429, http_5xx"
                            ),
                        ))
                    }
                }
            }
        }
    }
    policy.statuses = statuses.unwrap_or_default();
    if let Some(bad) = policy.statuses.iter().find(|s| !(400..=599).contains(*s)) {
        return Err(ConfigError::new(
            "fallback_http_statuses",
            format!("{bad} is not an error status (400-599)"),
        ));
    }
    // By default every other instance may be tried once.
    let others = u32::try_from(instances.saturating_sub(1)).unwrap_or(u32::MAX);
    policy.max_retries = max_retries.unwrap_or(others);
    if within_ms == Some(0) {
        return Err(ConfigError::new(
            "retry_on_failure_within_ms",
            "must be at least 1 (milliseconds)",
        ));
    }
    policy.within_ms = within_ms;
    Ok(policy)
}

/// The per-provider fields shared by the single-provider and the many-instance shapes.
struct InstanceParts {
    name: String,
    provider: String,
    priority: i64,
    weight: u32,
    auth: Option<raw::RawAuth>,
    options: Option<Map<String, Value>>,
    endpoint: Option<String>,
    cluster: Option<String>,
    checks: Option<raw::RawChecks>,
}

/// `prefix` is the path of the object the fields sit in (`""` at top level,
/// `instances[2].` for an instance), so errors name the field as the user wrote it.
fn compile_instance(
    prefix: &str,
    parts: InstanceParts,
    cluster_header: &str,
) -> Result<Instance, ConfigError> {
    let at = |field: &str| format!("{prefix}{field}");
    let provider = Provider::parse(&parts.provider).ok_or_else(|| {
        ConfigError::new(
            at("provider"),
            format!(
                "unknown provider `{}`; supported: {}",
                parts.provider,
                Provider::ALL_NAMES.join(", ")
            ),
        )
    })?;

    let endpoint = match parts.endpoint {
        None => None,
        Some(url) => {
            Some(Endpoint::parse(&url).map_err(|m| ConfigError::new(at("override.endpoint"), m))?)
        }
    };
    if provider.needs_endpoint() && endpoint.is_none() {
        return Err(ConfigError::new(
            at("override.endpoint"),
            format!("is required for provider `{}`", provider.name()),
        ));
    }

    let auth = parts.auth.unwrap_or_default();
    let mut auth_headers = Vec::new();
    for (name, value) in auth.header.unwrap_or_default() {
        let path = at(&format!("auth.header.{name}"));
        check_token(&name).map_err(|m| ConfigError::new(path.clone(), m))?;
        let lower = name.to_ascii_lowercase();
        if RESERVED_HEADERS.contains(&lower.as_str()) || lower == cluster_header {
            return Err(ConfigError::new(
                path,
                "names a header that Envoy or the filter own; it cannot carry auth",
            ));
        }
        let value = auth_string(value, &path)?;
        if !valid_header_value(&value) {
            return Err(ConfigError::new(
                path,
                "contains characters not allowed in a header value (control characters)",
            ));
        }
        if auth_headers.iter().any(|(n, _)| *n == lower) {
            return Err(ConfigError::new(
                path,
                "is given twice (header names are case-insensitive)",
            ));
        }
        auth_headers.push((lower, value));
    }
    let mut auth_query = Vec::new();
    for (name, value) in auth.query.unwrap_or_default() {
        let path = at(&format!("auth.query.{name}"));
        check_token(&name).map_err(|m| ConfigError::new(path.clone(), m))?;
        let value = auth_string(value, &path)?;
        auth_query.push((name, value));
    }
    let has_auth = !auth_headers.is_empty() || !auth_query.is_empty();

    let options = parts
        .options
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect();

    let target = provider::target(provider, endpoint.as_ref(), &auth_query);

    let cluster = parts.cluster.unwrap_or_else(|| parts.name.clone());
    if cluster.is_empty() || !valid_header_value(&cluster) || cluster.contains(' ') {
        return Err(ConfigError::new(
            at("cluster"),
            "must be a non-empty Envoy cluster name without spaces or control characters",
        ));
    }

    let (active_check, passive_check) = match parts.checks {
        None => (None, None),
        Some(c) => {
            let active = match c.active {
                Some(a) => Some(compile_active(&at("checks.active"), a, &auth_headers)?),
                None => None,
            };
            let passive = match c.passive {
                Some(p) => Some(compile_passive(&at("checks.passive"), p)?),
                None => None,
            };
            (active, passive)
        }
    };

    Ok(Instance {
        active_check,
        passive_check,
        name: parts.name,
        provider,
        priority: parts.priority,
        weight: parts.weight,
        cluster,
        target,
        auth_headers,
        has_auth,
        options,
    })
}

/// Seconds (fractions allowed) as milliseconds; `zero_ok` allows 0.
fn secs_ms(field: &str, secs: f64, zero_ok: bool) -> Result<u64, ConfigError> {
    if !secs.is_finite() || secs < 0.0 || (secs == 0.0 && !zero_ok) || secs > 86_400.0 {
        return Err(ConfigError::new(
            field,
            if zero_ok {
                "must be between 0 and 86400 seconds"
            } else {
                "must be more than 0 and at most 86400 seconds"
            },
        ));
    }
    Ok((secs * 1000.0).round() as u64)
}

fn at_least_one(field: &str, n: u32) -> Result<u32, ConfigError> {
    if n == 0 {
        return Err(ConfigError::new(field, "must be at least 1"));
    }
    Ok(n)
}

fn statuses(field: &str, list: Vec<u16>) -> Result<Vec<u16>, ConfigError> {
    if let Some(bad) = list.iter().find(|s| !(100..=599).contains(*s)) {
        return Err(ConfigError::new(
            field,
            format!("{bad} is not an HTTP status"),
        ));
    }
    Ok(list)
}

/// APISIX's defaults (lua-resty-healthcheck).
const DEFAULT_HEALTHY_STATUSES: &[u16] = &[200, 302];
const DEFAULT_UNHEALTHY_STATUSES: &[u16] = &[429, 404, 500, 501, 502, 503, 504, 505];
const DEFAULT_PASSIVE_STATUSES: &[u16] = &[500, 502, 503, 504];

fn compile_active(
    at: &str,
    raw: raw::RawActive,
    auth_headers: &[(String, String)],
) -> Result<Active, ConfigError> {
    let f = |x: &str| format!("{at}.{x}");
    for (field, present, why) in [
        (
            "port",
            raw.port.is_some(),
            "probes go to the instance's Envoy cluster, whose endpoints give the port",
        ),
        (
            "https_verify_certificate",
            raw.https_verify_certificate.is_some(),
            "certificate checks belong to the cluster's TLS settings (validation_context)",
        ),
        (
            "concurrency",
            raw.concurrency.is_some(),
            "one prober per Envoy probes each instance on its own schedule",
        ),
    ] {
        if present {
            return Err(ConfigError::new(
                f(field),
                format!("is not supported: {why}"),
            ));
        }
    }
    let tcp = match raw.kind.as_deref().unwrap_or("http") {
        "http" | "https" => false,
        "tcp" => true,
        other => {
            return Err(ConfigError::new(
                f("type"),
                format!("unknown type `{other}`; supported: http, https, tcp"),
            ))
        }
    };
    let path = raw.http_path.unwrap_or_else(|| "/".into());
    if !path.starts_with('/') || !valid_header_value(&path) || path.contains(' ') {
        return Err(ConfigError::new(
            f("http_path"),
            "must be a path starting with /",
        ));
    }
    if let Some(h) = &raw.host {
        if h.is_empty() || !valid_header_value(h) || h.contains(' ') {
            return Err(ConfigError::new(f("host"), "must be a host name"));
        }
    }
    let mut headers: Vec<(String, String)> = auth_headers.to_vec();
    for (i, line) in raw.req_headers.unwrap_or_default().iter().enumerate() {
        let field = f(&format!("req_headers[{i}]"));
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| ConfigError::new(field.clone(), "must be `Name: value`"))?;
        check_token(name.trim()).map_err(|m| ConfigError::new(field.clone(), m))?;
        if !valid_header_value(value) {
            return Err(ConfigError::new(
                field,
                "has characters not allowed in a header",
            ));
        }
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let healthy = raw.healthy.unwrap_or_default();
    let unhealthy = raw.unhealthy.unwrap_or_default();
    Ok(Active {
        tcp,
        timeout_ms: secs_ms(&f("timeout"), raw.timeout.unwrap_or(1.0), false)?,
        path,
        host: raw.host,
        headers,
        healthy_interval_ms: secs_ms(
            &f("healthy.interval"),
            healthy.interval.unwrap_or(1.0),
            true,
        )?,
        unhealthy_interval_ms: secs_ms(
            &f("unhealthy.interval"),
            unhealthy.interval.unwrap_or(1.0),
            true,
        )?,
        successes: at_least_one(&f("healthy.successes"), healthy.successes.unwrap_or(2))?,
        healthy_statuses: statuses(
            &f("healthy.http_statuses"),
            healthy
                .http_statuses
                .unwrap_or_else(|| DEFAULT_HEALTHY_STATUSES.to_vec()),
        )?,
        http_failures: at_least_one(
            &f("unhealthy.http_failures"),
            unhealthy.http_failures.unwrap_or(5),
        )?,
        tcp_failures: at_least_one(
            &f("unhealthy.tcp_failures"),
            unhealthy.tcp_failures.unwrap_or(2),
        )?,
        timeouts: at_least_one(&f("unhealthy.timeouts"), unhealthy.timeouts.unwrap_or(3))?,
        unhealthy_statuses: statuses(
            &f("unhealthy.http_statuses"),
            unhealthy
                .http_statuses
                .unwrap_or_else(|| DEFAULT_UNHEALTHY_STATUSES.to_vec()),
        )?,
    })
}

fn compile_passive(at: &str, raw: raw::RawPassive) -> Result<Passive, ConfigError> {
    let f = |x: &str| format!("{at}.{x}");
    let u = raw.unhealthy.unwrap_or_default();
    if u.interval.is_some() {
        return Err(ConfigError::new(
            f("unhealthy.interval"),
            "applies to active checks only",
        ));
    }
    Ok(Passive {
        statuses: statuses(
            &f("unhealthy.http_statuses"),
            u.http_statuses
                .unwrap_or_else(|| DEFAULT_PASSIVE_STATUSES.to_vec()),
        )?,
        http_failures: at_least_one(&f("unhealthy.http_failures"), u.http_failures.unwrap_or(3))?,
        tcp_failures: at_least_one(&f("unhealthy.tcp_failures"), u.tcp_failures.unwrap_or(3))?,
        timeouts: at_least_one(&f("unhealthy.timeouts"), u.timeouts.unwrap_or(3))?,
        cooldown_ms: secs_ms(&f("cooldown"), raw.cooldown.unwrap_or(10.0), false)?,
    })
}

/// An auth value must be a string. The message never repeats the value: it is a secret.
fn auth_string(value: Value, path: &str) -> Result<String, ConfigError> {
    match value {
        Value::String(s) => Ok(s),
        _ => Err(ConfigError::new(path, "must be a string")),
    }
}

/// Header and query parameter names: `^[a-zA-Z0-9._-]+$`.
fn check_token(name: &str) -> Result<(), String> {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Ok(())
    } else {
        Err("names must match ^[a-zA-Z0-9._-]+$".to_string())
    }
}

/// RFC 9110 field-value: visible characters, space and tab, and obs-text; no CR, LF or NUL.
pub(crate) fn valid_header_value(v: &str) -> bool {
    v.bytes().all(|b| b == b'\t' || b >= 0x20) && !v.bytes().any(|b| b == 0x7f)
}

/// serde's messages quote the offending string (`invalid type: string "Bearer sk-…"`). A
/// misplaced API key must never reach the log, so every quoted string is cut out.
fn redact(message: &str) -> String {
    const MARK: &str = "string \"";
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(MARK) {
        let (head, tail) = rest.split_at(at + MARK.len());
        out.push_str(head);
        out.push_str("…\"");
        // Skip the Debug-escaped string up to its closing, unescaped quote.
        let mut escaped = false;
        let mut end = tail.len();
        for (i, c) in tail.char_indices() {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                end = i + 1;
                break;
            }
        }
        rest = tail.get(end..).unwrap_or("");
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests;
