//! The APISIX route: its match (`uri`/`uris`, `methods`), its plugins (`ai-proxy` or
//! `ai-proxy-multi`, `ai-rate-limiting`, `key-auth`), and the fields that do not carry over.

use serde_json::{json, Map, Value};

use super::{Input, Problems, Route, DESCRIPTIVE};
use crate::bootstrap::{KeySource, PathMatch, RouteMatch};

const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", "PURGE",
];
/// Route fields that APISIX itself does not use with ai-proxy (it sends to its providers,
/// not to an upstream), or that only order overlapping routes: left out, with a note.
const UNUSED: &[&str] = &["upstream", "upstream_id", "priority"];

/// Why a route field other than `uri`, `uris`, `methods`, `plugins`, `id` is refused.
fn route_field_refusal(field: &str) -> &'static str {
    match field {
        "host" | "hosts" => "matching on the Host does not carry over: the generated virtual host takes every domain (set its `domains` by hand)",
        "remote_addr" | "remote_addrs" => "matching on the client address does not carry over (Envoy's RBAC filter can do it)",
        "vars" => "matching on request variables does not carry over",
        "filter_func" | "script" => "Lua code does not run in Envoy",
        "service_id" | "plugin_config_id" => "refers to another APISIX object: copy its plugins into the route",
        "timeout" => "the route's upstream timeouts do not carry over (ai-proxy's own `timeout` does)",
        "enable_websocket" => "websockets do not go through ai-proxy",
        "status" => "only an enabled route (`status: 1`) carries over",
        _ => "is not an APISIX route field envoy-config knows",
    }
}

pub(super) fn read_route(
    input: &Input,
    p: &mut Problems,
    notes: &mut Vec<String>,
) -> Option<Route> {
    let label = input.label.as_str();
    let Some(obj) = input.value.as_object() else {
        p.add(label, "", "the route must be a JSON object");
        return None;
    };
    if obj.contains_key("username") {
        p.add(
            label,
            "",
            "is a consumer (it has `username`): the first file must be the route",
        );
        return None;
    }
    let mut matcher = RouteMatch::default();
    let mut plugins = None;
    for (field, v) in obj {
        match field.as_str() {
            "uri" | "uris" | "methods" => {}
            "plugins" => plugins = Some(v),
            "id" => match v {
                Value::String(s) => matcher.name = Some(s.clone()),
                Value::Number(n) => matcher.name = Some(n.to_string()),
                _ => p.add(label, "id", "must be a string or a number"),
            },
            "status" if v == &json!(1) => {}
            f if DESCRIPTIVE.contains(&f) => {}
            f if UNUSED.contains(&f) => notes.push(format!(
                "{label}: `{f}` is not used with ai-proxy (one route, sent to the providers): left out"
            )),
            f => p.add(label, f, route_field_refusal(f)),
        }
    }
    matcher.paths = read_paths(label, obj, p);
    matcher.methods = read_methods(label, obj.get("methods"), p);

    let Some(plugins) = plugins.and_then(Value::as_object) else {
        p.add(
            label,
            "plugins",
            "the route needs `plugins` with `ai-proxy` or `ai-proxy-multi`",
        );
        return None;
    };
    let mut proxy = None;
    let mut rate_limiting = None;
    let mut key_sources = None;
    for (name, conf) in plugins {
        let at = format!("plugins.{name}");
        let Some(conf) = conf.as_object() else {
            p.add(label, &at, "must be an object");
            continue;
        };
        if conf.contains_key("_meta") {
            p.add(
                label,
                &format!("{at}._meta"),
                "APISIX plugin metadata (disable, priority, filter, ...) does not carry over",
            );
            continue;
        }
        match name.as_str() {
            "ai-proxy" | "ai-proxy-multi" => {
                let plugin = if name == "ai-proxy" { "ai-proxy" } else { "ai-proxy-multi" };
                if let Some((other, _)) = &proxy {
                    p.add(label, &at, format!("a route has either ai-proxy or ai-proxy-multi, not both (also {other})"));
                }
                proxy = Some((plugin, read_proxy(label, &at, conf, p)));
            }
            "ai-rate-limiting" => rate_limiting = Some(Value::Object(conf.clone())),
            "key-auth" => key_sources = Some(read_route_key_auth(label, &at, conf, p)),
            other => p.add(
                label,
                &at,
                format!("plugin `{other}` does not carry over: only ai-proxy, ai-proxy-multi, ai-rate-limiting and key-auth do"),
            ),
        }
    }
    let Some((proxy_plugin, proxy)) = proxy else {
        p.add(
            label,
            "plugins",
            "the route needs `ai-proxy` or `ai-proxy-multi`",
        );
        return None;
    };
    Some(Route {
        label: label.to_string(),
        matcher,
        proxy_plugin,
        proxy,
        rate_limiting,
        key_sources,
    })
}

/// `uri` or `uris`: exact paths, or prefixes written with a trailing `*`.
fn read_paths(label: &str, obj: &Map<String, Value>, p: &mut Problems) -> Vec<PathMatch> {
    let uris: Vec<(String, &Value)> = match (obj.get("uri"), obj.get("uris")) {
        (Some(u), None) => vec![("uri".to_string(), u)],
        (None, Some(Value::Array(list))) if !list.is_empty() => list
            .iter()
            .enumerate()
            .map(|(i, u)| (format!("uris[{i}]"), u))
            .collect(),
        (None, Some(_)) => {
            p.add(label, "uris", "must be a non-empty array of paths");
            return Vec::new();
        }
        (Some(_), Some(_)) => {
            p.add(label, "uris", "give `uri` or `uris`, not both");
            return Vec::new();
        }
        (None, None) => {
            p.add(label, "uri", "the route needs `uri` or `uris`");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (at, u) in uris {
        let Some(u) = u.as_str() else {
            p.add(label, &at, "must be a string");
            continue;
        };
        let (path, prefix) = match u.strip_suffix('*') {
            Some(stem) => (stem, true),
            None => (u, false),
        };
        if !path.starts_with('/') {
            p.add(label, &at, format!("`{u}` must start with `/`"));
        } else if path.contains('*') || path.split('/').any(|seg| seg.starts_with(':')) {
            p.add(label, &at, format!("`{u}`: only exact paths and a trailing `*` (a prefix) carry over, not parameters or inner wildcards"));
        } else if prefix {
            out.push(PathMatch::Prefix(path.to_string()));
        } else {
            out.push(PathMatch::Exact(path.to_string()));
        }
    }
    out
}

fn read_methods(label: &str, methods: Option<&Value>, p: &mut Problems) -> Vec<String> {
    let Some(methods) = methods else {
        return Vec::new();
    };
    let Some(list) = methods.as_array() else {
        p.add(label, "methods", "must be an array");
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, m) in list.iter().enumerate() {
        match m.as_str() {
            Some(m) if METHODS.contains(&m) => out.push(m.to_string()),
            _ => p.add(
                label,
                &format!("methods[{i}]"),
                format!("must be one of {}", METHODS.join(", ")),
            ),
        }
    }
    out
}

/// The `ai-proxy`/`ai-proxy-multi` configuration as the filter takes it: the APISIX
/// connection settings that Envoy's defaults already honour are left out, the others
/// refused (they belong to the cluster).
fn read_proxy(
    label: &str,
    at: &str,
    conf: &Map<String, Value>,
    p: &mut Problems,
) -> Map<String, Value> {
    let mut out = conf.clone();
    for (field, default_ok, envoy) in [
        ("ssl_verify", json!(true), "the generated clusters always verify certificates; without verification, edit the cluster's `transport_socket`"),
        ("keepalive", json!(true), "Envoy keeps upstream connections alive; to close them, set the cluster's `max_requests_per_connection: 1`"),
        ("keepalive_timeout", Value::Null, "set the cluster's `common_http_protocol_options.idle_timeout` by hand"),
        ("keepalive_pool", Value::Null, "set the cluster's `circuit_breakers` by hand"),
    ] {
        if let Some(v) = out.remove(field) {
            if v != default_ok {
                p.add(label, &format!("{at}.{field}"), format!("is an Envoy cluster setting that envoy-config does not write: {envoy} (docs/config.md)"));
            }
        }
    }
    for field in ["rate_limiting", "consumers"] {
        if out.contains_key(field) {
            p.add(label, &format!("{at}.{field}"), "is not an APISIX field: give the limits as the route's and the consumers' `ai-rate-limiting`");
        }
    }
    out
}

/// The route's `key-auth`: APISIX looks in the header, then in the query parameter.
fn read_route_key_auth(
    label: &str,
    at: &str,
    conf: &Map<String, Value>,
    p: &mut Problems,
) -> Vec<KeySource> {
    let mut header = "apikey".to_string();
    let mut query = "apikey".to_string();
    for (field, v) in conf {
        match (field.as_str(), v) {
            ("header", Value::String(s)) if !s.is_empty() => header = s.clone(),
            ("query", Value::String(s)) if !s.is_empty() => query = s.clone(),
            ("header" | "query", _) => p.add(label, &format!("{at}.{field}"), "must be a non-empty string"),
            ("hide_credentials", Value::Bool(true)) => {}
            ("hide_credentials", _) => p.add(
                label,
                &format!("{at}.hide_credentials"),
                "the key is always removed before the request goes on (the provider must not see a gateway key): leave the field out or set it to true",
            ),
            (f, _) => p.add(label, &format!("{at}.{f}"), "cannot be expressed by Envoy's api_key_auth (only `header`, `query` and `hide_credentials` carry over)"),
        }
    }
    vec![KeySource::Header(header), KeySource::Query(query)]
}
