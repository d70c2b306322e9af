//! The deployment set-ups (`deploy/`, `docker-compose.yaml`, docs/deploy.md): the manifests
//! are well formed and their plugin configurations are accepted by the filter's parser, and
//! the Docker Compose bootstrap validates and, run natively (CI has no Docker engine), serves
//! chat and streams through the mock.

use std::path::PathBuf;
use std::process::Command;

use integration::envoy::{repo_root, validate, wasm_path, yaml_str, Envoy};
use integration::MockLlm;
use serde_json::{json, Value};

const COMPOSE_BOOTSTRAP: &str = "deploy/compose/envoy.yaml";
/// Where docker-compose.yaml mounts the module.
const COMPOSE_WASM: &str = "/etc/envoy/envoy_ai_proxy.wasm";

/// `PYTHON`, else the project's virtualenv (it has PyYAML).
fn python() -> PathBuf {
    std::env::var_os("PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv/bin/python"))
}

/// `text` with `from`, which must occur exactly once, replaced by `to`: a test that would
/// silently stop replacing after an edit of the bootstrap fails instead.
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "`{from}` should occur exactly once in {COMPOSE_BOOTSTRAP}"
    );
    text.replacen(from, to, 1)
}

/// The Compose bootstrap with the module at its local path.
fn compose_bootstrap() -> String {
    let text = std::fs::read_to_string(repo_root().join(COMPOSE_BOOTSTRAP)).unwrap();
    let wasm = yaml_str(&wasm_path().unwrap().to_string_lossy());
    replace_once(&text, COMPOSE_WASM, &wasm)
}

/// A fresh directory for this test process, removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(name: &str) -> ScratchDir {
        let dir = std::env::temp_dir().join(format!("ai-proxy-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        ScratchDir(dir)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn manifests_are_well_formed() {
    let out = ScratchDir::new("manifests");
    let run = Command::new(python())
        .arg(repo_root().join("integration/python/check_manifests.py"))
        .arg(&out.0)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("running {} (set PYTHON): {e}", python().display()));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "check_manifests.py failed:\n{report}");

    let mut configs: Vec<(String, Vec<String>)> = Vec::new();
    for entry in std::fs::read_dir(&out.0).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).unwrap();
        let config = envoy_ai_proxy::config::parse(&bytes)
            .unwrap_or_else(|e| panic!("{name}: the filter refuses it: {e}"));
        let clusters = config.instances.iter().map(|i| i.cluster.clone()).collect();
        configs.push((name, clusters));
    }
    configs.sort();
    let mesh = vec![
        "outbound|443||api.openai.com".to_string(),
        "outbound|443||api.deepseek.com".to_string(),
    ];
    assert_eq!(
        configs,
        [
            (
                "bootstrap-compose-envoy.json".to_string(),
                vec!["mock".to_string()]
            ),
            (
                "istio-envoyfilter-envoy-ai-proxy.json".to_string(),
                mesh.clone()
            ),
            ("istio-wasmplugin-envoy-ai-proxy.json".to_string(), mesh),
        ],
        "{report}"
    );
}

#[test]
fn compose_bootstrap_validates() {
    validate(&compose_bootstrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn compose_scenario_runs_natively() {
    let mock = MockLlm::start().await.unwrap();
    // What Docker provides, natively: the mock on the loopback instead of the service `mock`,
    // and free ports (the harness reads them from the admin API) instead of fixed ones.
    let mut text = compose_bootstrap();
    text = replace_once(
        &text,
        "address: mock, port_value: 8081",
        &format!("address: 127.0.0.1, port_value: {}", mock.port()),
    );
    for port in [10000, 9901] {
        text = replace_once(
            &text,
            &format!("address: 0.0.0.0, port_value: {port}"),
            "address: 127.0.0.1, port_value: 0",
        );
    }
    let envoy = Envoy::with_bootstrap(text).start().await.unwrap();

    let resp = envoy
        .chat(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion", "{body}");
    assert_eq!(body["model"], "gpt-4o-mini", "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"], "Hello from the mock.",
        "{body}"
    );
    let r = mock.last().unwrap();
    assert_eq!(r.path, "/v1/chat/completions");
    assert_eq!(r.header("host"), Some("api.openai.com"));
    assert_eq!(
        r.header("authorization"),
        Some("Bearer demo-key-not-secret")
    );
    assert_eq!(r.header("x-ai-proxy-cluster"), None);

    let resp = envoy
        .chat(&json!({"model": "gpt-4o-mini", "stream": true,
                      "messages": [{"role": "user", "content": "hello"}]}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let text = resp.text().await.unwrap();
    assert!(text.contains("chat.completion.chunk"), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert_eq!(mock.count(), 2);
    assert_eq!(
        mock.last().unwrap().header("authorization"),
        Some("Bearer demo-key-not-secret")
    );
}
