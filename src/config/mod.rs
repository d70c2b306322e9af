//! The validated, compiled plugin configuration: parsed once in `on_configure`, shared
//! read-only by every request. No host calls here.

mod raw;

use std::fmt;

use serde_json::{Map, Value};

use crate::provider::{self, Endpoint, Provider, Target};

pub use raw::RawConfig;

/// Default per-attempt upstream timeout (APISIX `timeout`), in milliseconds.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// Default limit on the client's request body.
pub const DEFAULT_MAX_REQ_BODY_SIZE: usize = 64 * 1024 * 1024;
/// Default request header that carries the chosen cluster to the route.
pub const DEFAULT_CLUSTER_HEADER: &str = "x-ai-proxy-cluster";

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
    pub timeout_ms: u64,
    pub max_req_body_size: usize,
    /// Lower-cased name of the routing header.
    pub cluster_header: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub name: String,
    pub provider: Provider,
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
    let cluster_header = match raw.cluster_header {
        None => DEFAULT_CLUSTER_HEADER.to_string(),
        Some(h) => {
            check_token(&h).map_err(|m| ConfigError::new("cluster_header", m))?;
            if h.starts_with(':') || RESERVED_HEADERS.contains(&h.to_ascii_lowercase().as_str()) {
                return Err(ConfigError::new(
                    "cluster_header",
                    "names a header that Envoy or the filter already use",
                ));
            }
            h.to_ascii_lowercase()
        }
    };

    let provider_name = raw.provider.ok_or_else(|| {
        ConfigError::new(
            "provider",
            "is required (openai, deepseek, openai-compatible)",
        )
    })?;
    let instance = compile_instance(
        "",
        InstanceParts {
            name: provider_name.clone(),
            provider: provider_name,
            auth: raw.auth,
            options: raw.options,
            endpoint: raw.override_.and_then(|o| o.endpoint),
            cluster: raw.cluster,
        },
        &cluster_header,
    )?;

    Ok(Config {
        instances: vec![instance],
        timeout_ms,
        max_req_body_size,
        cluster_header,
    })
}

/// The per-provider fields shared by the single-provider and the many-instance shapes.
struct InstanceParts {
    name: String,
    provider: String,
    auth: Option<raw::RawAuth>,
    options: Option<Map<String, Value>>,
    endpoint: Option<String>,
    cluster: Option<String>,
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

    Ok(Instance {
        name: parts.name,
        provider,
        cluster,
        target,
        auth_headers,
        has_auth,
        options,
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
