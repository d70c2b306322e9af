//! Health checks (APISIX `checks.active` and `checks.passive`), compiled with APISIX's
//! defaults.

use super::instance::{check_token, valid_header_value};
use super::{raw, ConfigError};
use serde_json::Value;

use crate::health::{Active, Passive};
use crate::provider::with_query;

/// Seconds (fractions allowed) as milliseconds; `zero_ok` allows 0. (The helpers here
/// take the object's path and the field's name, and join them only for an error.)
fn secs_ms(at: &str, field: &str, secs: f64, zero_ok: bool) -> Result<u64, ConfigError> {
    if !secs.is_finite() || secs < 0.0 || (secs == 0.0 && !zero_ok) || secs > 86_400.0 {
        return Err(ConfigError::new(
            format!("{at}.{field}"),
            if zero_ok {
                "must be between 0 and 86400 seconds"
            } else {
                "must be more than 0 and at most 86400 seconds"
            },
        ));
    }
    Ok((secs * 1000.0).round() as u64)
}

fn at_least_one(at: &str, field: &str, n: u32) -> Result<u32, ConfigError> {
    if n == 0 {
        return Err(ConfigError::new(
            format!("{at}.{field}"),
            "must be at least 1",
        ));
    }
    Ok(n)
}

fn check_statuses(at: &str, field: &str, list: &[u16]) -> Result<(), ConfigError> {
    if let Some(bad) = list.iter().find(|s| !(100..=599).contains(*s)) {
        return Err(ConfigError::new(
            format!("{at}.{field}"),
            format!("{bad} is not an HTTP status"),
        ));
    }
    Ok(())
}

/// APISIX's defaults (lua-resty-healthcheck).
const DEFAULT_HEALTHY_STATUSES: &[u16] = &[200, 302];
const DEFAULT_UNHEALTHY_STATUSES: &[u16] = &[429, 404, 500, 501, 502, 503, 504, 505];
const DEFAULT_PASSIVE_STATUSES: &[u16] = &[500, 502, 503, 504];

/// `checks.active`. Read by reference and checked before anything is built, so that no
/// way out drops what was built so far (each such drop is code: "Round 14" in
/// docs/performance.md); the checks keep their order, so the first error is the same.
pub(super) fn compile_active(
    at: &str,
    raw: &raw::RawActive,
    auth_headers: &[(String, String)],
    auth_query: &[(String, String)],
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
    let path = raw.http_path.as_deref().unwrap_or("/");
    if !path.starts_with('/') || !valid_header_value(path) || path.contains(' ') {
        return Err(ConfigError::new(
            f("http_path"),
            "must be a path starting with /",
        ));
    }
    let method = raw.http_method.as_deref().unwrap_or("GET");
    if !["GET", "POST", "HEAD", "PUT", "OPTIONS"].contains(&method) {
        return Err(ConfigError::new(
            f("http_method"),
            "must be GET, POST, HEAD, PUT or OPTIONS",
        ));
    }
    if !matches!(
        raw.http_req_body,
        None | Some(Value::String(_) | Value::Object(_) | Value::Array(_))
    ) {
        return Err(ConfigError::new(
            f("http_req_body"),
            "must be a string or a JSON object",
        ));
    }
    if let Some(h) = &raw.host {
        if h.is_empty() || !valid_header_value(h) || h.contains(' ') {
            return Err(ConfigError::new(f("host"), "must be a host name"));
        }
    }
    let lines = raw.req_headers.as_deref().unwrap_or_default();
    for (i, line) in lines.iter().enumerate() {
        let field = || f(&format!("req_headers[{i}]"));
        let Some((name, value)) = line.split_once(':') else {
            return Err(ConfigError::new(field(), "must be `Name: value`"));
        };
        check_token(name.trim()).map_err(|m| ConfigError::new(field(), m))?;
        if !valid_header_value(value) {
            return Err(ConfigError::new(
                field(),
                "has characters not allowed in a header",
            ));
        }
    }
    let no_healthy = raw::RawHealthy::default();
    let healthy = raw.healthy.as_ref().unwrap_or(&no_healthy);
    let no_unhealthy = raw::RawUnhealthy::default();
    let unhealthy = raw.unhealthy.as_ref().unwrap_or(&no_unhealthy);
    let timeout_ms = secs_ms(at, "timeout", raw.timeout.unwrap_or(1.0), false)?;
    let healthy_interval_ms = secs_ms(
        at,
        "healthy.interval",
        healthy.interval.unwrap_or(1.0),
        true,
    )?;
    let unhealthy_interval_ms = secs_ms(
        at,
        "unhealthy.interval",
        unhealthy.interval.unwrap_or(1.0),
        true,
    )?;
    let successes = at_least_one(at, "healthy.successes", healthy.successes.unwrap_or(2))?;
    let healthy_statuses = healthy
        .http_statuses
        .as_deref()
        .unwrap_or(DEFAULT_HEALTHY_STATUSES);
    check_statuses(at, "healthy.http_statuses", healthy_statuses)?;
    let http_failures = at_least_one(
        at,
        "unhealthy.http_failures",
        unhealthy.http_failures.unwrap_or(5),
    )?;
    let tcp_failures = at_least_one(
        at,
        "unhealthy.tcp_failures",
        unhealthy.tcp_failures.unwrap_or(2),
    )?;
    let timeouts = at_least_one(at, "unhealthy.timeouts", unhealthy.timeouts.unwrap_or(3))?;
    let unhealthy_statuses = unhealthy
        .http_statuses
        .as_deref()
        .unwrap_or(DEFAULT_UNHEALTHY_STATUSES);
    check_statuses(at, "unhealthy.http_statuses", unhealthy_statuses)?;

    // Checked: now built, with no way out left.
    let body = match &raw.http_req_body {
        Some(Value::String(s)) => Some(s.clone().into_bytes()),
        Some(v) => Some(crate::json::to_bytes(v)),
        None => None,
    };
    let mut headers: Vec<(String, String)> = auth_headers.to_vec();
    for (name, value) in lines.iter().filter_map(|l| l.split_once(':')) {
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    Ok(Active {
        tcp,
        timeout_ms,
        method: method.to_string(),
        // As APISIX does: the instance's auth query goes on the probe too.
        path: with_query(path, auth_query),
        body,
        host: raw.host.clone(),
        headers,
        healthy_interval_ms,
        unhealthy_interval_ms,
        successes,
        healthy_statuses: healthy_statuses.to_vec(),
        http_failures,
        tcp_failures,
        timeouts,
        unhealthy_statuses: unhealthy_statuses.to_vec(),
    })
}

#[inline(never)] // compiled on its own: see "Round 5" in docs/performance.md
pub(super) fn compile_passive(at: &str, raw: &raw::RawPassive) -> Result<Passive, ConfigError> {
    let f = |x: &str| format!("{at}.{x}");
    let no_unhealthy = raw::RawUnhealthy::default();
    let u = raw.unhealthy.as_ref().unwrap_or(&no_unhealthy);
    if u.interval.is_some() {
        return Err(ConfigError::new(
            f("unhealthy.interval"),
            "applies to active checks only",
        ));
    }
    let statuses = u
        .http_statuses
        .as_deref()
        .unwrap_or(DEFAULT_PASSIVE_STATUSES);
    check_statuses(at, "unhealthy.http_statuses", statuses)?;
    Ok(Passive {
        http_failures: at_least_one(at, "unhealthy.http_failures", u.http_failures.unwrap_or(3))?,
        tcp_failures: at_least_one(at, "unhealthy.tcp_failures", u.tcp_failures.unwrap_or(3))?,
        timeouts: at_least_one(at, "unhealthy.timeouts", u.timeouts.unwrap_or(3))?,
        cooldown_ms: secs_ms(at, "cooldown", raw.cooldown.unwrap_or(10.0), false)?,
        statuses: statuses.to_vec(),
    })
}
