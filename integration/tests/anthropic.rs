//! Anthropic Messages through the real Envoy, with the official SDKs as clients: the
//! `anthropic` SDK against an `anthropic` instance (passed through) and against an
//! OpenAI-compatible one (translated), the `openai` SDK against an `anthropic` instance
//! (translated), fallback across the two protocols, and the filter's own errors in the
//! client's shape. Every answer's tokens are checked in the access log, the metrics, the
//! summary log (cache tokens) and the rate-limit counters against what the mock was told.

use std::time::Duration;

use integration::clients::{args, python, run};
use integration::windows::clear_of_window_end;
use integration::{Envoy, MockLlm, Reply};
use serde_json::{json, Value};

const LIMIT: u64 = 1_000_000;

/// One instance of `config` (cluster `cluster`) in front of a fresh mock, with a route limit
/// and summary logs.
async fn gateway(mut config: Value, cluster: &str) -> (Envoy, MockLlm) {
    config["rate_limiting"] = json!({"limit": LIMIT, "time_window": 3600});
    config["logging"] = json!({"summaries": true});
    let mock = MockLlm::start().await.unwrap();
    let envoy = Envoy::with_config(&config)
        .cluster(cluster, mock.port())
        .start()
        .await
        .unwrap();
    // Quotas are read across several requests: none may straddle the end of an hour.
    clear_of_window_end(3600, Duration::from_secs(120)).await;
    (envoy, mock)
}

fn anthropic_sdk(base: &str, checks: &[&str]) -> impl std::future::Future<Output = Value> {
    run(
        python(),
        "integration/python/anthropic_client.py",
        args(base, checks),
    )
}

fn openai_sdk(base: &str, checks: &[&str]) -> impl std::future::Future<Output = Value> {
    run(
        python(),
        "integration/python/openai_client.py",
        args(base, checks),
    )
}

/// Tokens charged to `instance`'s limit so far: the quota header of one more (tiny) request.
async fn charged(envoy: &Envoy, instance: &str) -> u64 {
    let r = envoy
        .post_json(
            "/v1/messages",
            &json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "n"}]}),
        )
        .await
        .unwrap();
    let header = format!("x-ai-ratelimit-remaining-{instance}");
    let left: u64 = r.headers()[header.as_str()]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    LIMIT - left
}

/// The sum of `aiproxy_tokens_total` for an instance and token type.
async fn metered(envoy: &Envoy, instance: &str, token_type: &str) -> u64 {
    let text = envoy.prometheus().await;
    let inst = format!("aiproxy_instance=\"{instance}\"");
    let kind = format!("aiproxy_token_type=\"{token_type}\"");
    text.lines()
        .filter(|l| {
            l.starts_with("aiproxy_tokens_total{") && l.contains(&inst) && l.contains(&kind)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The summary log lines (`logging.summaries`), once there are `n` (or after 5 s).
async fn summaries(envoy: &Envoy, n: usize) -> Vec<Value> {
    envoy.log_json("envoy-ai-proxy summary ", n).await
}

/// Every answered request's tokens, as the access log, the metrics, the summaries and the
/// limit counted them, equal the mock's (`n` answers of `told`).
async fn books_balance(envoy: &Envoy, instance: &str, api: &str, n: usize, told: &Reply) {
    let total = told.prompt_tokens + told.completion_tokens;
    let log = envoy.access_log(n).await;
    for line in &log {
        assert_eq!(line["llm_api"], api, "{line}");
        assert_eq!(line["llm_instance"], instance, "{line}");
        assert_eq!(
            line["llm_prompt_tokens"],
            told.prompt_tokens.to_string(),
            "{line}"
        );
        assert_eq!(
            line["llm_completion_tokens"],
            told.completion_tokens.to_string(),
            "{line}"
        );
        assert_eq!(line["llm_total_tokens"], total.to_string(), "{line}");
    }
    let sums = summaries(envoy, n).await;
    assert_eq!(sums.len(), n, "{sums:?}");
    for s in &sums {
        assert_eq!(s["cached_tokens"], told.cached_tokens, "{s}");
        assert_eq!(s["total_tokens"], total, "{s}");
    }
    let n64 = n as u64;
    assert_eq!(
        metered(envoy, instance, "input").await,
        n64 * told.prompt_tokens
    );
    assert_eq!(
        metered(envoy, instance, "output").await,
        n64 * told.completion_tokens
    );
    assert_eq!(charged(envoy, instance).await, n64 * total);
}

/// Anthropic's usage as the SDK reports it, against what the mock was told; `cache_write`:
/// whether the upstream can report cache writes (OpenAI cannot).
fn usage_as_told(u: &Value, told: &Reply, cache_write: bool) {
    let written = if cache_write {
        told.cache_write_tokens
    } else {
        0
    };
    assert_eq!(u["cache_read_input_tokens"], told.cached_tokens, "{u}");
    assert_eq!(u["cache_creation_input_tokens"], written, "{u}");
    assert_eq!(
        u["input_tokens"],
        told.prompt_tokens - told.cached_tokens - written,
        "{u}"
    );
    assert_eq!(u["output_tokens"], told.completion_tokens, "{u}");
}

fn told() -> Reply {
    Reply::tool_call("get_weather", json!({"location": "San Francisco, CA"}))
        .usage(250, 42)
        .cached(100)
        .cache_write(50)
        .text("Hello from the Claude mock")
}

/// The anthropic SDK's messages, stream and tools checks, as the mock was told.
fn sdk_saw_the_answers(r: &Value, told: &Reply, cache_write: bool) {
    let text = told.plain_text();
    assert_eq!(r["messages"]["text"], text.as_str());
    assert_eq!(r["messages"]["stop_reason"], "end_turn");
    usage_as_told(&r["messages"]["usage"], told, cache_write);
    assert_eq!(r["stream"]["text"], text.as_str());
    assert_eq!(r["stream"]["final_text"], text.as_str());
    assert_eq!(r["stream"]["stop_reason"], "end_turn");
    usage_as_told(&r["stream"]["usage"], told, cache_write);
    for mode in ["plain", "stream"] {
        let t = &r["tools"][mode];
        assert_eq!(t["stop_reason"], "tool_use", "{mode}");
        assert_eq!(t["tool_use"][0]["name"], "get_weather", "{mode}");
        assert_eq!(
            t["tool_use"][0]["input"],
            json!({"location": "San Francisco, CA"}),
            "{mode}"
        );
        usage_as_told(&t["usage"], told, cache_write);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_sdk_to_an_anthropic_instance() {
    let (envoy, mock) = gateway(
        json!({"provider": "anthropic", "auth": {"header": {"x-api-key": "sk-ant-gateway"}}}),
        "anthropic",
    )
    .await;
    let told = told();
    mock.set_default(told.clone());
    let r = anthropic_sdk(&envoy.url(""), &["messages", "stream", "tools"]).await;
    sdk_saw_the_answers(&r, &told, true);

    let sent = mock.requests_to("/v1/messages");
    assert_eq!(sent.len(), 4);
    for q in &sent {
        assert_eq!(
            q.header("x-api-key"),
            Some("sk-ant-gateway"),
            "the gateway's key"
        );
        assert_eq!(
            q.header("authorization"),
            None,
            "the client's credential stays home"
        );
        assert_eq!(q.header("anthropic-version"), Some("2023-06-01"));
    }
    assert_eq!(sent[1].json()["stream"], true);
    books_balance(&envoy, "anthropic", "messages", 4, &told).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_sdk_to_an_openai_compatible_instance() {
    let (envoy, mock) = gateway(
        json!({"provider": "openai", "auth": {"header": {"Authorization": "Bearer sk-gw"}},
               "options": {"model": "deepseek-chat"}}),
        "openai",
    )
    .await;
    let told = told();
    mock.set_default(told.clone());
    let r = anthropic_sdk(&envoy.url(""), &["messages", "stream", "tools"]).await;
    sdk_saw_the_answers(&r, &told, false);

    // Translated: chat requests, the model from options, no Anthropic header upstream.
    assert!(mock.requests_to("/v1/messages").is_empty());
    let sent = mock.requests_to("/v1/chat/completions");
    assert_eq!(sent.len(), 4);
    for q in &sent {
        assert_eq!(q.header("anthropic-version"), None);
        assert_eq!(q.header("authorization"), Some("Bearer sk-gw"));
        let body = q.json();
        assert_eq!(body["model"], "deepseek-chat");
        assert_eq!(
            body["messages"],
            json!([{"role": "user", "content": "Say hello"}])
        );
        assert_eq!(body["max_tokens"], 256);
    }
    let stream = sent[1].json();
    assert_eq!(stream["stream"], true);
    assert_eq!(stream["stream_options"], json!({"include_usage": true}));
    assert_eq!(
        sent[2].json()["tools"][0]["function"]["name"],
        "get_weather"
    );
    // The mock reports OpenAI's usage: the prompt includes what Anthropic calls cache writes.
    books_balance(&envoy, "openai", "messages", 4, &told).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_sdk_to_an_anthropic_instance() {
    let (envoy, mock) = gateway(
        json!({"provider": "anthropic", "auth": {"header": {"x-api-key": "sk-ant-gateway"}},
               "options": {"model": "claude-sonnet-4-5"}}),
        "anthropic",
    )
    .await;
    let told = told();
    mock.set_default(told.clone());
    let r = openai_sdk(
        &envoy.url(""),
        &["chat", "chat_stream", "chat_stream_usage", "chat_tools"],
    )
    .await;
    let text = told.plain_text();
    let total = told.prompt_tokens + told.completion_tokens;
    let openai_usage = |u: &Value| {
        assert_eq!(u["prompt_tokens"], told.prompt_tokens, "{u}");
        assert_eq!(u["completion_tokens"], told.completion_tokens, "{u}");
        assert_eq!(u["total_tokens"], total, "{u}");
        assert_eq!(
            u["prompt_tokens_details"]["cached_tokens"],
            told.cached_tokens
        );
    };
    assert_eq!(r["chat"]["text"], text.as_str());
    assert_eq!(r["chat"]["model"], "claude-sonnet-4-5");
    assert_eq!(r["chat"]["finish_reason"], "stop");
    openai_usage(&r["chat"]["usage"]);
    assert_eq!(r["chat_stream"]["text"], text.as_str());
    assert_eq!(r["chat_stream"]["finish_reason"], "stop");
    assert_eq!(
        r["chat_stream"]["usage_chunks"], 0,
        "not asked for, not sent"
    );
    assert_eq!(r["chat_stream_usage"]["text"], text.as_str());
    assert_eq!(r["chat_stream_usage"]["usage_chunks"], 1);
    assert_eq!(r["chat_stream_usage"]["last_choices"], 0);
    openai_usage(&r["chat_stream_usage"]["usage"]);
    for mode in ["plain", "stream"] {
        let t = &r["chat_tools"][mode];
        assert_eq!(t["finish_reason"], "tool_calls", "{mode}");
        assert_eq!(t["tool_calls"][0]["name"], "get_weather", "{mode}");
        assert_eq!(
            t["tool_calls"][0]["arguments"],
            json!({"location": "San Francisco, CA"}),
            "{mode}"
        );
        openai_usage(&t["usage"]);
    }

    let sent = mock.requests_to("/v1/messages");
    assert_eq!(sent.len(), 5);
    for q in &sent {
        assert_eq!(q.header("x-api-key"), Some("sk-ant-gateway"));
        assert_eq!(q.header("anthropic-version"), Some("2023-06-01"));
        assert_eq!(q.header("authorization"), None);
        let body = q.json();
        assert_eq!(body["model"], "claude-sonnet-4-5");
        assert_eq!(body["max_tokens"], 4096, "the documented default");
        assert_eq!(
            body["messages"],
            json!([{"role": "user", "content": "Say hello"}])
        );
        assert!(body.get("stream_options").is_none());
    }
    assert_eq!(
        sent[3].json()["tools"][0]["input_schema"]["required"],
        json!(["city"])
    );
    books_balance(&envoy, "anthropic", "chat", 5, &told).await;
}

/// Two instances on one mock: `first` (priority 1) fails, `second` serves.
async fn pair(first: Value, second: Value) -> (Envoy, MockLlm) {
    let mock = MockLlm::start().await.unwrap();
    let envoy = Envoy::with_config(&json!({
        "instances": [first, second],
        "fallback_strategy": ["http_429", "http_5xx"],
        "logging": {"summaries": true}
    }))
    .cluster("claude", mock.port())
    .cluster("gpt", mock.port())
    .start()
    .await
    .unwrap();
    (envoy, mock)
}

#[tokio::test(flavor = "multi_thread")]
async fn fallback_crosses_the_protocol_boundary_both_ways() {
    let claude = json!({"name": "claude", "provider": "anthropic", "priority": 1,
                        "auth": {"header": {"x-api-key": "sk-ant"}}});
    let gpt = json!({"name": "gpt", "provider": "openai", "priority": 0,
                     "auth": {"header": {"Authorization": "Bearer sk-oa"}}});
    let (envoy, mock) = pair(claude.clone(), gpt.clone()).await;
    let told = told();
    mock.set_default(told.clone());
    // The Anthropic instance is overloaded, then rate limited: the OpenAI one answers.
    mock.push(Reply::anthropic_error(529, "overloaded_error"));
    let r = anthropic_sdk(&envoy.url(""), &["messages"]).await;
    assert_eq!(r["messages"]["text"], told.plain_text().as_str());
    mock.push(Reply::anthropic_error(429, "rate_limit_error"));
    let r = openai_sdk(&envoy.url(""), &["chat"]).await;
    assert_eq!(r["chat"]["text"], told.plain_text().as_str());
    let sent = mock.requests();
    let paths: Vec<&str> = sent.iter().map(|q| q.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/v1/messages",
            "/v1/chat/completions",
            "/v1/messages",
            "/v1/chat/completions"
        ]
    );
    // Each attempt shaped for its own instance: nothing of the first leaks into the second.
    assert_eq!(sent[1].header("x-api-key"), None);
    assert_eq!(sent[1].header("anthropic-version"), None);
    assert_eq!(sent[1].header("authorization"), Some("Bearer sk-oa"));
    assert!(sent[1].json().get("max_tokens").is_some());
    assert_eq!(
        sent[3].json()["messages"],
        json!([{"role": "user", "content": "Say hello"}])
    );
    let log = envoy.access_log(2).await;
    assert_eq!(log[0]["llm_fallback_reason"], "http_529");
    assert_eq!(log[1]["llm_fallback_reason"], "http_429");
    for line in &log {
        assert_eq!(line["llm_instance"], "gpt");
        assert_eq!(line["llm_attempts"], "2");
        assert_eq!(line["llm_total_tokens"], "292");
    }

    // And back: the OpenAI instance first and failing, the Anthropic one serving.
    let claude_second = json!({"name": "claude", "provider": "anthropic", "priority": 0,
                               "auth": {"header": {"x-api-key": "sk-ant"}}});
    let gpt_first = json!({"name": "gpt", "provider": "openai", "priority": 1});
    let (envoy, mock) = pair(gpt_first, claude_second).await;
    mock.set_default(told.clone());
    mock.push(Reply::status(503));
    let r = anthropic_sdk(&envoy.url(""), &["stream"]).await;
    assert_eq!(r["stream"]["text"], told.plain_text().as_str());
    usage_as_told(&r["stream"]["usage"], &told, true);
    let sent = mock.requests();
    assert_eq!(sent[1].path, "/v1/messages");
    assert_eq!(sent[1].header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(sent[1].header("x-api-key"), Some("sk-ant"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_filter_s_own_errors_reach_anthropic_clients_in_their_shape() {
    // A spent limit: the anthropic SDK raises its RateLimitError.
    let mock = MockLlm::start().await.unwrap();
    mock.set_default(told());
    let envoy = Envoy::with_config(&json!({"provider": "anthropic",
        "rate_limiting": {"limit": 1, "time_window": 3600}}))
    .cluster("anthropic", mock.port())
    .start()
    .await
    .unwrap();
    clear_of_window_end(3600, Duration::from_secs(60)).await;
    let r = anthropic_sdk(&envoy.url(""), &["error"]).await;
    assert_eq!(r["error"][0]["class"], Value::Null, "the first is admitted");
    assert_eq!(r["error"][1]["class"], "RateLimitError");
    assert_eq!(r["error"][1]["status"], 429);
    assert_eq!(r["error"][1]["type"], "rate_limit_error");

    // Bad JSON, and a field the OpenAI instance has no counterpart for.
    let (envoy, mock) = gateway(json!({"provider": "openai"}), "openai").await;
    let bad = envoy
        .client()
        .post(envoy.url("/v1/messages"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let r = envoy
        .post_json(
            "/v1/messages",
            &json!({"model": "m", "max_tokens": 5, "top_k": 3,
                    "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("`top_k`"), "{message}");
    assert_eq!(mock.count(), 0, "nothing was sent upstream");
}
