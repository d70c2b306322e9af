//! The worked examples: each generated bootstrap in `envoy/examples/` is up to date with its
//! plugin configuration in `examples/` (so its clusters are the generated ones), passes
//! `envoy --mode validate`, and, with its clusters pointed at mocks, does what it says.

use integration::envoy::{repo_root, validate_with_env, wasm_path};
use integration::examples::{Example, EXAMPLES, TEST_ENV};
use integration::scenarios::{self, start_with_mocks};
use integration::{Envoy, MockLlm};

fn example(name: &str) -> &'static Example {
    EXAMPLES.iter().find(|e| e.name == name).unwrap()
}

/// The example through Envoy, each of its clusters sent to a mock (in cluster order).
async fn run(name: &str, access_log: Option<String>) -> (Envoy, Vec<MockLlm>) {
    let ex = example(name);
    let opts = integration::bootstrap::Options {
        access_log,
        ..ex.options()
    };
    start_with_mocks(&ex.plugin_config().unwrap(), opts)
        .await
        .unwrap()
}

#[test]
fn bootstraps_are_generated_from_the_examples() {
    let mut on_disk: Vec<String> = std::fs::read_dir(repo_root().join("envoy/examples"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = EXAMPLES
        .iter()
        .map(|e| format!("{}.yaml", e.name))
        .collect();
    listed.sort();
    assert_eq!(
        on_disk, listed,
        "envoy/examples/ and the EXAMPLES table differ"
    );
    for ex in EXAMPLES {
        let committed = std::fs::read_to_string(ex.bootstrap_path()).unwrap();
        assert_eq!(
            committed,
            ex.generate().unwrap(),
            "envoy/examples/{}.yaml is stale: run `cargo run -p integration --bin envoy-config -- --write-examples`",
            ex.name
        );
    }
}

#[test]
fn every_example_bootstrap_validates() {
    let wasm = wasm_path().unwrap().to_string_lossy().into_owned();
    for ex in EXAMPLES {
        let text = std::fs::read_to_string(ex.bootstrap_path()).unwrap();
        let text = text.replace("target/wasm32-wasip1/release/envoy_ai_proxy.wasm", &wasm);
        validate_with_env(&text, TEST_ENV).unwrap_or_else(|e| panic!("{}: {e}", ex.name));
    }
}

const CHAT: &str = "/v1/chat/completions";

#[tokio::test(flavor = "multi_thread")]
async fn load_balancing_8_2() {
    let (envoy, m) = run("load-balancing-8-2", None).await;
    scenarios::split_8_2(&envoy, &m, CHAT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn priority_with_rate_limit_fallback() {
    let (envoy, m) = run("priority-rate-limit-fallback", None).await;
    scenarios::priority_rate_limit_fallback(&envoy, &m, CHAT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn per_consumer_limits() {
    let (envoy, m) = run("consumer-rate-limits", None).await;
    scenarios::consumer_limits(&envoy, &m, "/anything").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn max_tokens_per_instance() {
    let (envoy, m) = run("max-tokens-per-instance", None).await;
    scenarios::max_tokens(&envoy, &m, CHAT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn embeddings_on_openai_and_azure() {
    let (envoy, m) = run("embeddings", None).await;
    let (_, azure) = scenarios::embeddings(&envoy, &m, "/embeddings").await;
    assert_eq!(azure.header("api-key"), Some("your-azure-key"));
    assert_eq!(azure.header("authorization"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn health_checks_take_the_failing_instance_out() {
    let (envoy, m) = run("health-checks", None).await;
    scenarios::health_checks(
        &envoy,
        &m,
        CHAT,
        "/v1/models",
        "llm-2.example.com",
        "Bearer your-llm-key",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn access_log_and_summary() {
    let dir = std::env::temp_dir().join(format!("ai-proxy-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("access.log");
    let (envoy, m) = run("access-log", Some(path.to_string_lossy().into_owned())).await;
    let line = scenarios::access_log(&envoy, &m, CHAT, &path).await;
    assert_eq!(line["llm_instance"], "openai");
    let start = std::time::Instant::now();
    while !envoy.log().contains("envoy-ai-proxy summary {") {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(5),
            "no summary line"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}
