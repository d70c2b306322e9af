//! Health checks (APISIX `checks.active` and `checks.passive`), compiled with APISIX's
//! defaults.

use super::instance::{check_token, valid_header_value};
use super::{raw, ConfigError};
use serde_json::Value;

use crate::health::{Active, Passive};
use crate::provider::with_query;

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

pub(super) fn compile_active(
    at: &str,
    raw: raw::RawActive,
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
    let path = raw.http_path.unwrap_or_else(|| "/".into());
    if !path.starts_with('/') || !valid_header_value(&path) || path.contains(' ') {
        return Err(ConfigError::new(
            f("http_path"),
            "must be a path starting with /",
        ));
    }
    // As APISIX does: the instance's auth query goes on the probe too.
    let path = with_query(&path, auth_query);
    let method = raw.http_method.unwrap_or_else(|| "GET".into());
    if !["GET", "POST", "HEAD", "PUT", "OPTIONS"].contains(&method.as_str()) {
        return Err(ConfigError::new(
            f("http_method"),
            "must be GET, POST, HEAD, PUT or OPTIONS",
        ));
    }
    let body = match raw.http_req_body {
        None => None,
        Some(Value::String(s)) => Some(s.into_bytes()),
        Some(v @ (Value::Object(_) | Value::Array(_))) => Some(crate::json::to_bytes(&v)),
        Some(_) => {
            return Err(ConfigError::new(
                f("http_req_body"),
                "must be a string or a JSON object",
            ))
        }
    };
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
        method,
        path,
        body,
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

#[inline(never)] // compiled on its own: see "Round 5" in docs/performance.md
pub(super) fn compile_passive(at: &str, raw: raw::RawPassive) -> Result<Passive, ConfigError> {
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
