//! Presets, endpoints and targets.

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
            Provider::parse("openai").unwrap(),
            "api.openai.com",
            Some("/v1/chat/completions"),
            Some("/v1/embeddings"),
        ),
        (
            Provider::parse("deepseek").unwrap(),
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
    let e =
        Endpoint::parse("https://x.example.com:8443/openai/deployments/d/chat?api-version=2024-01")
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
        Provider::parse("openai-compatible").unwrap(),
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
    let t = target(Provider::parse("openai-compatible").unwrap(), Some(&e), &[]);
    assert_eq!(t.authority, "127.0.0.1:9000");
    assert_eq!(t.path(ApiKind::Chat), Some("/v1/chat/completions"));
    assert_eq!(t.path(ApiKind::Embeddings), Some("/v1/embeddings"));
    let t = target(
        Provider::parse("deepseek").unwrap(),
        Some(&Endpoint::parse("https://proxy.internal").unwrap()),
        &q(&[("a", "b")]),
    );
    assert_eq!(t.path(ApiKind::Chat), Some("/chat/completions?a=b"));
    assert_eq!(t.path(ApiKind::Embeddings), None);
}
