//! Where an instance's requests go: `override.endpoint` parsed, and the upstream target
//! (`:authority`, and the `:path` with its query for each API) from a provider preset and
//! that endpoint.

use std::fmt::Write as _;

use super::{ApiKind, Provider, APIS};

/// A parsed `override.endpoint` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub tls: bool,
    /// `host[:port]` as written.
    pub authority: String,
    /// Path as written; empty when the URL has none.
    pub path: String,
    /// Query without the `?`; empty when none.
    pub query: String,
}

impl Endpoint {
    #[inline(never)] // compiled on its own: see "Round 5" in docs/performance.md
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        if url.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err("must be a URL without spaces or control characters".into());
        }
        let lower = url.to_ascii_lowercase();
        let (tls, rest) = if lower.starts_with("https://") {
            (true, url.get("https://".len()..).unwrap_or(""))
        } else if lower.starts_with("http://") {
            (false, url.get("http://".len()..).unwrap_or(""))
        } else {
            return Err("must start with http:// or https://".into());
        };
        if rest.contains('#') {
            return Err("must not contain a fragment (#...)".into());
        }
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path_and_query) = rest.split_at(split);
        if authority.is_empty() {
            return Err("has no host".into());
        }
        if authority.contains('@') {
            return Err("must not carry credentials; use `auth` instead".into());
        }
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, q),
            None => (path_and_query, ""),
        };
        Ok(Endpoint {
            tls,
            authority: authority.to_string(),
            path: path.to_string(),
            query: query.to_string(),
        })
    }
}

/// Where an instance's requests go. Computed once per instance at configuration time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub authority: String,
    /// Whether the provider is reached over TLS (`https://`, or a public provider).
    pub tls: bool,
    /// Full `:path` (query included) per API (indexed like [`ApiKind::ALL`]); `None` where
    /// the instance does not offer the API.
    paths: [Option<String>; APIS],
}

impl Target {
    pub fn path(&self, kind: ApiKind) -> Option<&str> {
        self.paths.get(kind.index()).and_then(Option::as_deref)
    }
}

/// The upstream target of an instance. Without an endpoint path, each API has the
/// provider's default path on the endpoint's (or the provider's) host. An endpoint path that
/// ends in an API's path (`.../chat/completions`, `.../embeddings`, ...) gives every API the
/// provider offers its path under the same base, so a request never goes to another API's
/// endpoint. Any other endpoint path serves chat and embeddings (Messages, for Anthropic) as
/// written (as in APISIX).
/// The query is the endpoint's, minus any parameter `auth.query` sets, then `auth.query`.
pub fn target(
    provider: Provider,
    endpoint: Option<&Endpoint>,
    auth_query: &[(String, String)],
) -> Target {
    let authority = endpoint
        .map(|e| e.authority.clone())
        .unwrap_or_else(|| provider.default_host().to_string());

    let mut query = String::new();
    if let Some(e) = endpoint {
        for pair in e.query.split('&').filter(|p| !p.is_empty()) {
            let name = pair.split_once('=').map_or(pair, |(n, _)| n);
            if !auth_query.iter().any(|(n, _)| n == name) {
                push_query_sep(&mut query);
                query.push_str(pair);
            }
        }
    }
    let with_endpoint_query = |path: &str| with_query(&join(path, &query), auth_query);
    let endpoint_path = endpoint
        .map(|e| e.path.as_str())
        .filter(|p| !p.is_empty() && *p != "/");
    // The endpoint's base, when its path names an API (chat first: it ends in /completions).
    let base =
        endpoint_path.and_then(|p| ApiKind::ALL.iter().find_map(|k| p.strip_suffix(k.suffix())));
    let path_for = |kind: ApiKind| {
        if let Some(fixed) = provider.fixed_path(kind) {
            return Some(with_query(fixed, auth_query));
        }
        let default = provider.default_path(kind)?;
        match (endpoint_path, base) {
            (None, _) => Some(with_endpoint_query(default)),
            (Some(_), Some(base)) => Some(with_endpoint_query(&format!("{base}{}", kind.suffix()))),
            (Some(p), None) => matches!(
                kind,
                ApiKind::Chat | ApiKind::Embeddings | ApiKind::Messages
            )
            .then(|| with_endpoint_query(p)),
        }
    };
    Target {
        authority,
        tls: endpoint.is_none_or(|e| e.tls),
        paths: ApiKind::ALL.map(path_for),
    }
}

/// `path` with `query` (already encoded) appended.
fn join(path: &str, query: &str) -> String {
    if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    }
}

/// `path` with `pairs` appended to its query (`?` or `&`), values percent-encoded.
pub(crate) fn with_query(path: &str, pairs: &[(String, String)]) -> String {
    let mut out = path.to_string();
    for (i, (name, value)) in pairs.iter().enumerate() {
        out.push(if i == 0 && !path.contains('?') {
            '?'
        } else {
            '&'
        });
        out.push_str(name);
        out.push('=');
        percent_encode_into(value, &mut out);
    }
    out
}

fn push_query_sep(query: &mut String) {
    if !query.is_empty() {
        query.push('&');
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode_into(value: &str, out: &mut String) {
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}
