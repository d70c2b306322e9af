//! `envoy-config --apisix`: APISIX admin-API objects turned into the filter's configuration
//! and the Envoy side of a bootstrap. The input is what a user PUTs to APISIX: one route
//! (`uri`/`uris`, `methods`, `plugins` with `ai-proxy` or `ai-proxy-multi`, optionally
//! `ai-rate-limiting` and `key-auth`), then consumers (`username`, `plugins` with
//! `key-auth` and `ai-rate-limiting`), each optionally followed by its credential objects.
//! Pure: JSON in, an [`Import`] out (plugin configuration, route match, `api_key_auth`
//! keys). Whatever cannot carry over is refused by name ([`Refused`]), never dropped.

use std::fmt;

use serde_json::{json, Map, Value};

use crate::bootstrap::{KeySource, Options, RouteMatch};

mod consumer;
mod route;

use consumer::read_consumers;
use route::read_route;

/// One APISIX object and where it came from (a file name, for messages).
#[derive(Debug, Clone)]
pub struct Input {
    pub label: String,
    pub value: Value,
}

/// What the APISIX objects become.
#[derive(Debug, Clone, PartialEq)]
pub struct Import {
    /// The filter's configuration: `ai-proxy`/`ai-proxy-multi` as given, the route's
    /// `ai-rate-limiting` as `rate_limiting`, the consumers' as `consumers`.
    pub plugin_config: Value,
    pub route: RouteMatch,
    /// `api_key_auth` credentials (consumer, key); empty when the route has no `key-auth`.
    pub api_keys: Vec<(String, String)>,
    pub key_sources: Vec<KeySource>,
    /// Differences worth knowing that change no limit or match (for stderr).
    pub notes: Vec<String>,
}

impl Import {
    /// Puts the Envoy side into the generator's options.
    pub fn apply(&self, opts: &mut Options) {
        opts.route = Some(self.route.clone());
        opts.api_keys = self.api_keys.clone();
        opts.api_key_sources = self.key_sources.clone();
    }
}

/// Everything that cannot carry over, one message per problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub Vec<String>);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.join("\n"))
    }
}

impl std::error::Error for Refused {}

/// Fields that describe an object without changing what it does.
const DESCRIPTIVE: &[&str] = &["name", "desc", "labels", "create_time", "update_time"];

#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn add(&mut self, label: &str, at: &str, what: impl fmt::Display) {
        if at.is_empty() {
            self.0.push(format!("{label}: {what}"));
        } else {
            self.0.push(format!("{label}: {at}: {what}"));
        }
    }
}

/// The route's parts that matter.
struct Route {
    label: String,
    matcher: RouteMatch,
    /// `ai-proxy` or `ai-proxy-multi`.
    proxy_plugin: &'static str,
    proxy: Map<String, Value>,
    rate_limiting: Option<Value>,
    /// `key-auth` on the route: where the key is looked for.
    key_sources: Option<Vec<KeySource>>,
}

struct Consumer {
    label: String,
    username: String,
    rate_limiting: Option<Value>,
    keys: Vec<String>,
}

/// Converts the route (first) and the consumers and credentials after it.
pub fn convert(route: &Input, rest: &[Input]) -> Result<Import, Refused> {
    let mut p = Problems::default();
    let mut notes = Vec::new();
    let route = read_route(route, &mut p, &mut notes);
    let mut consumers = read_consumers(rest, &mut p);
    let Some(mut route) = route else {
        return Err(Refused(p.0));
    };

    let (names, single) = instance_names(&route);
    if let Some(rl) = route.rate_limiting.as_mut() {
        let at = "plugins.ai-rate-limiting";
        check_limit_names(rl, &names, single.as_deref(), &route.label, at, &mut p);
    }
    for c in &mut consumers {
        if let Some(rl) = c.rate_limiting.as_mut() {
            let at = "plugins.ai-rate-limiting";
            check_limit_names(rl, &names, single.as_deref(), &c.label, at, &mut p);
        }
    }
    let api_keys = keys_and_auth(&route, &consumers, &mut p, &mut notes);

    let mut config = route.proxy.clone();
    if let Some(rl) = route.rate_limiting.take() {
        config.insert("rate_limiting".into(), rl);
    }
    let limited: Vec<&Consumer> = consumers
        .iter()
        .filter(|c| c.rate_limiting.is_some())
        .collect();
    if !limited.is_empty() {
        let list: Vec<Value> = limited
            .iter()
            .map(|c| json!({"name": c.username, "rate_limiting": c.rate_limiting}))
            .collect();
        config.insert("consumers".into(), Value::Array(list));
    }
    let plugin_config = Value::Object(config);
    if p.0.is_empty() {
        if let Err(e) = envoy_ai_proxy::config::parse(plugin_config.to_string().as_bytes()) {
            let (label, at) = locate(&e.path, &route, &limited);
            p.add(&label, &at, &e.message);
        }
    }
    if !p.0.is_empty() {
        return Err(Refused(p.0));
    }
    Ok(Import {
        plugin_config,
        route: route.matcher,
        api_keys,
        key_sources: route
            .key_sources
            .unwrap_or_else(|| Options::default().api_key_sources),
        notes,
    })
}

/// The names a limit may use: the `ai-proxy-multi` instances, or for `ai-proxy` the
/// provider (the filter's instance name), which APISIX calls `ai-proxy-<provider>`. None
/// when the configuration names no instance (the filter's check then reports it).
fn instance_names(route: &Route) -> (Vec<String>, Option<String>) {
    match route.proxy.get("instances").and_then(Value::as_array) {
        Some(list) => (
            list.iter()
                .filter_map(|i| i.get("name").and_then(Value::as_str).map(String::from))
                .collect(),
            None,
        ),
        None => match route.proxy.get("provider").and_then(Value::as_str) {
            Some(provider) => (vec![provider.to_string()], Some(provider.to_string())),
            // No instance to check against: the filter's own check says what is wrong.
            None => (Vec::new(), None),
        },
    }
}

fn check_limit_names(
    rl: &mut Value,
    names: &[String],
    single: Option<&str>,
    label: &str,
    at: &str,
    p: &mut Problems,
) {
    let Some(list) = rl.get_mut("instances").and_then(Value::as_array_mut) else {
        return;
    };
    if names.is_empty() {
        return;
    }
    for (i, entry) in list.iter_mut().enumerate() {
        let Some(name) = entry.get("name").and_then(Value::as_str).map(String::from) else {
            continue;
        };
        if names.contains(&name) {
            continue;
        }
        match single {
            Some(provider) if name == "ai-proxy" || name == format!("ai-proxy-{provider}") => {
                entry["name"] = Value::from(provider);
            }
            Some(provider) => p.add(label, &format!("{at}.instances[{i}].name"), format!("`{name}` names no instance: with ai-proxy the one instance is `ai-proxy-{provider}`")),
            None => p.add(label, &format!("{at}.instances[{i}].name"), format!("`{name}` names no instance of the route's ai-proxy-multi (its instances: {})", names.join(", "))),
        }
    }
}

/// `api_key_auth` credentials, and the checks that make every consumer reachable.
fn keys_and_auth(
    route: &Route,
    consumers: &[Consumer],
    p: &mut Problems,
    notes: &mut Vec<String>,
) -> Vec<(String, String)> {
    let mut keys: Vec<(String, String)> = Vec::new();
    for c in consumers {
        if c.keys.is_empty() {
            let limit = if c.rate_limiting.is_some() {
                ", so its ai-rate-limiting would never apply"
            } else {
                ""
            };
            p.add(&c.label, "", format!("has no key-auth key (in its plugins or a credential after it): it could never be identified{limit}"));
        }
        for k in &c.keys {
            if let Some((other, _)) = keys.iter().find(|(_, key)| key == k) {
                p.add(&c.label, "key-auth", format!("a key of this consumer is also given to `{other}`: keys identify one consumer"));
            }
            keys.push((c.username.clone(), k.clone()));
        }
        if c.rate_limiting.is_some() && route.rate_limiting.is_some() {
            notes.push(format!("{}: APISIX applies only the consumer's ai-rate-limiting to `{}`; Envoy applies the route's too (the tightest limit wins)", c.label, c.username));
        }
    }
    match (&route.key_sources, consumers.is_empty()) {
        (Some(_), true) => p.add(&route.label, "plugins.key-auth", "no consumer is given: every request would be refused; add the consumers' files after the route"),
        (None, false) => p.add(&route.label, "plugins", "consumers are given but the route has no `key-auth`: they would never be identified and their limits never apply; add \"key-auth\": {}"),
        _ => {}
    }
    if route.key_sources.is_some() {
        keys
    } else {
        Vec::new()
    }
}

/// Where a field the filter refused comes from, in APISIX terms.
fn locate(path: &str, route: &Route, limited: &[&Consumer]) -> (String, String) {
    if let Some(rest) = path.strip_prefix("rate_limiting") {
        return (
            route.label.clone(),
            format!("plugins.ai-rate-limiting{rest}"),
        );
    }
    if let Some(rest) = path.strip_prefix("consumers[") {
        if let Some((i, rest)) = rest.split_once(']') {
            if let Some(c) = i.parse::<usize>().ok().and_then(|i| limited.get(i)) {
                let at = match rest.strip_prefix(".rate_limiting") {
                    Some(r) => format!("plugins.ai-rate-limiting{r}"),
                    None if rest == ".name" => "username".to_string(),
                    None => format!("consumers{rest}"),
                };
                return (c.label.clone(), at);
            }
        }
    }
    let at = if path.is_empty() {
        format!("plugins.{}", route.proxy_plugin)
    } else {
        format!("plugins.{}.{path}", route.proxy_plugin)
    };
    (route.label.clone(), at)
}

#[cfg(test)]
mod tests;
