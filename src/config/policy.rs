//! Policies across instances: token limits (APISIX `ai-rate-limiting`), the balancer and
//! the fallback strategy.

use super::{raw, ConfigError, Instance, LimitSet, RlsProtocol, Service};
use crate::balancer::key::{self, KeySource};
use crate::balancer::Algorithm;
use crate::fallback::Policy;
use crate::ratelimit::{Limit, Strategy};

/// Completion tokens reserved for a request that sets no `max_tokens` (`reserve`).
pub const DEFAULT_RESERVE: u64 = 1024;

/// The route's `rate_limiting`: its limits (none when it only names the service or the
/// reservation mode), the service, and (`reserve`, `default_reserve`).
#[allow(clippy::type_complexity)]
pub(super) fn compile_route_limits(
    raw: &raw::RawRateLimiting,
    instances: &[Instance],
) -> Result<(Option<LimitSet>, Option<Service>, Option<(bool, u64)>), ConfigError> {
    let service = raw.service.as_ref().map(compile_service).transpose()?;
    let reserve = match raw.reserve.as_deref() {
        None | Some("none") => false,
        Some("max_tokens") => true,
        Some(other) => {
            return Err(ConfigError::new(
                "rate_limiting.reserve",
                format!("unknown mode `{other}`; supported: none, max_tokens"),
            ))
        }
    };
    let default_reserve = match raw.default_reserve {
        Some(0) => {
            return Err(ConfigError::new(
                "rate_limiting.default_reserve",
                "must be at least 1 (tokens)",
            ))
        }
        Some(n) => n,
        None => DEFAULT_RESERVE,
    };
    let gives_limits = raw.limit.is_some() || raw.time_window.is_some() || raw.instances.is_some();
    let set = if gives_limits || (service.is_none() && !reserve) {
        Some(compile_limits("rate_limiting", raw, instances, None)?)
    } else {
        None
    };
    Ok((set, service, Some((reserve, default_reserve))))
}

/// A consumer's `rate_limiting`: limits only (the service and the reservation mode are the
/// route's).
pub(super) fn compile_consumer_limits(
    at: &str,
    raw: &raw::RawRateLimiting,
    instances: &[Instance],
    inherit: Option<&LimitSet>,
) -> Result<LimitSet, ConfigError> {
    for (field, given) in [
        ("service", raw.service.is_some()),
        ("reserve", raw.reserve.is_some()),
        ("default_reserve", raw.default_reserve.is_some()),
    ] {
        if given {
            return Err(ConfigError::new(
                format!("{at}.{field}"),
                "belongs to the route's `rate_limiting`, for every consumer",
            ));
        }
    }
    compile_limits(at, raw, instances, inherit)
}

/// The longest a check may wait for the service.
const MAX_SERVICE_TIMEOUT_MS: u64 = 10_000;

fn compile_service(raw: &raw::RawService) -> Result<Service, ConfigError> {
    let at = |f: &str| format!("rate_limiting.service.{f}");
    let cluster = raw
        .cluster
        .as_deref()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            ConfigError::new(
                at("cluster"),
                "is required: the Envoy cluster of the rate limit service",
            )
        })?;
    if cluster.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(ConfigError::new(
            at("cluster"),
            "must not contain spaces or control characters",
        ));
    }
    let domain = raw.domain.as_deref().unwrap_or("ai-proxy");
    if domain.is_empty() || domain.bytes().any(|b| b < b' ' || b == 0x7f) {
        return Err(ConfigError::new(
            at("domain"),
            "must be a non-empty name without control characters",
        ));
    }
    let protocol = match raw.protocol.as_deref() {
        None | Some("limitador") => RlsProtocol::Limitador,
        Some("envoy") => RlsProtocol::Envoy,
        Some(other) => {
            return Err(ConfigError::new(
                at("protocol"),
                format!("unknown protocol `{other}`; supported: limitador, envoy"),
            ))
        }
    };
    let timeout_ms = raw.timeout_ms.unwrap_or(200);
    if !(1..=MAX_SERVICE_TIMEOUT_MS).contains(&timeout_ms) {
        return Err(ConfigError::new(
            at("timeout_ms"),
            format!("must be between 1 and {MAX_SERVICE_TIMEOUT_MS} (milliseconds)"),
        ));
    }
    Ok(Service {
        cluster: cluster.to_string(),
        domain: domain.to_string(),
        protocol,
        timeout_ms,
        failure_mode_deny: raw.failure_mode_deny.unwrap_or(false),
    })
}

/// A `rate_limiting` block at `at`. `inherit`: the route's block, whose rejection settings
/// a consumer's block takes when it gives none.
pub(super) fn compile_limits(
    at: &str,
    raw: &raw::RawRateLimiting,
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
    for (i, entry) in raw.instances.iter().flatten().enumerate() {
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
            .clone()
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

pub(super) fn compile_balancer(
    raw: Option<&raw::RawBalancer>,
) -> Result<(Algorithm, Option<KeySource>), ConfigError> {
    let none = raw::RawBalancer::default();
    let raw = raw.unwrap_or(&none);
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

pub(super) fn compile_fallback(
    strategy: Option<&raw::RawFallbackStrategy>,
    statuses: Option<&[u16]>,
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
            for s in list.iter() {
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
    let statuses = statuses.unwrap_or_default();
    if let Some(bad) = statuses.iter().find(|s| !(400..=599).contains(*s)) {
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
    policy.statuses = statuses.to_vec();
    Ok(policy)
}
