//! Many-instance mode (APISIX `ai-proxy-multi`): priority groups, weighted round robin,
//! consistent hashing, and fallback, through the real Envoy and the built `.wasm`.

use std::time::Duration;

use integration::{Envoy, MockLlm, Reply};
use serde_json::{json, Value};

fn hello() -> Value {
    json!({"model": "client-model", "messages": [{"role": "user", "content": "hi"}]})
}

/// An `openai-compatible` instance named `name`, routed to cluster `name`.
fn instance(name: &str, extra: Value) -> Value {
    let mut v = json!({
        "name": name,
        "provider": "openai-compatible",
        "override": {"endpoint": format!("http://{name}.internal")},
        "auth": {"header": {"Authorization": format!("Bearer key-{name}")}},
        "options": {"model": format!("model-{name}")}
    });
    if let (Some(obj), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
        for (k, val) in extra {
            obj.insert(k.clone(), val.clone());
        }
    }
    v
}

async fn mocks(n: usize) -> Vec<MockLlm> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(MockLlm::start().await.unwrap());
    }
    out
}

/// Envoy with `config`, one cluster per (name, mock).
async fn envoy_with(config: Value, clusters: &[(&str, &MockLlm)]) -> Envoy {
    let mut b = Envoy::with_config(&config);
    for (name, mock) in clusters {
        b = b.cluster(name, mock.port());
    }
    b.start().await.unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread")]
async fn weights_8_and_2_split_exactly_on_one_worker() {
    let m = mocks(2).await;
    let envoy = envoy_with(
        json!({"instances": [instance("a", json!({"weight": 8})), instance("b", json!({"weight": 2}))]}),
        &[("a", &m[0]), ("b", &m[1])],
    )
    .await;
    for _ in 0..10 {
        assert_eq!(envoy.chat(&hello()).await.unwrap().status(), 200);
    }
    assert_eq!((m[0].count(), m[1].count()), (8, 2));
    assert_eq!(m[0].last().unwrap().json()["model"], "model-a");
    assert_eq!(m[1].last().unwrap().json()["model"], "model-b");
}

#[tokio::test(flavor = "multi_thread")]
async fn weights_8_and_2_hold_across_two_workers() {
    let m = mocks(2).await;
    let mut b = Envoy::with_config(
        &json!({"instances": [instance("a", json!({"weight": 8})), instance("b", json!({"weight": 2}))]}),
    )
    .concurrency(2);
    b = b.cluster("a", m[0].port()).cluster("b", m[1].port());
    let envoy = b.start().await.unwrap();
    // Ten parallel clients, ten requests each, so both workers take traffic.
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let url = envoy.url("/v1/chat/completions");
        tasks.push(tokio::spawn(async move {
            let c = reqwest::Client::new();
            for _ in 0..10 {
                let r = c
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(hello().to_string())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Both workers took connections.
    let stats = envoy
        .admin("/stats?filter=worker_.\\.downstream_cx_total")
        .await;
    let per_worker: Vec<u64> = stats
        .lines()
        .filter_map(|l| l.rsplit(": ").next()?.parse().ok())
        .collect();
    assert!(
        per_worker.len() >= 2 && per_worker.iter().all(|&n| n > 0),
        "{stats}"
    );
    let (a, b) = (m[0].count(), m[1].count());
    assert_eq!(a + b, 100);
    assert!(
        (74..=86).contains(&a) && (14..=26).contains(&b),
        "a={a} b={b}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn priority_serves_high_first_and_falls_back_on_5xx() {
    let m = mocks(2).await;
    let envoy = envoy_with(
        json!({
            "fallback_strategy": "http_5xx",
            "instances": [instance("low", json!({"priority": 0})), instance("high", json!({"priority": 10}))]
        }),
        &[("low", &m[0]), ("high", &m[1])],
    )
    .await;
    for _ in 0..5 {
        assert_eq!(envoy.chat(&hello()).await.unwrap().status(), 200);
    }
    assert_eq!((m[0].count(), m[1].count()), (0, 5));

    m[1].set_default(Reply::status(503));
    for i in 1..=3 {
        let resp = envoy.chat(&hello()).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["model"], "model-low");
        assert_eq!(m[0].count(), i);
        // The failing upstream saw exactly one request per client request.
        assert_eq!(m[1].count(), 5 + i);
    }
    let log = envoy.access_log(8).await;
    let last = log.last().unwrap();
    assert_eq!(last["llm_instance"], "low");
    assert_eq!(last["llm_attempts"], "2");
    assert_eq!(last["llm_fallback_reason"], "http_503");
    assert_eq!(last["llm_model"], "model-low");
    assert_eq!(last["status"], 200);
    assert_eq!(log[0]["llm_instance"], "high");
    assert_eq!(log[0]["llm_attempts"], "1");
}

#[tokio::test(flavor = "multi_thread")]
async fn http_429_falls_back_only_when_asked() {
    let m = mocks(2).await;
    let instances = json!([
        instance("a", json!({"priority": 1})),
        instance("b", json!({}))
    ]);
    m[0].set_default(Reply::status(429).header("retry-after", "5"));

    let envoy = envoy_with(
        json!({"fallback_strategy": ["http_429"], "instances": instances}),
        &[("a", &m[0]), ("b", &m[1])],
    )
    .await;
    let resp = envoy.chat(&hello()).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(m[1].count(), 1);
    drop(envoy);

    let envoy = envoy_with(
        json!({"instances": instances}),
        &[("a", &m[0]), ("b", &m[1])],
    )
    .await;
    let resp = envoy.chat(&hello()).await.unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "5");
    assert_eq!(m[1].count(), 1, "b must not be tried without the strategy");

    // 5xx alone does not cover 429.
    drop(envoy);
    let envoy = envoy_with(
        json!({"fallback_strategy": "http_5xx", "instances": instances}),
        &[("a", &m[0]), ("b", &m[1])],
    )
    .await;
    assert_eq!(envoy.chat(&hello()).await.unwrap().status(), 429);
    assert_eq!(m[1].count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_server_behind_the_first_cluster() {
    let m = mocks(1).await;
    let mut b = Envoy::with_config(&json!({
        "fallback_strategy": "http_5xx",
        "instances": [instance("down", json!({"priority": 1})), instance("up", json!({}))]
    }));
    b = b.cluster("down", free_port()).cluster("up", m[0].port());
    let envoy = b.start().await.unwrap();
    let resp = envoy.chat(&hello()).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["model"], "model-up");
    let log = envoy.access_log(1).await;
    assert_eq!(log[0]["llm_fallback_reason"], "connect_failure");
    assert_eq!(log[0]["llm_instance"], "up");
}

#[tokio::test(flavor = "multi_thread")]
async fn listed_statuses_max_retries_and_slow_failures() {
    let m = mocks(2).await;
    let instances = json!([
        instance("a", json!({"priority": 1})),
        instance("b", json!({}))
    ]);

    // 401 is not retried by default, but is when listed.
    m[0].set_default(Reply::status(401));
    let envoy = envoy_with(
        json!({"fallback_http_statuses": [401], "instances": instances}),
        &[("a", &m[0]), ("b", &m[1])],
    )
    .await;
    assert_eq!(envoy.chat(&hello()).await.unwrap().status(), 200);
    assert_eq!(m[1].count(), 1);
    drop(envoy);

    // max_retries 0: the first error is the answer.
    m[0].set_default(Reply::status(500));
    let envoy = envoy_with(
        json!({"fallback_strategy": "http_5xx", "max_retries": 0, "instances": instances}),
        &[("a", &m[0]), ("b", &m[1])],
    )
    .await;
    let resp = envoy.chat(&hello()).await.unwrap();
    assert_eq!(resp.status(), 500);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["message"], "mock error 500");
    assert_eq!(m[1].count(), 1);
    drop(envoy);

    // A failure slower than retry_on_failure_within_ms is not retried; a quick one is.
    m[0].set_default(Reply::status(503).delay(Duration::from_millis(600)));
    let envoy = envoy_with(
        json!({"fallback_strategy": "http_5xx", "retry_on_failure_within_ms": 300, "instances": instances}),
        &[("a", &m[0]), ("b", &m[1])],
    )
    .await;
    assert_eq!(envoy.chat(&hello()).await.unwrap().status(), 503);
    assert_eq!(m[1].count(), 1);
    m[0].set_default(Reply::status(503));
    assert_eq!(envoy.chat(&hello()).await.unwrap().status(), 200);
    assert_eq!(m[1].count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_leaks_between_instances() {
    let m = mocks(2).await;
    m[0].set_default(Reply::status(502));
    let envoy = envoy_with(
        json!({
            "fallback_strategy": ["http_5xx"],
            "instances": [
                instance("a", json!({"priority": 1, "options": {"model": "model-a", "temperature": 0.1, "seed": 7}})),
                {
                    "name": "b", "provider": "openai-compatible",
                    "override": {"endpoint": "http://b.internal/custom/chat?v=2"},
                    "auth": {"header": {"api-key": "key-b"}},
                    "options": {"model": "model-b"}
                }
            ]
        }),
        &[("a", &m[0]), ("b", &m[1])],
    )
    .await;
    let resp = envoy
        .client()
        .post(envoy.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer client-key")
        .header("openai-beta", "keep-me")
        .body(hello().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let a = m[0].last().unwrap();
    assert_eq!(a.header("authorization"), Some("Bearer key-a"));
    assert_eq!(a.json()["temperature"], 0.1);

    let b = m[1].last().unwrap();
    let sent = b.json();
    assert_eq!(sent["model"], "model-b");
    assert!(
        sent.get("temperature").is_none() && sent.get("seed").is_none(),
        "{sent}"
    );
    assert_eq!(sent["messages"], hello()["messages"]);
    assert_eq!(b.path, "/custom/chat");
    assert_eq!(b.query.as_deref(), Some("v=2"));
    assert_eq!(b.header("host"), Some("b.internal"));
    assert_eq!(b.header("api-key"), Some("key-b"));
    assert_eq!(
        b.header("authorization"),
        None,
        "neither a's key nor the client's"
    );
    assert_eq!(b.header("openai-beta"), Some("keep-me"));
    assert_eq!(b.header("x-ai-proxy-cluster"), None);
    assert_eq!(
        b.header("content-length"),
        Some(b.body.len().to_string().as_str())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn when_every_attempt_fails() {
    let m = mocks(3).await;
    let instances = json!([
        instance("a", json!({"priority": 2})),
        instance("b", json!({"priority": 1})),
        instance("c", json!({}))
    ]);
    let clusters = [("a", &m[0]), ("b", &m[1]), ("c", &m[2])];
    m[0].set_default(Reply::status(500));
    m[1].set_default(Reply::status(503));
    m[2].set_default(Reply::json(500, json!({"error": {"message": "last one"}})));
    let envoy = envoy_with(
        json!({"fallback_strategy": "http_5xx", "instances": instances}),
        &clusters,
    )
    .await;
    let resp = envoy.chat(&hello()).await.unwrap();
    assert_eq!(resp.status(), 502);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["message"], "last one");
    assert_eq!((m[0].count(), m[1].count(), m[2].count()), (1, 1, 1));
    let log = envoy.access_log(1).await;
    assert_eq!(log[0]["llm_attempts"], "3");
    assert_eq!(log[0]["llm_fallback_reason"], "http_500,http_503,http_500");
    drop(envoy);

    m[0].set_default(Reply::status(429).header("retry-after", "7"));
    m[1].set_default(Reply::status(429).header("retry-after", "3"));
    m[2].set_default(Reply::status(429));
    let envoy = envoy_with(
        json!({"fallback_strategy": ["http_429"], "instances": instances}),
        &clusters,
    )
    .await;
    let resp = envoy.chat(&hello()).await.unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "7");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
}

#[tokio::test(flavor = "multi_thread")]
async fn chash_on_a_header_sticks_and_spreads() {
    let m = mocks(2).await;
    let envoy = envoy_with(
        json!({
            "balancer": {"algorithm": "chash", "hash_on": "header", "key": "x-user-id"},
            "instances": [instance("a", json!({"weight": 1})), instance("b", json!({"weight": 1}))]
        }),
        &[("a", &m[0]), ("b", &m[1])],
    )
    .await;
    let mut seen = std::collections::HashMap::new();
    for round in 0..50 {
        for user in 0..20 {
            let resp = envoy
                .client()
                .post(envoy.url("/v1/chat/completions"))
                .header("content-type", "application/json")
                .header("x-user-id", format!("user-{user}"))
                .body(hello().to_string())
                .send()
                .await
                .unwrap();
            let body: Value = resp.json().await.unwrap();
            let model = body["model"].as_str().unwrap().to_string();
            let first = seen.entry(user).or_insert_with(|| model.clone());
            assert_eq!(*first, model, "user-{user} moved in round {round}");
        }
    }
    let on_a = seen.values().filter(|m| *m == "model-a").count();
    assert!((3..=17).contains(&on_a), "20 users, {on_a} on a");
}

#[tokio::test(flavor = "multi_thread")]
async fn streaming_request_falls_back_whole() {
    let m = mocks(2).await;
    m[0].set_default(Reply::status(503));
    m[1].set_default(Reply::default().sse(4, Duration::from_millis(20)));
    let envoy = envoy_with(
        json!({"fallback_strategy": "http_5xx", "instances": [instance("a", json!({"priority": 1})), instance("b", json!({}))]}),
        &[("a", &m[0]), ("b", &m[1])],
    )
    .await;
    let mut body = hello();
    body["stream"] = json!(true);
    let resp = envoy.chat(&body).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("tok3") && text.ends_with("data: [DONE]\n\n"),
        "{text}"
    );
    assert_eq!(m[1].last().unwrap().json()["stream"], true);
    let log = envoy.access_log(1).await;
    assert_eq!(log[0]["request_type"], "ai_stream");
}

#[tokio::test(flavor = "multi_thread")]
async fn embeddings_skip_instances_without_embeddings() {
    let m = mocks(2).await;
    let envoy = envoy_with(
        json!({"instances": [
            {"name": "ds", "provider": "deepseek", "priority": 5, "cluster": "ds"},
            {"name": "oa", "provider": "openai", "cluster": "oa"}
        ]}),
        &[("ds", &m[0]), ("oa", &m[1])],
    )
    .await;
    assert_eq!(
        envoy
            .post_json("/v1/embeddings", &json!({"input": "x"}))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(envoy.chat(&hello()).await.unwrap().status(), 200);
    assert_eq!(m[1].last().unwrap().path, "/v1/embeddings");
    assert_eq!(m[0].last().unwrap().path, "/chat/completions");
    assert_eq!((m[0].count(), m[1].count()), (1, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_instance_met_by_a_fallback_is_a_connect_failure() {
    let m = mocks(2).await;
    m[0].set_default(Reply::status(500));
    let mut b = Envoy::with_config(&json!({
        "fallback_strategy": "http_5xx",
        "instances": [
            instance("a", json!({"priority": 2})),
            instance("dead", json!({"priority": 1})),
            instance("c", json!({}))
        ]
    }));
    b = b
        .cluster("a", m[0].port())
        .cluster("dead", free_port())
        .cluster("c", m[1].port());
    let envoy = b.start().await.unwrap();
    let resp = envoy.chat(&hello()).await.unwrap();
    assert_eq!(resp.status(), 200);
    let log = envoy.access_log(1).await;
    assert_eq!(log[0]["llm_instance"], "c");
    assert_eq!(log[0]["llm_attempts"], "3");
    assert_eq!(log[0]["llm_fallback_reason"], "http_500,connect_failure");
}
