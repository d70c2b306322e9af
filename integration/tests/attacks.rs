//! The adversarial suite's findings, one test per numbered attack of the security issue,
//! through the real Envoy: ways around token accounting, forged log lines, leaked keys, a
//! stream that would block a worker, configurations that would misbehave. Each asserts the
//! safe behaviour.

use std::time::{Duration, Instant};

use bytes::Bytes;
use integration::envoy::shipped;
use integration::mock::Body;
use integration::windows::clear_of_window_end;
use integration::{Envoy, MockLlm, Reply};
use serde_json::{json, Value};

fn chat() -> Value {
    json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
}

async fn one(config: Value) -> (Envoy, MockLlm) {
    let mock = MockLlm::start().await.unwrap();
    let envoy = Envoy::with_config(&config)
        .cluster("openai", mock.port())
        .start()
        .await
        .unwrap();
    (envoy, mock)
}

async fn error_code(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    (
        status,
        v["error"]["code"].as_str().unwrap_or("").to_string(),
    )
}

/// 1. `"stream": 1` or `"stream": "true"`: a lenient provider would stream without the usage
/// the filter asks for. Refused, and nothing reaches the provider.
#[tokio::test(flavor = "multi_thread")]
async fn attack_1_stream_that_is_not_a_boolean_is_refused() {
    let (envoy, mock) = one(json!({"provider": "openai"})).await;
    for stream in [json!(1), json!("true")] {
        let mut body = chat();
        body["stream"] = stream;
        let got = error_code(envoy.chat(&body).await.unwrap()).await;
        assert_eq!(got, (400, "invalid_value".to_string()));
    }
    assert_eq!(mock.count(), 0);
}

/// 2. Keys that only differ in case from ones the filter owns: a case-insensitive provider
/// would take the client's model, or stream without usage.
#[tokio::test(flavor = "multi_thread")]
async fn attack_2_case_variants_of_owned_keys_are_refused() {
    let (envoy, mock) = one(json!({"provider": "openai", "options": {"model": "m"}})).await;
    for body in [
        json!({"model": "m", "MODEL": "client-model", "messages": []}),
        json!({"Stream": true, "messages": []}),
    ] {
        let got = error_code(envoy.chat(&body).await.unwrap()).await;
        assert_eq!(got, (400, "duplicate_key".to_string()), "{body}");
    }
    assert_eq!(mock.count(), 0);
}

/// 3. `Accept-Encoding: gzip` (the openai Python SDK's default): a provider that compresses
/// would make the usage unreadable. It never reaches the provider, and the tokens count.
#[tokio::test(flavor = "multi_thread")]
async fn attack_3_accept_encoding_never_reaches_the_provider() {
    let (envoy, mock) = one(json!({"provider": "openai",
        "rate_limiting": {"limit": 1000, "time_window": 60}}))
    .await;
    mock.set_default(Reply::default().usage(6, 4));
    let resp = envoy
        .client()
        .post(envoy.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("accept-encoding", "gzip, deflate, br")
        .body(chat().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(mock.last().unwrap().header("accept-encoding"), None);
    let log = envoy.access_log(1).await;
    assert_eq!(log[0]["llm_total_tokens"], "10");
}

/// 4. A client that leaves right after the usage event, or an upstream that dies after it,
/// is charged what was read; one cut before it, an estimate.
#[tokio::test(flavor = "multi_thread")]
async fn attack_4_cut_streams_are_charged() {
    let usage = json!({"choices": [], "usage":
        {"prompt_tokens": 30, "completion_tokens": 20, "total_tokens": 50}});
    let event = |v: Value| Bytes::from(format!("data: {v}\n\n"));
    let content = event(json!({"choices": [{"delta": {"content": "abcdefgh"}}]}));
    let stream = |chunks: Vec<Bytes>| Body::Chunks {
        content_type: "text/event-stream".into(),
        chunks,
        interval: Duration::from_millis(300),
    };
    let mut body = chat();
    body["stream"] = json!(true);
    let remaining = |r: &reqwest::Response| {
        r.headers()["x-ai-ratelimit-remaining-openai"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };

    // The upstream dies after the usage event.
    let (envoy, mock) = one(json!({"provider": "openai",
        "rate_limiting": {"limit": 100000, "time_window": 3600}}))
    .await;
    clear_of_window_end(3600, Duration::from_secs(30)).await;
    mock.push(Reply {
        body: stream(vec![
            content.clone(),
            event(usage.clone()),
            "data: [DONE]\n\n".into(),
        ]),
        abort_after: Some(2),
        ..Reply::default()
    });
    let resp = envoy.chat(&body).await.unwrap();
    let before = remaining(&resp);
    let _ = resp.bytes().await;
    // The client leaves after the usage event passed.
    mock.push(Reply {
        body: stream(vec![
            content.clone(),
            event(usage.clone()),
            Bytes::from(vec![b':'; 1]),
            "data: [DONE]\n\n".into(),
        ]),
        ..Reply::default()
    });
    let mut resp = envoy.chat(&body).await.unwrap();
    let _first = resp.chunk().await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    drop(resp);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = remaining(&envoy.chat(&chat()).await.unwrap());
    assert_eq!(before - after, 100, "50 tokens charged for each cut stream");

    // Cut before any usage came: an estimate (request bytes / 4 + text seen / 4).
    let before = remaining(&envoy.chat(&chat()).await.unwrap());
    mock.push(Reply {
        body: stream(vec![content, "data: [DONE]\n\n".into()]),
        abort_after: Some(1),
        ..Reply::default()
    });
    let _ = envoy.chat(&body).await.unwrap().bytes().await;
    let after = remaining(&envoy.chat(&chat()).await.unwrap());
    // The chat above it is charged the mock's default usage (18) too.
    let estimate = (body.to_string().len() as u64).div_ceil(4) + 2;
    assert_eq!(before - after, 18 + estimate);
}

/// 5. A model name with a newline would forge a second access-log line; a huge one would
/// become huge stat names.
#[tokio::test(flavor = "multi_thread")]
async fn attack_5_client_values_cannot_forge_log_lines_or_stat_names() {
    let (envoy, _mock) = one(json!({"provider": "openai"})).await;
    let forged = "x\n200 request_type=ai_chat llm_instance=FORGED";
    let mut body = chat();
    body["model"] = forged.into();
    assert_eq!(envoy.chat(&body).await.unwrap().status(), 200);
    let huge = "m".repeat(200_000);
    body["model"] = huge.clone().into();
    assert_eq!(envoy.chat(&body).await.unwrap().status(), 200);
    let log = envoy.access_log(2).await;
    let first = log[0]["request_llm_model"].as_str().unwrap();
    assert_eq!(first, "x200 request_type=ai_chat llm_instance=FORGED");
    assert!(log[1]["request_llm_model"].as_str().unwrap().len() <= 260);
    let stats = envoy.prometheus().await;
    assert!(stats.lines().all(|l| l.len() < 600), "no huge stat name");
    assert!(!stats.contains(&huge[..1000]));
}

/// 6. With `auth.query` the key is in the rewritten path: the access log shows the client's
/// path; client credential headers stay with the gateway.
#[tokio::test(flavor = "multi_thread")]
async fn attack_6_keys_stay_out_of_logs_and_client_credentials_stay_home() {
    let (envoy, mock) = one(json!({"provider": "openai-compatible",
        "override": {"endpoint": "http://p.internal/v1/chat/completions"},
        "cluster": "openai",
        "auth": {"query": {"key": "sk-query-secret"}}}))
    .await;
    let resp = envoy
        .client()
        .post(envoy.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("api-key", "client-gateway-key")
        .header("x-api-key", "client-gateway-key")
        .body(chat().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let r = mock.last().unwrap();
    assert_eq!(r.query.as_deref(), Some("key=sk-query-secret"));
    assert_eq!(r.header("api-key"), None);
    assert_eq!(r.header("x-api-key"), None);
    let log = envoy.access_log(1).await;
    assert_eq!(log[0]["path"], "/v1/chat/completions");
    assert_eq!(log[0]["llm_client_path"], "/v1/chat/completions");
    assert!(!log[0].to_string().contains("sk-query-secret"));
}

/// 7. One unterminated SSE line of 32 MB: the filter held it all (and rescanned it per
/// chunk). Past 1 MiB an unfinished event now passes through as it comes: while the upstream
/// pauses in the middle of a 4 MiB line, the client already has most of it.
#[tokio::test(flavor = "multi_thread")]
async fn attack_7_an_endless_sse_line_passes_through_as_it_comes() {
    let (envoy, mock) = one(json!({"provider": "openai"})).await;
    let piece = Bytes::from(vec![b'z'; 16 << 10]);
    let mut chunks = vec![Bytes::from_static(b"data: ")];
    chunks.extend(std::iter::repeat_n(piece, 512));
    chunks.push(Bytes::from_static(b"\n\ndata: [DONE]\n\n"));
    let total: usize = chunks.iter().map(Bytes::len).sum();
    mock.push(Reply {
        body: Body::Chunks {
            content_type: "text/event-stream".into(),
            chunks,
            interval: Duration::ZERO,
        },
        // 4 MiB of the line, then a pause, then the rest.
        pause: Some((257, Duration::from_secs(3))),
        ..Reply::default()
    });
    let mut body = chat();
    body["stream"] = json!(true);
    let mut resp = envoy.chat(&body).await.unwrap();
    let started = Instant::now();
    let mut received = 0usize;
    let mut during_pause = 0usize;
    while let Some(c) = resp.chunk().await.unwrap() {
        received += c.len();
        if started.elapsed() < Duration::from_millis(2500) {
            during_pause = received;
        }
    }
    assert!(
        during_pause >= 3 << 20,
        "only {during_pause} bytes reached the client before the line ended"
    );
    assert_eq!(received, total);
    assert_eq!(envoy.chat(&chat()).await.unwrap().status(), 200);
}

/// 8. `include_usage` given as serde_json's private raw-value object is not `true`: the
/// provider is asked for usage properly.
#[tokio::test(flavor = "multi_thread")]
async fn attack_8_the_raw_value_quirk_does_not_switch_usage_off() {
    let (envoy, mock) = one(json!({"provider": "openai"})).await;
    let mut body = chat();
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": {"$serde_json::private::RawValue": "true"}});
    let text = envoy.chat(&body).await.unwrap().text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"));
    // The raw bytes: the mock's own serde_json would read the quirk as `true` too.
    let sent = String::from_utf8(mock.last().unwrap().body.to_vec()).unwrap();
    assert!(sent.contains(r#""include_usage":true"#), "{sent}");
    assert!(!sent.contains("RawValue"), "{sent}");
    let log = envoy.access_log(1).await;
    assert_eq!(log[0]["llm_total_tokens"], "18");
}

/// 9. A `timeout` of 2^32 ms or more was accepted, then truncated to 1 ms for callouts.
#[test]
fn attack_9_a_timeout_past_32_bits_is_refused() {
    let log = Envoy::with_config(&json!({"provider": "openai", "timeout": 4_294_967_297u64}))
        .start_expecting_exit()
        .unwrap();
    assert!(log.contains("timeout"), "{log}");
}

/// 10. Health probes carry the instance's `auth.query`, appended to `http_path`'s query.
#[tokio::test(flavor = "multi_thread")]
async fn attack_10_probes_carry_the_auth_query() {
    let mock = MockLlm::start().await.unwrap();
    mock.set_path_reply("/health", Reply::default());
    let envoy = Envoy::with_config(&json!({"instances": [{
        "name": "a", "provider": "openai-compatible",
        "override": {"endpoint": "http://a.internal/v1/chat/completions"},
        "auth": {"query": {"key": "sk-probe"}},
        "checks": {"active": {"http_path": "/health?deep=1",
                              "healthy": {"interval": 0.2}}}}]}))
    .cluster("a", mock.port())
    .start()
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while mock.requests_to("/health").is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let probe = mock.requests_to("/health").pop().expect("a probe");
    assert_eq!(probe.query.as_deref(), Some("deep=1&key=sk-probe"));
    drop(envoy);
}

/// 11. The documented default body limit was unreachable under Envoy's 1 MiB default
/// buffer: the shipped demo takes a 2 MiB body.
#[tokio::test(flavor = "multi_thread")]
async fn attack_11_a_2_mib_body_passes_the_shipped_demo() {
    let mock = MockLlm::start().await.unwrap();
    let envoy = Envoy::with_bootstrap(shipped("demo.yaml", 0, 0, mock.port()).unwrap())
        .start()
        .await
        .unwrap();
    let big = json!({"messages": [{"role": "user", "content": "x".repeat(2 << 20)}]});
    assert_eq!(envoy.chat(&big).await.unwrap().status(), 200);
    assert!(mock.last().unwrap().body.len() > 2 << 20);
}

/// 12. An object whose first key is serde_json's private raw-value token, with JSON in its
/// string, was read as that JSON wherever the filter reads a body as a `Value` (translating
/// to Anthropic, while serde_json's `raw_value` feature was built in): a client's tool schema
/// reached the provider as something else than it sent. It reaches the provider as sent.
#[tokio::test(flavor = "multi_thread")]
async fn attack_12_the_raw_value_token_is_an_ordinary_key_when_translating() {
    let mock = MockLlm::start().await.unwrap();
    let envoy = Envoy::with_config(&json!({"provider": "anthropic",
                                           "auth": {"header": {"x-api-key": "k"}}}))
    .cluster("anthropic", mock.port())
    .start()
    .await
    .unwrap();
    let mut body = chat();
    body["tools"] = json!([{"type": "function", "function": {"name": "f",
        "parameters": {"$serde_json::private::RawValue": "{\"type\":\"object\"}"}}}]);
    let resp = envoy.chat(&body).await.unwrap();
    assert_eq!(resp.status(), 200);
    // The raw bytes: the mock's own serde_json could read the token as the JSON too.
    let sent = String::from_utf8(mock.last().unwrap().body.to_vec()).unwrap();
    assert!(
        sent.contains(
            r#""input_schema":{"$serde_json::private::RawValue":"{\"type\":\"object\"}"}"#
        ),
        "{sent}"
    );
}
