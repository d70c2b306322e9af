//! Instances: provider, endpoint, auth (headers and query), options and cluster of each
//! instance (or of the single provider), and the header-name and header-value rules they
//! follow.

use serde_json::{Map, Value};

use super::checks::{compile_active, compile_passive};
use super::{raw, ConfigError, Instance, RESERVED_HEADERS};
use crate::provider::{self, Endpoint, Provider};

/// A configurable header name: a token, not one Envoy or the filter already use.
pub(super) fn header_name_field(
    field: &str,
    value: Option<&str>,
    default: &str,
) -> Result<String, ConfigError> {
    let Some(h) = value else {
        return Ok(default.to_string());
    };
    check_token(h).map_err(|m| ConfigError::new(field, m))?;
    let lower = h.to_ascii_lowercase();
    if RESERVED_HEADERS.contains(&lower.as_str()) || lower == "authorization" {
        return Err(ConfigError::new(
            field,
            "names a header that Envoy or the filter already use",
        ));
    }
    Ok(lower)
}

pub(super) fn compile_instances(
    list: &[raw::RawInstance],
    cluster_header: &str,
) -> Result<Vec<Instance>, ConfigError> {
    if list.is_empty() {
        return Err(ConfigError::new(
            "instances",
            "must list at least one instance",
        ));
    }
    let mut out: Vec<Instance> = Vec::with_capacity(list.len());
    for (i, raw) in list.iter().enumerate() {
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
                name: &raw.name,
                provider: &raw.provider,
                priority: raw.priority.unwrap_or(0),
                weight: raw.weight.unwrap_or(0),
                auth: raw.auth.as_ref(),
                options: raw.options.as_ref(),
                endpoint: raw.override_.as_ref().and_then(|o| o.endpoint.as_deref()),
                cluster: raw.cluster.as_deref(),
                checks: raw.checks.as_ref(),
            },
            cluster_header,
        )?);
    }
    Ok(out)
}

/// The per-provider fields shared by the single-provider and the many-instance shapes,
/// borrowed from the configuration as read: a way out of `compile_instance` then has
/// nothing of them to drop (each such drop is code: "Round 14" in docs/performance.md).
pub(super) struct InstanceParts<'r> {
    pub(super) name: &'r str,
    pub(super) provider: &'r str,
    pub(super) priority: i64,
    pub(super) weight: u32,
    pub(super) auth: Option<&'r raw::RawAuth>,
    pub(super) options: Option<&'r Map<String, Value>>,
    pub(super) endpoint: Option<&'r str>,
    pub(super) cluster: Option<&'r str>,
    pub(super) checks: Option<&'r raw::RawChecks>,
}

/// `prefix` is the path of the object the fields sit in (`""` at top level,
/// `instances[2].` for an instance), so errors name the field as the user wrote it.
pub(super) fn compile_instance(
    prefix: &str,
    parts: InstanceParts<'_>,
    cluster_header: &str,
) -> Result<Instance, ConfigError> {
    let at = |field: &str| format!("{prefix}{field}");
    let provider = Provider::parse(parts.provider).ok_or_else(|| {
        ConfigError::new(
            at("provider"),
            format!(
                "unknown provider `{}`; supported: {}",
                parts.provider,
                Provider::names().join(", ")
            ),
        )
    })?;

    let endpoint = match parts.endpoint {
        None => None,
        Some(url) => {
            Some(Endpoint::parse(url).map_err(|m| ConfigError::new(at("override.endpoint"), m))?)
        }
    };
    if provider.needs_endpoint() && endpoint.is_none() {
        return Err(ConfigError::new(
            at("override.endpoint"),
            format!("is required for provider `{}`", provider.name()),
        ));
    }

    let no_auth = raw::RawAuth::default();
    let auth = parts.auth.unwrap_or(&no_auth);
    let mut auth_headers = Vec::new();
    for (name, value) in auth.header.iter().flatten() {
        let path = at(&format!("auth.header.{name}"));
        check_token(name).map_err(|m| ConfigError::new(path.clone(), m))?;
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
    for (name, value) in auth.query.iter().flatten() {
        let path = at(&format!("auth.query.{name}"));
        check_token(name).map_err(|m| ConfigError::new(path.clone(), m))?;
        let value = auth_string(value, &path)?;
        auth_query.push((name.clone(), value));
    }
    let has_auth = !auth_headers.is_empty() || !auth_query.is_empty();

    let cluster = parts.cluster.unwrap_or(parts.name);
    if cluster.is_empty() || !valid_header_value(cluster) || cluster.contains(' ') {
        return Err(ConfigError::new(
            at("cluster"),
            "must be a non-empty Envoy cluster name without spaces or control characters",
        ));
    }

    let checks = parts.checks;
    let active_check = match checks.and_then(|c| c.active.as_ref()) {
        Some(a) => Some(compile_active(
            &at("checks.active"),
            a,
            &auth_headers,
            &auth_query,
        )?),
        None => None,
    };
    let passive_check = match checks.and_then(|c| c.passive.as_ref()) {
        Some(p) => Some(compile_passive(&at("checks.passive"), p)?),
        None => None,
    };

    // Checked: now built, with no way out left.
    let options = parts
        .options
        .iter()
        .flat_map(|o| o.iter())
        .map(|(k, v)| (k.clone(), crate::json::to_text(v)))
        .collect();
    let target = provider::target(provider, endpoint.as_ref(), &auth_query);
    Ok(Instance {
        active_check,
        passive_check,
        label: crate::metrics::label(parts.name),
        quota_header_names: crate::quota::quota_header_names(parts.name),
        name: parts.name.to_string(),
        provider,
        priority: parts.priority,
        weight: parts.weight,
        cluster: cluster.to_string(),
        target,
        auth_headers,
        has_auth,
        options,
    })
}

/// An auth value must be a string. The message never repeats the value: it is a secret.
pub(super) fn auth_string(value: &Value, path: &str) -> Result<String, ConfigError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        _ => Err(ConfigError::new(path, "must be a string")),
    }
}

/// Header and query parameter names: `^[a-zA-Z0-9._-]+$`.
pub(super) fn check_token(name: &str) -> Result<(), String> {
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
