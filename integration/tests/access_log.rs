//! What the access log tells an operator, through the real Envoy: the path the client
//! called, and why a request failed (the filter's own error, a rate-limit rejection, an
//! all-failed fallback and the last instance it tried).

use std::time::Duration;

use integration::windows::clear_of_window_end;
use integration::{Envoy, MockLlm, Reply};
use serde_json::{json, Value};

fn chat() -> Value {
    json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
}

fn instance(name: &str, priority: i64) -> Value {
    json!({"name": name, "provider": "openai-compatible", "priority": priority,
           "override": {"endpoint": format!("http://{name}.internal/v1/chat/completions")}})
}

#[tokio::test(flavor = "multi_thread")]
async fn the_client_path_and_the_filters_own_errors() {
    let mock = MockLlm::start().await.unwrap();
    mock.set_default(Reply::default().usage(6, 4));
    let envoy = Envoy::with_config(&json!({
        "provider": "openai-compatible",
        "override": {"endpoint": "http://p.internal/v1/chat/completions?api-version=1"},
        "cluster": "openai",
        "rate_limiting": {"limit": 10, "time_window": 3600}
    }))
    .cluster("openai", mock.port())
    .start()
    .await
    .unwrap();
    clear_of_window_end(3600, Duration::from_secs(60)).await;
    // Served: the client's path, no error.
    let ok = envoy.post_json("/gateway/chat", &chat()).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(mock.last().unwrap().path, "/v1/chat/completions");
    // The filter's own 400.
    let bad = envoy
        .post_json("/gateway/chat", &json!({"prompt": 1}))
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    // The limit (10) is spent: the filter's 429.
    let limited = envoy.post_json("/gateway/chat", &chat()).await.unwrap();
    assert_eq!(limited.status(), 429);

    let log = envoy.access_log(3).await;
    for line in &log {
        assert_eq!(line["path"], "/gateway/chat", "{line}");
        assert_eq!(line["llm_client_path"], "/gateway/chat", "{line}");
    }
    assert_eq!(log[0]["llm_error_code"], "-");
    assert_eq!(log[0]["llm_total_tokens"], "10");
    assert_eq!(log[1]["status"], 400);
    assert_eq!(log[1]["llm_error_code"], "unknown_request_kind");
    assert_eq!(log[2]["status"], 429);
    assert_eq!(log[2]["llm_error_code"], "rate_limit_exceeded");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_all_failed_fallback_names_the_last_instance_and_why() {
    let (a, b, c) = (
        MockLlm::start().await.unwrap(),
        MockLlm::start().await.unwrap(),
        MockLlm::start().await.unwrap(),
    );
    a.set_default(Reply::status(500));
    b.set_default(Reply::status(503));
    c.set_default(Reply::status(502));
    let envoy = Envoy::with_config(&json!({
        "fallback_strategy": "http_5xx",
        "instances": [instance("a", 3), instance("b", 2), instance("c", 1)]
    }))
    .cluster("a", a.port())
    .cluster("b", b.port())
    .cluster("c", c.port())
    .start()
    .await
    .unwrap();
    assert_eq!(envoy.chat(&chat()).await.unwrap().status(), 502);
    let log = envoy.access_log(1).await;
    assert_eq!(log[0]["llm_instance"], "c", "the last instance tried");
    assert_eq!(log[0]["llm_attempts"], "3");
    assert_eq!(log[0]["llm_fallback_reason"], "http_500,http_503,http_502");
    assert_eq!(log[0]["llm_error_code"], "http_502");
}
