//! Providers as data: their default host and paths per API kind and the wire protocol
//! they speak, `override.endpoint` parsing, and the upstream target (`:authority`, `:path`
//! with query) an instance sends to.

use std::fmt::Write as _;

/// The OpenAI-style APIs the filter understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKind {
    Chat,
    Embeddings,
}

impl ApiKind {
    pub fn name(self) -> &'static str {
        match self {
            ApiKind::Chat => "chat completions",
            ApiKind::Embeddings => "embeddings",
        }
    }

    /// The API's name in the access log (`llm_api`).
    pub fn api(self) -> &'static str {
        match self {
            ApiKind::Chat => "chat",
            ApiKind::Embeddings => "embeddings",
        }
    }
}

/// The wire protocol a provider speaks (see `crate::protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    OpenAi,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    OpenAi,
    DeepSeek,
    OpenAiCompatible,
}

impl Provider {
    pub const ALL_NAMES: &'static [&'static str] = &["openai", "deepseek", "openai-compatible"];

    pub fn parse(name: &str) -> Option<Provider> {
        match name {
            "openai" => Some(Provider::OpenAi),
            "deepseek" => Some(Provider::DeepSeek),
            "openai-compatible" => Some(Provider::OpenAiCompatible),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::DeepSeek => "deepseek",
            Provider::OpenAiCompatible => "openai-compatible",
        }
    }

    pub fn wire(self) -> Wire {
        Wire::OpenAi
    }

    /// Providers without a public default host need `override.endpoint`.
    pub fn needs_endpoint(self) -> bool {
        matches!(self, Provider::OpenAiCompatible)
    }

    fn default_host(self) -> &'static str {
        match self {
            Provider::OpenAi => "api.openai.com",
            Provider::DeepSeek => "api.deepseek.com",
            // Always overridden by the (required) endpoint.
            Provider::OpenAiCompatible => "",
        }
    }

    /// Default path per API kind; `None` where the provider does not offer the API.
    fn default_path(self, kind: ApiKind) -> Option<&'static str> {
        match (self, kind) {
            (Provider::OpenAi | Provider::OpenAiCompatible, ApiKind::Chat) => {
                Some("/v1/chat/completions")
            }
            (Provider::OpenAi | Provider::OpenAiCompatible, ApiKind::Embeddings) => {
                Some("/v1/embeddings")
            }
            (Provider::DeepSeek, ApiKind::Chat) => Some("/chat/completions"),
            (Provider::DeepSeek, ApiKind::Embeddings) => None,
        }
    }
}

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
    /// Full `:path` (query included) for chat; for embeddings `None` when the provider has
    /// no embeddings API and no endpoint path was configured.
    pub chat_path: Option<String>,
    pub embeddings_path: Option<String>,
}

impl Target {
    pub fn path(&self, kind: ApiKind) -> Option<&str> {
        match kind {
            ApiKind::Chat => self.chat_path.as_deref(),
            ApiKind::Embeddings => self.embeddings_path.as_deref(),
        }
    }
}

/// The endpoint's path (when it has one) serves every API kind, as in APISIX; an endpoint
/// without a path keeps the provider's default paths on the endpoint's host. The query is
/// the endpoint's, minus any parameter `auth.query` sets, then the `auth.query` parameters.
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
    for (name, value) in auth_query {
        push_query_sep(&mut query);
        query.push_str(name);
        query.push('=');
        percent_encode_into(value, &mut query);
    }

    let with_query = |path: &str| {
        if query.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{query}")
        }
    };
    let endpoint_path = endpoint
        .map(|e| e.path.as_str())
        .filter(|p| !p.is_empty() && *p != "/");
    let path_for = |kind| match endpoint_path {
        Some(p) => Some(with_query(p)),
        None => provider.default_path(kind).map(with_query),
    };
    Target {
        authority,
        tls: endpoint.is_none_or(|e| e.tls),
        chat_path: path_for(ApiKind::Chat),
        embeddings_path: path_for(ApiKind::Embeddings),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn provider_defaults() {
        let cases = [
            (
                Provider::OpenAi,
                "api.openai.com",
                Some("/v1/chat/completions"),
                Some("/v1/embeddings"),
            ),
            (
                Provider::DeepSeek,
                "api.deepseek.com",
                Some("/chat/completions"),
                None,
            ),
        ];
        for (p, host, chat, emb) in cases {
            let t = target(p, None, &[]);
            assert_eq!(t.authority, host, "{p:?}");
            assert_eq!(t.path(ApiKind::Chat), chat, "{p:?}");
            assert_eq!(t.path(ApiKind::Embeddings), emb, "{p:?}");
        }
    }

    #[test]
    fn endpoint_parsing() {
        let e = Endpoint::parse(
            "https://x.example.com:8443/openai/deployments/d/chat?api-version=2024-01",
        )
        .unwrap();
        assert!(e.tls);
        assert_eq!(e.authority, "x.example.com:8443");
        assert_eq!(e.path, "/openai/deployments/d/chat");
        assert_eq!(e.query, "api-version=2024-01");

        let e = Endpoint::parse("HTTP://localhost:8080").unwrap();
        assert!(!e.tls);
        assert_eq!(
            (e.authority.as_str(), e.path.as_str(), e.query.as_str()),
            ("localhost:8080", "", "")
        );

        let e = Endpoint::parse("http://h?x=1").unwrap();
        assert_eq!(
            (e.authority.as_str(), e.path.as_str(), e.query.as_str()),
            ("h", "", "x=1")
        );

        for bad in [
            "ftp://x/y",
            "x.com/v1",
            "http:///v1",
            "http://u:p@h/",
            "http://h/a b",
            "http://h/#f",
            "",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn endpoint_path_serves_every_kind_and_query_merges_auth() {
        let e = Endpoint::parse("https://h/custom/path?api-version=1&key=old").unwrap();
        let t = target(
            Provider::OpenAiCompatible,
            Some(&e),
            &q(&[("key", "s3cr&t"), ("k2", "v")]),
        );
        assert_eq!(t.authority, "h");
        let want = "/custom/path?api-version=1&key=s3cr%26t&k2=v";
        assert_eq!(t.path(ApiKind::Chat), Some(want));
        assert_eq!(t.path(ApiKind::Embeddings), Some(want));
    }

    #[test]
    fn queries_append_to_paths() {
        let pairs = q(&[("key", "a b&c")]);
        assert_eq!(with_query("/health", &pairs), "/health?key=a%20b%26c");
        assert_eq!(with_query("/h?x=1", &pairs), "/h?x=1&key=a%20b%26c");
        assert_eq!(with_query("/h", &[]), "/h");
    }

    #[test]
    fn endpoint_without_path_keeps_default_paths() {
        let e = Endpoint::parse("http://127.0.0.1:9000/").unwrap();
        let t = target(Provider::OpenAiCompatible, Some(&e), &[]);
        assert_eq!(t.authority, "127.0.0.1:9000");
        assert_eq!(t.path(ApiKind::Chat), Some("/v1/chat/completions"));
        assert_eq!(t.path(ApiKind::Embeddings), Some("/v1/embeddings"));
        let t = target(
            Provider::DeepSeek,
            Some(&Endpoint::parse("https://proxy.internal").unwrap()),
            &q(&[("a", "b")]),
        );
        assert_eq!(t.path(ApiKind::Chat), Some("/chat/completions?a=b"));
        assert_eq!(t.path(ApiKind::Embeddings), None);
    }
}
