//! The official `openai` SDKs, unchanged, as clients through the real Envoy and the filter:
//! Python (integration/python/openai_client.py) and npm (integration/node/openai_client.mjs):
//! chat, streaming, embeddings, errors.

use std::process::Command;
use std::time::Duration;

use integration::clients::python;
use integration::envoy::repo_root;
use integration::windows::clear_of_window_end;
use integration::{Envoy, MockLlm};
use serde_json::json;

/// The two Envoys the SDK checks use: one provider in front of the mock, and provider
/// deepseek (no embeddings) with a 1-token limit and a recognisable message.
async fn envoys(mock: &MockLlm, auth: bool) -> (Envoy, Envoy) {
    let mut open = json!({"provider": "openai"});
    if auth {
        open["auth"] = json!({"header": {"Authorization": "Bearer sk-gateway"}});
    }
    let open = Envoy::with_config(&open)
        .cluster("openai", mock.port())
        .start()
        .await
        .unwrap();
    let limited = Envoy::with_config(&json!({
        "provider": "deepseek",
        "rate_limiting": {"limit": 1, "time_window": 3600, "rejected_msg": "quota exhausted for the demo"}
    }))
    .cluster("deepseek", mock.port())
    .start()
    .await
    .unwrap();
    clear_of_window_end(3600, Duration::from_secs(120)).await;
    (open, limited)
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_python_sdk_works_unchanged() {
    let mock = MockLlm::start().await.unwrap();
    let (open, limited) = envoys(&mock, true).await;

    let base = open.url("");
    let tight = limited.url("");
    let script = repo_root().join("integration/python/openai_client.py");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .arg(script)
            .arg(base)
            .arg(tight)
            .output()
    })
    .await
    .unwrap()
    .expect("run python (scripts/test.sh installs the openai SDK into .venv)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the SDK checks failed:\n{stdout}");
    assert!(stdout.contains("6 passed, 0 failed"), "{stdout}");
    // The SDK's own key stayed with the gateway: the provider got the configured one.
    assert!(mock
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/v1/"))
        .all(|r| r.header("authorization") == Some("Bearer sk-gateway")));
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_npm_sdk_works_unchanged() {
    let mock = MockLlm::start().await.unwrap();
    let (open, limited) = envoys(&mock, false).await;
    let (base, tight) = (open.url(""), limited.url(""));
    let script = repo_root().join("integration/node/openai_client.mjs");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(std::env::var("NODE").unwrap_or_else(|_| "node".into()))
            .arg(script)
            .arg(base)
            .arg(tight)
            .output()
    })
    .await
    .unwrap()
    .expect("run node (scripts/test.sh installs the openai npm package)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the npm SDK checks failed:\n{stdout}");
    assert!(stdout.contains("6 passed, 0 failed"), "{stdout}");
}
