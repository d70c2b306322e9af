//! Generates a complete Envoy bootstrap for a plugin configuration: the listener with the
//! filter (and, optionally, Envoy's `api_key_auth` before it), the route that follows the
//! filter's routing header, and one cluster per instance from its provider or endpoint
//! (TLS with SNI and certificate checks for `https`). `envoy-config` prints it. With a
//! [`RouteMatch`] (an imported APISIX route) only the route's paths and methods reach the
//! filters; any other request gets 404 with the filters off.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use anyhow::anyhow;
use envoy_ai_proxy::clusters::{cluster_specs, ClusterSpec};
use serde_json::{json, Value};

/// Where Envoy finds the CA bundle to verify providers' certificates (Debian/Ubuntu path).
pub const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, Clone)]
pub struct Options {
    /// Path of the `.wasm` as Envoy will see it.
    pub wasm: String,
    pub listen_address: String,
    pub listen_port: u16,
    pub admin_port: u16,
    /// `api_key_auth` credentials (client, key); none: no authentication filter.
    pub api_keys: Vec<(String, String)>,
    /// Where `api_key_auth` looks for the key, first found wins (default: header `apikey`).
    pub api_key_sources: Vec<KeySource>,
    /// Which requests go through the filters; `None`: every request (prefix `/`).
    pub route: Option<RouteMatch>,
    /// Access log file; `None`: JSON lines on stdout.
    pub access_log: Option<String>,
    /// Tests: clusters sent to 127.0.0.1:<port> over plain HTTP instead of the provider.
    pub local_clusters: BTreeMap<String, u16>,
    /// Where the rate limit service of `rate_limiting.service` is (`host:port`); default:
    /// the cluster's name as a DNS name, port 8081 (Limitador's gRPC port).
    pub rls_address: Option<(String, u16)>,
    /// A comment at the top.
    pub header: String,
}

/// A place `api_key_auth` reads the key from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Header(String),
    Query(String),
}

/// The requests a route takes: any of `paths`, with one of `methods` (empty: any method).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteMatch {
    /// The Envoy route's name.
    pub name: Option<String>,
    pub paths: Vec<PathMatch>,
    pub methods: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
}

impl Default for Options {
    fn default() -> Self {
        Options {
            wasm: "target/wasm32-wasip1/release/envoy_ai_proxy.wasm".into(),
            listen_address: "0.0.0.0".into(),
            listen_port: 10000,
            admin_port: 9901,
            api_keys: Vec::new(),
            api_key_sources: vec![KeySource::Header("apikey".into())],
            route: None,
            access_log: None,
            local_clusters: BTreeMap::new(),
            rls_address: None,
            header: String::new(),
        }
    }
}

/// Every value the filter sets for access logs (`%FILTER_STATE(wasm.<name>:PLAIN)%`).
pub const FILTER_STATE: &[&str] = &[
    "request_type",
    "llm_api",
    "llm_client_path",
    "request_llm_model",
    "llm_model",
    "llm_instance",
    "llm_provider",
    "llm_attempts",
    "llm_fallback_reason",
    "llm_error_code",
    "llm_time_to_first_token",
    "llm_prompt_tokens",
    "llm_completion_tokens",
    "llm_total_tokens",
];

/// Envoy's buffer for a request body the filter reads: twice the filter's default
/// `max_req_body_size`, so the filter's own (JSON) 413 is the one clients see.
pub const BUFFER_LIMIT: u64 = 32 * 1024 * 1024;

/// The Wasm VM: V8, the module, and the environment variables the plugin configuration's
/// `$env://` references need (copied from Envoy's environment: no key in the bootstrap).
pub fn vm_config(plugin_config: &Value, wasm: &str) -> Value {
    let mut vm = json!({"vm_id": "ai_proxy", "runtime": "envoy.wasm.runtime.v8",
                        "code": {"local": {"filename": wasm}}});
    let keys = envoy_ai_proxy::config::references(&plugin_config.to_string());
    if !keys.is_empty() {
        vm["environment_variables"] = json!({"host_env_keys": keys});
    }
    vm
}

/// The filter's values for the access log (every `%FILTER_STATE(wasm.<name>:PLAIN)%`).
fn access_log_format() -> Value {
    let mut f = serde_json::Map::new();
    for (k, v) in [
        ("time", "%START_TIME%"),
        ("method", "%REQ(:METHOD)%"),
        ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
        ("status", "%RESPONSE_CODE%"),
        ("duration_ms", "%DURATION%"),
        ("request_id", "%REQ(X-REQUEST-ID)%"),
    ] {
        f.insert(k.into(), v.into());
    }
    for &name in FILTER_STATE {
        f.insert(
            name.into(),
            format!("%FILTER_STATE(wasm.{name}:PLAIN)%").into(),
        );
    }
    Value::Object(f)
}

fn cluster(spec: &ClusterSpec, local: Option<u16>) -> Value {
    let (address, port, tls) = match local {
        Some(p) => ("127.0.0.1".to_string(), p, false),
        None => (spec.host.clone(), spec.port, spec.tls),
    };
    let is_ip = address.parse::<IpAddr>().is_ok();
    let mut c = json!({
        "name": spec.name,
        "type": if is_ip { "STATIC" } else { "LOGICAL_DNS" },
        "connect_timeout": "5s",
        "load_assignment": {"cluster_name": spec.name, "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": address, "port_value": port}}}}]}]}
    });
    if !is_ip {
        c["dns_lookup_family"] = "V4_PREFERRED".into();
    }
    if tls {
        let mut validation = json!({"trusted_ca": {"filename": CA_BUNDLE}});
        if !is_ip {
            validation["match_typed_subject_alt_names"] =
                json!([{"san_type": "DNS", "matcher": {"exact": spec.host}}]);
        }
        let mut ctx = json!({
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": {"validation_context": validation}
        });
        if !is_ip {
            ctx["sni"] = spec.host.clone().into();
        }
        c["transport_socket"] = json!({"name": "envoy.transport_sockets.tls", "typed_config": ctx});
    }
    c
}

/// HTTP/2 to a cluster's hosts (gRPC), as `typed_extension_protocol_options`.
pub fn http2_options() -> Value {
    json!({"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}}
    }})
}

/// Limitador's gRPC port, where `rate_limiting.service` points when no address is given.
pub const RLS_PORT: u16 = 8081;

/// The rate limit service's cluster: HTTP/2 (gRPC), plain text.
fn rls_cluster(name: &str, address: Option<&(String, u16)>, local: Option<u16>) -> Value {
    let (host, port) = match (local, address) {
        (Some(p), _) => ("127.0.0.1".to_string(), p),
        (None, Some((h, p))) => (h.clone(), *p),
        (None, None) => (name.to_string(), RLS_PORT),
    };
    let spec = ClusterSpec {
        name: name.to_string(),
        host,
        port,
        tls: false,
    };
    let mut c = cluster(&spec, None);
    c["typed_extension_protocol_options"] = http2_options();
    c
}

/// The bootstrap, as YAML.
pub fn generate(plugin_config: &Value, opts: &Options) -> anyhow::Result<String> {
    let parsed = envoy_ai_proxy::config::parse(plugin_config.to_string().as_bytes())
        .map_err(|e| anyhow!("invalid plugin configuration: {e}"))?;
    let specs = cluster_specs(&parsed).map_err(|e| anyhow!(e))?;
    let mut clusters: Vec<Value> = specs
        .iter()
        .map(|s| cluster(s, opts.local_clusters.get(&s.name).copied()))
        .collect();
    if let Some(service) = &parsed.rate_limits.service {
        let local = opts.local_clusters.get(&service.cluster).copied();
        clusters.push(rls_cluster(
            &service.cluster,
            opts.rls_address.as_ref(),
            local,
        ));
    }
    let cluster_header = parsed.cluster_header.clone();

    let mut filters = Vec::new();
    if !opts.api_keys.is_empty() {
        let creds: Vec<Value> = opts
            .api_keys
            .iter()
            .map(|(client, key)| json!({"key": key, "client": client}))
            .collect();
        filters.push(json!({
            "name": "envoy.filters.http.api_key_auth",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuth",
                "credentials": creds,
                "key_sources": key_sources(&opts.api_key_sources),
                "forwarding": {"header": parsed.consumer_header, "hide_credentials": true}
            }
        }));
    }
    filters.push(json!({
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "ai_proxy",
                "root_id": "ai_proxy",
                "allow_on_headers_stop_iteration": true,
                "vm_config": vm_config(plugin_config, &opts.wasm),
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": format!("{}\n", serde_json::to_string_pretty(plugin_config)?)
                }
            }
        }
    }));
    filters.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
    }));

    let access_log = match &opts.access_log {
        None => json!({"name": "envoy.access_loggers.stdout", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
            "log_format": {"json_format": access_log_format()}}}),
        Some(path) => json!({"name": "envoy.access_loggers.file", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": path, "log_format": {"json_format": access_log_format()}}}),
    };
    let mut hcm = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ai_gateway",
        "access_log": [access_log],
        "route_config": {"virtual_hosts": [{"name": "ai", "domains": ["*"],
            "routes": routes(opts, &cluster_header)}]},
        "http_filters": filters
    });
    if opts.route.is_some() {
        // The routes tell apart the requests the filter has routed by the routing header;
        // a client-sent one is removed before any route is chosen.
        hcm["early_header_mutation_extensions"] = json!([{
            "name": "envoy.http.early_header_mutation.header_mutation",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation",
                "mutations": [{"remove": cluster_header}]
            }
        }]);
    }
    let tag = |name: &str, regex: &str| json!({"tag_name": name, "regex": regex});
    let bootstrap = json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": opts.admin_port}}},
        "stats_config": {"stats_tags": [
            tag("aiproxy_instance", r"^wasmcustom\.aiproxy\.(instance\.([^.]+)\.)"),
            tag("aiproxy_model", r"^wasmcustom\.aiproxy\.instance\.[^.]+\.(model\.([^.]+)\.)"),
            tag("aiproxy_status_class", r"^wasmcustom\.aiproxy\.instance\.[^.]+\.model\.[^.]+\.(status_class\.([^.]+)\.)"),
            tag("aiproxy_token_type", r"^wasmcustom\.aiproxy\.instance\.[^.]+\.(?:model|consumer)\.[^.]+\.(token_type\.([^.]+)\.)"),
            tag("aiproxy_reason", r"^wasmcustom\.aiproxy\.instance\.[^.]+\.(reason\.([^.]+)\.)"),
            tag("aiproxy_consumer", r"^wasmcustom\.aiproxy\.instance\.[^.]+\.(consumer\.([^.]+)\.)")
        ]},
        "static_resources": {
            "listeners": [{
                "name": "ai_gateway",
                "address": {"socket_address": {"address": opts.listen_address, "port_value": opts.listen_port}},
                "per_connection_buffer_limit_bytes": BUFFER_LIMIT,
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": hcm
                }]}]
            }],
            "clusters": clusters
        }
    });
    let mut out = String::new();
    for line in opts.header.lines() {
        let _ = writeln!(out, "# {line}");
    }
    yaml(&bootstrap, 0, &mut out);
    Ok(out)
}

fn key_sources(sources: &[KeySource]) -> Value {
    sources
        .iter()
        .map(|s| match s {
            KeySource::Header(h) => json!({"header": h}),
            KeySource::Query(q) => json!({"query": q}),
        })
        .collect()
}

/// Every request to the filter's routing header. Or, with a route match: one route per
/// path (and method); then the route of requests the filter has routed (Envoy chooses the
/// route again after the filter rewrote the path, so it matches the routing header, which
/// only the filter can have set); and last, for any other request, 404 without running the
/// filters, as APISIX answers a request that matches no route.
fn routes(opts: &Options, cluster_header: &str) -> Vec<Value> {
    let forward = |m: Value| {
        json!({
            "match": m,
            "request_headers_to_remove": [cluster_header],
            "route": {"cluster_header": cluster_header, "idle_timeout": "30s"}
        })
    };
    let Some(rm) = &opts.route else {
        return vec![forward(json!({"prefix": "/"}))];
    };
    let method = match rm.methods.as_slice() {
        [] => None,
        [one] => Some(json!({"exact": one})),
        many => Some(json!({"safe_regex": {"regex": format!("^({})$", many.join("|"))}})),
    };
    let mut out: Vec<Value> = rm
        .paths
        .iter()
        .map(|p| {
            let mut m = match p {
                PathMatch::Exact(path) => json!({"path": path}),
                PathMatch::Prefix(prefix) => json!({"prefix": prefix}),
            };
            if let Some(sm) = &method {
                m["headers"] = json!([{"name": ":method", "string_match": sm}]);
            }
            let mut r = serde_json::Map::new();
            if let Some(name) = &rm.name {
                r.insert("name".into(), name.clone().into());
            }
            if let Value::Object(rest) = forward(m) {
                r.extend(rest);
            }
            Value::Object(r)
        })
        .collect();
    out.push(json!({
        "name": "ai_proxy_routed",
        "match": {"prefix": "/", "headers": [{"name": cluster_header, "present_match": true}]},
        "route": {"cluster_header": cluster_header, "idle_timeout": "30s"},
        "request_headers_to_remove": [cluster_header]
    }));
    let off = json!({"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": true});
    let mut filters_off = serde_json::Map::new();
    if !opts.api_keys.is_empty() {
        filters_off.insert("envoy.filters.http.api_key_auth".into(), off.clone());
    }
    filters_off.insert("envoy.filters.http.wasm".into(), off);
    out.push(json!({
        "name": "no_route",
        "match": {"prefix": "/"},
        "direct_response": {"status": 404, "body": {"inline_string": "{\"error_msg\":\"404 Route Not Found\"}\n"}},
        "response_headers_to_add": [{"header": {"key": "content-type", "value": "application/json"},
                                     "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}],
        "typed_per_filter_config": filters_off
    }));
    out
}

/// A small YAML emitter for JSON values: block style, strings JSON-quoted (valid YAML),
/// multi-line strings as literal blocks.
fn yaml(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(map) => {
            for (k, val) in map {
                let key = yaml_key(k);
                match val {
                    Value::Object(m) if !m.is_empty() => {
                        let _ = writeln!(out, "{pad}{key}:");
                        yaml(val, indent + 2, out);
                    }
                    Value::Array(a) if !a.is_empty() => {
                        let _ = writeln!(out, "{pad}{key}:");
                        yaml(val, indent, out);
                    }
                    _ => {
                        let _ = write!(out, "{pad}{key}: ");
                        scalar(val, indent + 2, out);
                    }
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::Object(m) if !m.is_empty() => {
                        // The first key on the dash line, the rest aligned under it.
                        let mut inner = String::new();
                        yaml(item, indent + 2, &mut inner);
                        let trimmed = inner.get(indent + 2..).unwrap_or("");
                        let _ = write!(out, "{pad}- {trimmed}");
                    }
                    _ => {
                        let _ = write!(out, "{pad}- ");
                        scalar(item, indent + 2, out);
                    }
                }
            }
        }
        _ => scalar(v, indent, out),
    }
}

fn scalar(v: &Value, indent: usize, out: &mut String) {
    match v {
        Value::String(s) if s.contains('\n') => {
            let _ = writeln!(out, "|");
            let pad = " ".repeat(indent);
            for line in s.lines() {
                let _ = writeln!(out, "{pad}{line}");
            }
        }
        Value::Object(_) => {
            let _ = writeln!(out, "{{}}");
        }
        Value::Array(_) => {
            let _ = writeln!(out, "[]");
        }
        other => {
            let _ = writeln!(out, "{other}");
        }
    }
}

fn yaml_key(k: &str) -> String {
    let plain = k
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain {
        k.to_string()
    } else {
        Value::from(k).to_string()
    }
}
