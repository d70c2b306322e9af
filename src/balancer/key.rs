//! The consistent-hashing key: APISIX's `hash_on` / `key` compiled once, then resolved per
//! request from the request's attributes (headers, path, client address).

/// A request attribute, named as in APISIX (nginx variables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Var {
    /// Client address without the port.
    RemoteAddr,
    /// Path without the query.
    Uri,
    /// Path with the query.
    RequestUri,
    Host,
    /// `arg_<name>`: a query parameter.
    Arg(String),
    /// `http_<name>`: a request header (`_` stands for `-`).
    Http(String),
    /// `cookie_<name>`.
    Cookie(String),
    /// `consumer_name`: the consumer header's value.
    ConsumerName,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Literal(String),
    Var(Var),
}

/// Where the key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Var(Var),
    Header(String),
    Cookie(String),
    Consumer,
    Combination(Vec<Part>),
}

/// What a key can be read from; the host implements it over the request headers.
pub trait RequestAttrs {
    /// A request header (lower-case name), `:path` and `:authority` included.
    fn header(&self, name: &str) -> Option<String>;
    /// The client's address, `ip:port` or `[ipv6]:port`.
    fn source_address(&self) -> Option<String>;
}

/// Compiles `balancer.hash_on` and `balancer.key`.
pub fn compile(hash_on: &str, key: &str) -> Result<KeySource, String> {
    match hash_on {
        "vars" if key.is_empty() => Ok(KeySource::Var(Var::RemoteAddr)),
        "vars" => Ok(KeySource::Var(var(key)?)),
        "header" | "headers" => {
            if key.is_empty() {
                return Err("`balancer.key` must name the header for hash_on `header`".into());
            }
            Ok(KeySource::Header(key.to_ascii_lowercase()))
        }
        "cookie" => {
            if key.is_empty() {
                return Err("`balancer.key` must name the cookie for hash_on `cookie`".into());
            }
            Ok(KeySource::Cookie(key.to_string()))
        }
        "consumer" => Ok(KeySource::Consumer),
        "vars_combinations" => combination(key).map(KeySource::Combination),
        other => Err(format!(
            "unknown hash_on `{other}`; supported: vars, header, cookie, consumer, vars_combinations"
        )),
    }
}

fn var(name: &str) -> Result<Var, String> {
    let name = name.strip_prefix('$').unwrap_or(name);
    let with = |prefix: &str| name.strip_prefix(prefix).filter(|n| !n.is_empty());
    Ok(match name {
        "remote_addr" => Var::RemoteAddr,
        "uri" => Var::Uri,
        "request_uri" => Var::RequestUri,
        "host" => Var::Host,
        "consumer_name" => Var::ConsumerName,
        _ => {
            if let Some(n) = with("arg_") {
                Var::Arg(n.to_string())
            } else if let Some(n) = with("http_") {
                Var::Http(n.replace('_', "-").to_ascii_lowercase())
            } else if let Some(n) = with("cookie_") {
                Var::Cookie(n.to_string())
            } else {
                return Err(format!(
                    "unknown variable `{name}`; supported: remote_addr, uri, request_uri, host, \
                     consumer_name, arg_<name>, http_<name>, cookie_<name>"
                ));
            }
        }
    })
}

/// `$remote_addr-$http_x_user`: variables start with `$` and run over `[a-zA-Z0-9_]`.
fn combination(template: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut chars = template.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if c != '$' {
            literal.push(c);
            continue;
        }
        let start = at.saturating_add(1);
        let mut end = start;
        while let Some(&(i, n)) = chars.peek() {
            if n.is_ascii_alphanumeric() || n == '_' {
                end = i.saturating_add(n.len_utf8());
                chars.next();
            } else {
                break;
            }
        }
        let name = template.get(start..end).unwrap_or("");
        if name.is_empty() {
            return Err("`$` must be followed by a variable name".into());
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(std::mem::take(&mut literal)));
        }
        parts.push(Part::Var(var(name)?));
    }
    if !literal.is_empty() {
        parts.push(Part::Literal(literal));
    }
    if !parts.iter().any(|p| matches!(p, Part::Var(_))) {
        return Err("vars_combinations needs at least one `$variable`".into());
    }
    Ok(parts)
}

/// The key for this request; an empty key falls back to the client address.
pub fn resolve(source: &KeySource, attrs: &dyn RequestAttrs, consumer_header: &str) -> String {
    let key = match source {
        KeySource::Var(v) => read_var(v, attrs, consumer_header),
        KeySource::Header(h) => attrs.header(h).unwrap_or_default(),
        KeySource::Cookie(c) => cookie(attrs, c),
        KeySource::Consumer => attrs.header(consumer_header).unwrap_or_default(),
        KeySource::Combination(parts) => parts
            .iter()
            .map(|p| match p {
                Part::Literal(l) => l.clone(),
                Part::Var(v) => read_var(v, attrs, consumer_header),
            })
            .collect(),
    };
    if key.is_empty() {
        remote_addr(attrs)
    } else {
        key
    }
}

fn read_var(v: &Var, attrs: &dyn RequestAttrs, consumer_header: &str) -> String {
    match v {
        Var::RemoteAddr => remote_addr(attrs),
        Var::Uri => {
            let path = attrs.header(":path").unwrap_or_default();
            path.split('?').next().unwrap_or("").to_string()
        }
        Var::RequestUri => attrs.header(":path").unwrap_or_default(),
        Var::Host => attrs.header(":authority").unwrap_or_default(),
        Var::Arg(name) => {
            let path = attrs.header(":path").unwrap_or_default();
            let query = path.split_once('?').map_or("", |(_, q)| q);
            query
                .split('&')
                .find_map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (k == name).then(|| v.to_string())
                })
                .unwrap_or_default()
        }
        Var::Http(name) => attrs.header(name).unwrap_or_default(),
        Var::Cookie(name) => cookie(attrs, name),
        Var::ConsumerName => attrs.header(consumer_header).unwrap_or_default(),
    }
}

fn cookie(attrs: &dyn RequestAttrs, name: &str) -> String {
    attrs
        .header("cookie")
        .unwrap_or_default()
        .split(';')
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then(|| v.to_string())
        })
        .unwrap_or_default()
}

/// `1.2.3.4:5678` -> `1.2.3.4`; `[::1]:5678` -> `::1`.
fn remote_addr(attrs: &dyn RequestAttrs) -> String {
    let addr = attrs.source_address().unwrap_or_default();
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("").to_string();
    }
    match addr.rsplit_once(':') {
        Some((ip, _)) if !ip.contains(':') => ip.to_string(),
        _ => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Req(HashMap<&'static str, &'static str>, &'static str);

    impl RequestAttrs for Req {
        fn header(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|v| v.to_string())
        }
        fn source_address(&self) -> Option<String> {
            Some(self.1.to_string())
        }
    }

    fn req() -> Req {
        Req(
            HashMap::from([
                (":path", "/v1/chat?user=u1&x=2"),
                (":authority", "gw.example.com"),
                ("x-user-id", "alice"),
                ("x-consumer", "team-a"),
                ("cookie", "a=1; session=s42; b=2"),
            ]),
            "10.1.2.3:5555",
        )
    }

    #[test]
    fn resolves_each_source() {
        let cases = [
            ("vars", "", "10.1.2.3"),
            ("vars", "remote_addr", "10.1.2.3"),
            ("vars", "uri", "/v1/chat"),
            ("vars", "request_uri", "/v1/chat?user=u1&x=2"),
            ("vars", "host", "gw.example.com"),
            ("vars", "arg_user", "u1"),
            ("vars", "http_x_user_id", "alice"),
            ("vars", "cookie_session", "s42"),
            ("vars", "consumer_name", "team-a"),
            ("header", "X-User-Id", "alice"),
            ("headers", "x-user-id", "alice"),
            ("cookie", "session", "s42"),
            ("consumer", "", "team-a"),
            ("vars_combinations", "$remote_addr-$arg_user", "10.1.2.3-u1"),
            ("vars_combinations", "$http_x_user_id$uri", "alice/v1/chat"),
            // Empty values fall back to the client address.
            ("header", "x-missing", "10.1.2.3"),
            ("vars", "arg_missing", "10.1.2.3"),
            ("cookie", "nope", "10.1.2.3"),
        ];
        for (hash_on, key, want) in cases {
            let src = compile(hash_on, key).unwrap_or_else(|e| panic!("{hash_on} {key}: {e}"));
            assert_eq!(resolve(&src, &req(), "x-consumer"), want, "{hash_on} {key}");
        }
    }

    #[test]
    fn ipv6_client_address() {
        let r = Req(HashMap::new(), "[2001:db8::1]:443");
        assert_eq!(
            resolve(&KeySource::Var(Var::RemoteAddr), &r, "x-consumer"),
            "2001:db8::1"
        );
    }

    #[test]
    fn refuses_bad_keys() {
        for (hash_on, key) in [
            ("vars", "nginx_thing"),
            ("header", ""),
            ("cookie", ""),
            ("vars_combinations", "no vars here"),
            ("vars_combinations", "$"),
            ("vars_combinations", "$bogus"),
            ("ring", "x"),
        ] {
            assert!(compile(hash_on, key).is_err(), "{hash_on} {key}");
        }
    }
}
