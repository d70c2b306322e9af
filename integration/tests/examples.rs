//! The worked examples: each generated bootstrap in `envoy/examples/` is up to date with its
//! plugin configuration in `examples/` (so its clusters are the generated ones), passes
//! `envoy --mode validate`, and, with its clusters pointed at mocks, does what it says.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use integration::bootstrap::{generate, Options};
use integration::envoy::{repo_root, validate, wasm_path};
use integration::examples::{Example, EXAMPLES};
use integration::{Envoy, MockLlm, Reply};
use serde_json::{json, Value};

fn example(name: &str) -> &'static Example {
    EXAMPLES.iter().find(|e| e.name == name).unwrap()
}

/// The example through Envoy, each of its clusters sent to a mock (in cluster order).
async fn run(name: &str, access_log: Option<String>) -> (Envoy, Vec<MockLlm>) {
    let ex = example(name);
    let config = ex.plugin_config().unwrap();
    let parsed = envoy_ai_proxy::config::parse(config.to_string().as_bytes()).unwrap();
    let specs = envoy_ai_proxy::clusters::cluster_specs(&parsed).unwrap();
    let mut mocks = Vec::new();
    let mut local = BTreeMap::new();
    for s in &specs {
        let m = MockLlm::start().await.unwrap();
        local.insert(s.name.clone(), m.port());
        mocks.push(m);
    }
    let opts = Options {
        wasm: wasm_path().unwrap().to_string_lossy().into_owned(),
        listen_address: "127.0.0.1".into(),
        listen_port: 0,
        admin_port: 0,
        local_clusters: local,
        access_log,
        ..ex.options()
    };
    let envoy = Envoy::with_bootstrap(generate(&config, &opts).unwrap())
        .start()
        .await
        .unwrap();
    (envoy, mocks)
}

fn chat() -> Value {
    json!({"messages": [{"role": "user", "content": "What is 1+1?"}]})
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
        validate(&text).unwrap_or_else(|e| panic!("{}: {e}", ex.name));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn load_balancing_8_2() {
    let (envoy, m) = run("load-balancing-8-2", None).await;
    for _ in 0..10 {
        assert_eq!(envoy.chat(&chat()).await.unwrap().status(), 200);
    }
    assert_eq!((m[0].count(), m[1].count()), (8, 2));
    let (openai, deepseek) = (m[0].last().unwrap(), m[1].last().unwrap());
    assert_eq!(
        (openai.path.as_str(), openai.header("host")),
        ("/v1/chat/completions", Some("api.openai.com"))
    );
    assert_eq!(
        (deepseek.path.as_str(), deepseek.header("host")),
        ("/chat/completions", Some("api.deepseek.com"))
    );
    assert_eq!(deepseek.json()["model"], "deepseek-chat");
}

#[tokio::test(flavor = "multi_thread")]
async fn priority_with_rate_limit_fallback() {
    let (envoy, m) = run("priority-rate-limit-fallback", None).await;
    for mock in &m {
        mock.set_default(Reply::default().usage(23, 8));
    }
    for _ in 0..3 {
        assert_eq!(envoy.chat(&chat()).await.unwrap().status(), 200);
    }
    // 31 tokens spend OpenAI's 10: the next requests go to DeepSeek.
    assert_eq!((m[0].count(), m[1].count()), (1, 2));
}

#[tokio::test(flavor = "multi_thread")]
async fn per_consumer_limits() {
    let (envoy, m) = run("consumer-rate-limits", None).await;
    for mock in &m {
        mock.set_default(Reply::default().usage(23, 8));
    }
    let send = |key: Option<&'static str>| {
        let mut r = envoy
            .client()
            .post(envoy.url("/anything"))
            .header("content-type", "application/json")
            .body(chat().to_string());
        if let Some(k) = key {
            r = r.header("apikey", k);
        }
        r.send()
    };
    assert_eq!(send(None).await.unwrap().status(), 401);
    let model = |r: reqwest::Response| async move {
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()["model"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(model(send(Some("john-key")).await.unwrap()).await, "gpt-4");
    assert_eq!(
        model(send(Some("jane-key")).await.unwrap()).await,
        "deepseek-chat"
    );
    assert_eq!(
        model(send(Some("john-key")).await.unwrap()).await,
        "deepseek-chat"
    );
    assert_eq!(model(send(Some("jane-key")).await.unwrap()).await, "gpt-4");
}

#[tokio::test(flavor = "multi_thread")]
async fn max_tokens_per_instance() {
    let (envoy, m) = run("max-tokens-per-instance", None).await;
    for _ in 0..2 {
        assert_eq!(envoy.chat(&chat()).await.unwrap().status(), 200);
    }
    assert_eq!(m[0].last().unwrap().json()["max_tokens"], 50);
    assert_eq!(m[1].last().unwrap().json()["max_tokens"], 100);
}

#[tokio::test(flavor = "multi_thread")]
async fn embeddings_on_openai_and_azure() {
    let (envoy, m) = run("embeddings", None).await;
    for _ in 0..2 {
        let resp = envoy
            .post_json("/embeddings", &json!({"input": "hello world"}))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["object"], "list");
    }
    let (openai, azure) = (m[0].last().unwrap(), m[1].last().unwrap());
    assert_eq!(openai.path, "/v1/embeddings");
    assert_eq!(
        azure.path,
        "/openai/deployments/text-embedding-3-small/embeddings"
    );
    assert_eq!(azure.query.as_deref(), Some("api-version=2023-05-15"));
    assert_eq!(azure.header("api-key"), Some("your-azure-key"));
    assert_eq!(azure.header("authorization"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn health_checks_take_the_failing_instance_out() {
    let (envoy, m) = run("health-checks", None).await;
    // Instance 2 is probed at its path, with its host and key.
    let start = Instant::now();
    while m[1].requests_to("/v1/models").is_empty() {
        assert!(start.elapsed() < Duration::from_secs(5), "no probe");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let probe = m[1].requests_to("/v1/models").pop().unwrap();
    assert_eq!(probe.header("host"), Some("llm-2.example.com"));
    assert_eq!(probe.header("authorization"), Some("Bearer your-llm-key"));

    m[1].set_path_reply("/v1/models", Reply::status(503));
    // 3 failed probes, 2 s apart while healthy: wait for the health gauge.
    let gauge = "aiproxy_healthy{aiproxy_instance=\"llm-instance-2\"} 0";
    let start = Instant::now();
    loop {
        if envoy.prometheus().await.contains(gauge) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(12),
            "instance 2 never went unhealthy"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every worker's next pick reads the new state.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = m[1]
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .count();
    for _ in 0..6 {
        assert_eq!(envoy.chat(&chat()).await.unwrap().status(), 200);
    }
    let after = m[1]
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(after, before, "the unhealthy instance gets no requests");
}

#[tokio::test(flavor = "multi_thread")]
async fn access_log_and_summary() {
    let dir = std::env::temp_dir().join(format!("ai-proxy-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("access.log");
    let (envoy, m) = run("access-log", Some(path.to_string_lossy().into_owned())).await;
    m[0].set_default(Reply::default().usage(23, 8));
    assert_eq!(envoy.chat(&chat()).await.unwrap().status(), 200);
    let start = Instant::now();
    let line: Value = loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if let Some(l) = text.lines().next() {
            break serde_json::from_str(l).unwrap();
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no access log line"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(line["request_type"], "ai_chat");
    assert_eq!(line["llm_model"], "gpt-4");
    assert_eq!(line["llm_prompt_tokens"], "23");
    assert_eq!(line["llm_completion_tokens"], "8");
    assert_eq!(line["llm_instance"], "openai");
    assert!(line["llm_time_to_first_token"]
        .as_str()
        .unwrap()
        .parse::<u64>()
        .is_ok());
    let start = Instant::now();
    while !envoy.log().contains("envoy-ai-proxy summary {") {
        assert!(start.elapsed() < Duration::from_secs(5), "no summary line");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}
