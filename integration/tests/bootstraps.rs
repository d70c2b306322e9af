//! The shipped bootstraps: every YAML file in `envoy/` that the docs call a bootstrap runs as
//! shipped (`envoy --mode validate` on the file itself, from the repository root), the
//! templates the tests render are the only other files and are named `*.tmpl`, the demo
//! that `scripts/run.sh` starts really answers, and no key is ever in a bootstrap.

use integration::envoy::{self, render, shipped, validate, validate_with_env, yaml_str};
use integration::{Envoy, MockLlm};
use serde_json::{json, Value};

/// What the shipped bootstraps' `$env://` references need in Envoy's environment.
const KEYS: &[(&str, &str)] = &[
    ("OPENAI_API_KEY", "sk-test-only-in-the-environment"),
    ("DEEPSEEK_API_KEY", "sk-test-deepseek-in-the-environment"),
];

fn files(ext: &str) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(envoy::repo_root().join("envoy"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(ext))
        .collect();
    files.sort();
    files
}

#[test]
fn every_shipped_bootstrap_validates_as_shipped() {
    let shipped = files(".yaml");
    assert_eq!(shipped, ["demo.yaml", "multi-instance.yaml", "openai.yaml"]);
    for file in &shipped {
        let text = std::fs::read_to_string(envoy::repo_root().join("envoy").join(file)).unwrap();
        assert!(!text.contains("{{"), "{file} has a placeholder");
        validate_with_env(&text, KEYS).unwrap_or_else(|e| panic!("{file}: {e}"));
        // No key in any bootstrap: keys come from the environment.
        for line in text.lines().filter(|l| l.contains("Authorization")) {
            assert!(line.contains("$env://"), "{file}: {line}");
        }
        assert!(!text.contains("sk-"), "{file} holds something like a key");
    }
}

#[test]
fn the_templates_render_and_validate() {
    assert_eq!(
        files(".tmpl"),
        [
            "bench.yaml.tmpl",
            "integration-two-listeners.yaml.tmpl",
            "integration.yaml.tmpl"
        ]
    );
    let wasm = yaml_str(&envoy::wasm_path().unwrap().to_string_lossy());
    let config = yaml_str(&json!({"provider": "openai"}).to_string());
    let common = |extra: Vec<(&'static str, String)>| {
        let mut v = vec![
            ("WASM", wasm.clone()),
            ("PLUGIN_CONFIG", config.clone()),
            ("CLUSTERS", "[]".to_string()),
            ("ACCESS_LOG", yaml_str("/dev/null")),
            ("CLUSTER_HEADER", yaml_str("x-ai-proxy-cluster")),
            ("PRE_FILTERS", String::new()),
        ];
        v.extend(extra);
        v
    };
    validate(&render("integration.yaml.tmpl", &common(vec![])).unwrap()).unwrap();
    let b = yaml_str(&json!({"provider": "deepseek"}).to_string());
    let two = render(
        "integration-two-listeners.yaml.tmpl",
        &common(vec![("PLUGIN_CONFIG_B", b)]),
    )
    .unwrap();
    validate(&two).unwrap();
    let bench = render(
        "bench.yaml.tmpl",
        &[("FILTERS", String::new()), ("CLUSTERS", "[]".to_string())],
    )
    .unwrap();
    validate(&bench).unwrap();
}

#[test]
fn validation_catches_a_broken_bootstrap() {
    let err = validate("static_resources: {listeners: [{name: x}]}").unwrap_err();
    assert!(err.to_string().contains("validate"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_bootstrap_serves_chat_and_streams_through_the_mock() {
    let mock = MockLlm::start().await.unwrap();
    let text = shipped("demo.yaml", 0, 0, mock.port()).unwrap();
    let envoy = Envoy::with_bootstrap(text).start().await.unwrap();

    let resp = envoy
        .chat(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["model"], "gpt-4o-mini");
    let r = mock.last().unwrap();
    assert_eq!(r.header("host"), Some("api.openai.com"));
    assert_eq!(
        r.header("authorization"),
        Some("Bearer demo-key-not-secret")
    );

    let resp = envoy
        .chat(&json!({"stream": true, "messages": [{"role": "user", "content": "hello"}]}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let text = resp.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");

    // A body between Envoy's default 1 MiB buffer and the filter's 16 MiB limit goes
    // through; one over the limit, chunked, gets the filter's JSON 413, not Envoy's.
    let big = json!({"messages": [{"role": "user", "content": "x".repeat(2 << 20)}]});
    assert_eq!(envoy.chat(&big).await.unwrap().status(), 200);
    let huge = "y".repeat(17 << 20);
    let stream = futures_util_stream(huge.into_bytes());
    let resp = envoy
        .client()
        .post(envoy.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "request_too_large");
}

/// A body sent in 64 KiB chunks, without a content-length.
fn futures_util_stream(
    bytes: Vec<u8>,
) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(64 << 10).map(|c| Ok(c.to_vec())).collect();
    integration::mock::iter_stream(chunks)
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_stay_in_the_environment_not_in_config_dump() {
    let text = shipped("openai.yaml", 0, 0, 0).unwrap();
    let (name, key) = KEYS[0];
    let envoy = Envoy::with_bootstrap(text)
        .env(name, key)
        .start()
        .await
        .unwrap();
    let dump = envoy.admin("/config_dump").await;
    assert!(
        dump.contains("$env://OPENAI_API_KEY"),
        "the reference is there"
    );
    assert!(!dump.contains(key), "the key is not");
    assert!(!envoy.log().contains(key), "nor in Envoy's log");

    // Without the variable the configuration is refused, naming it (never a value).
    let text = shipped("openai.yaml", 0, 0, 0).unwrap();
    let log = Envoy::with_bootstrap(text).start_expecting_exit().unwrap();
    assert!(log.contains("OPENAI_API_KEY"), "{log}");
}
