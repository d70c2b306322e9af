//! The shipped bootstraps: each passes `envoy --mode validate`, and the demo that
//! `scripts/run.sh` starts really answers.

use integration::demo::{self, Ports};
use integration::envoy::{self, render, validate, yaml_str};
use integration::{Envoy, MockLlm};
use serde_json::{json, Value};

#[test]
fn every_bootstrap_validates() {
    let wasm = yaml_str(&envoy::wasm_path().unwrap().to_string_lossy());
    let integration = render(
        "integration.yaml",
        &[
            ("WASM", wasm.clone()),
            (
                "PLUGIN_CONFIG",
                yaml_str(&json!({"provider": "openai"}).to_string()),
            ),
            ("CLUSTERS", "[]".to_string()),
            ("ACCESS_LOG", yaml_str("/dev/null")),
            ("CLUSTER_HEADER", yaml_str("x-ai-proxy-cluster")),
            ("PRE_FILTERS", String::new()),
        ],
    )
    .unwrap();
    validate(&integration).unwrap();
    let two = render(
        "integration-two-listeners.yaml",
        &[
            ("WASM", wasm.clone()),
            (
                "PLUGIN_CONFIG",
                yaml_str(&json!({"provider": "openai"}).to_string()),
            ),
            (
                "PLUGIN_CONFIG_B",
                yaml_str(&json!({"provider": "deepseek"}).to_string()),
            ),
            ("CLUSTERS", "[]".to_string()),
            ("ACCESS_LOG", yaml_str("/dev/null")),
            ("CLUSTER_HEADER", yaml_str("x-ai-proxy-cluster")),
            ("PRE_FILTERS", String::new()),
        ],
    )
    .unwrap();
    validate(&two).unwrap();

    for key in [None, Some("sk-fake-for-validation")] {
        let cfg = demo::plugin_config(key);
        validate(&demo::bootstrap(Ports::default(), &cfg).unwrap()).unwrap();
    }

    let multi = render(
        "multi-instance.yaml",
        &[
            ("WASM", wasm.clone()),
            ("LISTEN_PORT", "10000".into()),
            ("ADMIN_PORT", "9901".into()),
            ("OPENAI_API_KEY", "sk-test".into()),
            ("DEEPSEEK_API_KEY", "sk-test".into()),
        ],
    )
    .unwrap();
    validate(&multi).unwrap();

    let bench = render(
        "bench.yaml",
        &[("FILTERS", String::new()), ("CLUSTERS", "[]".to_string())],
    )
    .unwrap();
    validate(&bench).unwrap();

    // Every file in envoy/ is covered above: a new bootstrap needs a line here.
    let mut files: Vec<String> = std::fs::read_dir(envoy::repo_root().join("envoy"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "bench.yaml",
            "demo.yaml",
            "integration-two-listeners.yaml",
            "integration.yaml",
            "multi-instance.yaml"
        ]
    );
}

#[test]
fn validation_catches_a_broken_bootstrap() {
    let err = validate("static_resources: {listeners: [{name: x}]}").unwrap_err();
    assert!(err.to_string().contains("validate"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_bootstrap_serves_chat_and_streams_through_the_mock() {
    let mock = MockLlm::start().await.unwrap();
    let ports = Ports {
        listen: 0,
        admin: 0,
        mock: mock.port(),
    };
    let text = demo::bootstrap(ports, &demo::plugin_config(None)).unwrap();
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
}
