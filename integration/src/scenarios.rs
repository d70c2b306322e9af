//! What APISIX's worked examples promise, as checks on a running Envoy whose clusters are
//! mock providers. Shared by the tests of the plugin-configuration examples
//! (`tests/examples.rs`) and of the APISIX objects imported as they are (`tests/apisix.rs`):
//! the same promise, whichever way the bootstrap was made. `path` is where the client posts
//! (an imported route only takes its own `uri`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::bootstrap::{generate, Options};
use crate::envoy::wasm_path;
use crate::{Envoy, MockLlm, Recorded, Reply};

/// Envoy on the bootstrap `generate` makes of `config` and `opts`, on free local ports, each
/// cluster sent to its own mock (in cluster order).
pub async fn start_with_mocks(
    config: &Value,
    opts: Options,
) -> anyhow::Result<(Envoy, Vec<MockLlm>)> {
    let parsed = envoy_ai_proxy::config::parse(config.to_string().as_bytes())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let specs = envoy_ai_proxy::clusters::cluster_specs(&parsed).map_err(|e| anyhow::anyhow!(e))?;
    let mut mocks = Vec::new();
    let mut local = BTreeMap::new();
    for s in &specs {
        let m = MockLlm::start().await?;
        local.insert(s.name.clone(), m.port());
        mocks.push(m);
    }
    let opts = Options {
        wasm: wasm_path()?.to_string_lossy().into_owned(),
        listen_address: "127.0.0.1".into(),
        listen_port: 0,
        admin_port: 0,
        local_clusters: local,
        ..opts
    };
    let mut builder = Envoy::with_bootstrap(generate(config, &opts)?);
    for (name, value) in crate::examples::TEST_ENV {
        builder = builder.env(name, value);
    }
    let envoy = builder.start().await?;
    Ok((envoy, mocks))
}

/// The chat body of APISIX's examples.
pub fn chat() -> Value {
    json!({"messages": [
        {"role": "system", "content": "You are a mathematician"},
        {"role": "user", "content": "What is 1+1?"}
    ]})
}

/// A chat to `path`, with an `apikey` header when `key` is given.
pub async fn send(envoy: &Envoy, path: &str, key: Option<&str>) -> reqwest::Response {
    let mut r = envoy
        .client()
        .post(envoy.url(path))
        .header("content-type", "application/json")
        .body(chat().to_string());
    if let Some(k) = key {
        r = r.header("apikey", k);
    }
    r.send().await.expect("request to Envoy")
}

async fn model(r: reqwest::Response) -> String {
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("JSON answer");
    v["model"].as_str().unwrap_or_default().to_string()
}

/// OpenAI 8, DeepSeek 2 of 10 requests, each with its host, path and model.
pub async fn split_8_2(envoy: &Envoy, m: &[MockLlm], path: &str) {
    for _ in 0..10 {
        assert_eq!(send(envoy, path, None).await.status(), 200);
    }
    assert_eq!((m[0].count(), m[1].count()), (8, 2));
    let (openai, deepseek) = (m[0].last().unwrap(), m[1].last().unwrap());
    assert_eq!(
        (openai.path.as_str(), openai.header("host")),
        ("/v1/chat/completions", Some("api.openai.com"))
    );
    assert_eq!(openai.json()["model"], "gpt-4");
    assert_eq!(
        (deepseek.path.as_str(), deepseek.header("host")),
        ("/chat/completions", Some("api.deepseek.com"))
    );
    assert_eq!(deepseek.json()["model"], "deepseek-chat");
}

/// OpenAI (priority 1) until its 10 tokens a minute are spent, then DeepSeek.
pub async fn priority_rate_limit_fallback(envoy: &Envoy, m: &[MockLlm], path: &str) {
    crate::windows::clear_of_window_end(60, Duration::from_secs(10)).await;
    for mock in m {
        mock.set_default(Reply::default().usage(23, 8));
    }
    assert_eq!(model(send(envoy, path, None).await).await, "gpt-4");
    // 31 tokens spend OpenAI's 10: the next requests go to DeepSeek.
    for _ in 0..2 {
        assert_eq!(model(send(envoy, path, None).await).await, "deepseek-chat");
    }
    assert_eq!((m[0].count(), m[1].count()), (1, 2));
}

/// Budgets per consumer (keys `john-key`, `jane-key` in header `apikey`): no key or a wrong
/// key 401; johndoe goes OpenAI then DeepSeek, janedoe DeepSeek then OpenAI.
pub async fn consumer_limits(envoy: &Envoy, m: &[MockLlm], path: &str) {
    crate::windows::clear_of_window_end(60, Duration::from_secs(10)).await;
    for mock in m {
        mock.set_default(Reply::default().usage(23, 8));
    }
    assert_eq!(send(envoy, path, None).await.status(), 401);
    assert_eq!(send(envoy, path, Some("jim-key")).await.status(), 401);
    assert_eq!(m[0].count() + m[1].count(), 0, "refused requests went on");
    let john = || send(envoy, path, Some("john-key"));
    let jane = || send(envoy, path, Some("jane-key"));
    assert_eq!(model(john().await).await, "gpt-4");
    assert_eq!(model(jane().await).await, "deepseek-chat");
    assert_eq!(model(john().await).await, "deepseek-chat");
    assert_eq!(model(jane().await).await, "gpt-4");
    for r in m[0].requests().iter().chain(&m[1].requests()) {
        assert_eq!(
            r.header("apikey"),
            None,
            "the gateway key reached a provider"
        );
    }
}

/// `max_tokens` 50 on OpenAI, 100 on DeepSeek.
pub async fn max_tokens(envoy: &Envoy, m: &[MockLlm], path: &str) {
    for _ in 0..2 {
        assert_eq!(send(envoy, path, None).await.status(), 200);
    }
    assert_eq!(m[0].last().unwrap().json()["max_tokens"], 50);
    assert_eq!(m[1].last().unwrap().json()["max_tokens"], 100);
}

/// Embeddings on OpenAI and Azure OpenAI: two requests, one each; returns what each got.
pub async fn embeddings(envoy: &Envoy, m: &[MockLlm], path: &str) -> (Recorded, Recorded) {
    for _ in 0..2 {
        let resp = envoy
            .post_json(path, &json!({"input": "hello world"}))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["object"], "list");
    }
    let (openai, azure) = (m[0].last().unwrap(), m[1].last().unwrap());
    assert_eq!(openai.path, "/v1/embeddings");
    assert_eq!(openai.json()["model"], "text-embedding-3-small");
    assert_eq!(
        azure.path,
        "/openai/deployments/text-embedding-3-small/embeddings"
    );
    assert_eq!(azure.query.as_deref(), Some("api-version=2023-05-15"));
    (openai, azure)
}

/// The active health check of instance 2 (mock `m[1]`): probes of `probe_path` carry its
/// host and key; once they fail, the instance gets no requests.
pub async fn health_checks(
    envoy: &Envoy,
    m: &[MockLlm],
    path: &str,
    probe_path: &str,
    host: &str,
    authorization: &str,
) {
    let start = Instant::now();
    while m[1].requests_to(probe_path).is_empty() {
        assert!(start.elapsed() < Duration::from_secs(5), "no probe");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let probe = m[1].requests_to(probe_path).pop().unwrap();
    assert_eq!(probe.header("host"), Some(host));
    assert_eq!(probe.header("authorization"), Some(authorization));

    m[1].set_path_reply(probe_path, Reply::status(503));
    // 3 failed probes, 2 s apart while healthy: wait for the health gauge.
    let gauge = "aiproxy_healthy{aiproxy_instance=\"llm-instance-2\"} 0";
    let start = Instant::now();
    while !envoy.prometheus().await.contains(gauge) {
        assert!(
            start.elapsed() < Duration::from_secs(12),
            "instance 2 never went unhealthy"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every worker's next pick reads the new state.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let posts = || {
        m[1].requests()
            .iter()
            .filter(|r| r.method == "POST")
            .count()
    };
    let before = posts();
    for _ in 0..6 {
        assert_eq!(send(envoy, path, None).await.status(), 200);
    }
    assert_eq!(posts(), before, "the unhealthy instance gets no requests");
}

/// One chat (23 + 8 tokens) and its access-log line in `log`: APISIX's values (request
/// type, time to first token, model, prompt and completion tokens) and the instance.
pub async fn access_log(envoy: &Envoy, m: &[MockLlm], path: &str, log: &Path) -> Value {
    for mock in m {
        mock.set_default(Reply::default().usage(23, 8));
    }
    assert_eq!(send(envoy, path, None).await.status(), 200);
    let start = Instant::now();
    let line: Value = loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
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
    assert_eq!(line["llm_api"], "chat");
    assert_eq!(line["llm_client_path"], path);
    assert_eq!(line["path"], path, "the client's path, not the provider's");
    assert_eq!(line["llm_error_code"], "-");
    assert_eq!(line["llm_model"], "gpt-4");
    assert_eq!(line["llm_prompt_tokens"], "23");
    assert_eq!(line["llm_completion_tokens"], "8");
    assert!(line["llm_time_to_first_token"]
        .as_str()
        .unwrap()
        .parse::<u64>()
        .is_ok());
    line
}
