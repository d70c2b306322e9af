//! Streaming pass-through and token accounting through the real Envoy: SSE timing and bytes,
//! `include_usage`, access-log values, Prometheus metrics, summary and payload logs.

use std::time::{Duration, Instant};

use bytes::Bytes;
use integration::mock::{sse_events, Body};
use integration::{Envoy, MockLlm, Reply};
use serde_json::{json, Value};

fn chat(stream: bool) -> Value {
    json!({"model": "client-model", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

async fn single(config: Value, mock: &MockLlm) -> Envoy {
    Envoy::with_config(&config)
        .cluster("openai", mock.port())
        .start()
        .await
        .unwrap()
}

/// Reads a streamed response, noting when each complete event (ending in a blank line)
/// arrived. Returns all bytes and the arrival time of each event.
async fn read_events(mut resp: reqwest::Response) -> (Vec<u8>, Vec<Instant>) {
    let mut all = Vec::new();
    let mut times = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        let now = Instant::now();
        all.extend_from_slice(&chunk);
        let events = all.windows(2).filter(|w| w == b"\n\n").count();
        while times.len() < events {
            times.push(now);
        }
    }
    (all, times)
}

fn concat(chunks: &[Bytes]) -> Vec<u8> {
    chunks.iter().flat_map(|c| c.iter().copied()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn events_pass_as_they_come_and_only_the_usage_event_is_removed() {
    let mock = MockLlm::start().await.unwrap();
    let reply = Reply::default()
        .sse(20, Duration::from_millis(50))
        .usage(21, 20);
    mock.set_default(reply.clone());
    let envoy = single(json!({"provider": "openai"}), &mock).await;

    let resp = envoy.chat(&chat(true)).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let (got, arrived) = read_events(resp).await;

    // The upstream sent the usage event (the filter asked for it); the client did not ask,
    // so it gets exactly what the provider would have sent it.
    let upstream = sse_events("client-model", &reply, true);
    let expected = concat(&sse_events("client-model", &reply, false));
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&expected)
    );
    assert!(got.ends_with(b"data: [DONE]\n\n"));

    // Each event reached the client within 50 ms of leaving the mock (the usage event,
    // second to last upstream, is the one the client never saw).
    let sent = mock.sent_times();
    assert_eq!(sent.len(), upstream.len());
    let usage_at = upstream.len() - 2;
    let sent_kept: Vec<Instant> = sent
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != usage_at)
        .map(|(_, t)| *t)
        .collect();
    assert_eq!(arrived.len(), sent_kept.len());
    let mut worst = Duration::ZERO;
    for (i, (a, s)) in arrived.iter().zip(&sent_kept).enumerate() {
        let lag = a.saturating_duration_since(*s);
        worst = worst.max(lag);
        assert!(
            lag < Duration::from_millis(50),
            "event {i} arrived {lag:?} after it was sent"
        );
    }
    eprintln!("worst event lag through Envoy + filter: {worst:?}");

    let log = envoy.access_log(1).await;
    assert_eq!(log[0]["llm_prompt_tokens"], "21");
    assert_eq!(log[0]["llm_completion_tokens"], "20");
    assert_eq!(log[0]["llm_total_tokens"], "41");
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_event_reaches_only_clients_that_ask() {
    let mock = MockLlm::start().await.unwrap();
    let envoy = single(json!({"provider": "openai"}), &mock).await;

    let mut asked = chat(true);
    asked["stream_options"] = json!({"include_usage": true});
    let text = envoy.chat(&asked).await.unwrap().text().await.unwrap();
    assert!(
        text.contains("\"choices\":[]") && text.contains("\"total_tokens\":18"),
        "{text}"
    );
    let sent = mock.last().unwrap().json();
    assert_eq!(sent["stream_options"], json!({"include_usage": true}));

    let mut other_options = chat(true);
    other_options["stream_options"] = json!({"x_vendor": 1});
    let text = envoy
        .chat(&other_options)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !text.contains("\"choices\":[]") && !text.contains("total_tokens"),
        "{text}"
    );
    let sent = mock.last().unwrap().json();
    assert_eq!(
        sent["stream_options"],
        json!({"x_vendor": 1, "include_usage": true})
    );

    let log = envoy.access_log(2).await;
    assert!(log.iter().all(|l| l["llm_total_tokens"] == "18"), "{log:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn access_log_values_for_chat_and_stream() {
    let mock = MockLlm::start().await.unwrap();
    let delay = Duration::from_millis(150);
    mock.set_default(Reply::default().usage(123, 45).delay(delay));
    let envoy = single(
        json!({"provider": "openai", "options": {"model": "gpt-4o"}}),
        &mock,
    )
    .await;

    assert_eq!(envoy.chat(&chat(false)).await.unwrap().status(), 200);
    let resp = envoy.chat(&chat(true)).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap();

    let log = envoy.access_log(2).await;
    for (entry, kind) in log.iter().zip(["ai_chat", "ai_stream"]) {
        assert_eq!(entry["request_type"], kind);
        assert_eq!(entry["request_llm_model"], "client-model");
        assert_eq!(
            entry["llm_model"], "gpt-4o",
            "the model the upstream reported"
        );
        assert_eq!(entry["llm_prompt_tokens"], "123");
        assert_eq!(entry["llm_completion_tokens"], "45");
        assert_eq!(entry["llm_total_tokens"], "168");
        let ttft: u64 = entry["llm_time_to_first_token"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            ttft >= delay.as_millis() as u64 && ttft < 1000,
            "{kind}: ttft {ttft}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn events_split_anywhere_still_count_and_stay_intact() {
    let mock = MockLlm::start().await.unwrap();
    let stream = concat(&[
        Bytes::from("data: {\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"h\u{e9}llo \u{1f600} \u{4e16}\u{754c}\"}}]}\r\n\r\n"),
        Bytes::from("data: {\"model\":\"m\",\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\r\n\r\n"),
        Bytes::from("data: {\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":6,\"total_tokens\":11}}\r\n\r\n"),
        Bytes::from("data: [DONE]\r\n\r\n"),
    ]);
    let marker = b"data: {\"model\":\"m\",\"choices\":[],";
    let usage_start = stream
        .windows(marker.len())
        .position(|w| w == marker)
        .unwrap();
    let usage_end = stream.windows(8).position(|w| w == b"data: [D").unwrap();
    let mut without_usage = stream[..usage_start].to_vec();
    without_usage.extend_from_slice(&stream[usage_end..]);

    let envoy = single(json!({"provider": "openai"}), &mock).await;
    // Splits inside the emoji, inside "\r\n", inside the usage event, and one byte at a time.
    let emoji = stream
        .windows(4)
        .position(|w| w == "\u{1f600}".as_bytes())
        .unwrap();
    let crlf = stream.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let splits: Vec<Vec<usize>> = vec![
        vec![emoji + 1, emoji + 2],
        vec![crlf + 1, crlf + 3],
        vec![usage_start + 10, usage_end - 3],
        (1..stream.len()).collect(),
    ];
    for (n, cuts) in splits.iter().enumerate() {
        let mut chunks = Vec::new();
        let mut from = 0;
        for &c in cuts.iter().chain(std::iter::once(&stream.len())) {
            chunks.push(Bytes::copy_from_slice(&stream[from..c]));
            from = c;
        }
        mock.push(Reply {
            body: Body::Chunks {
                content_type: "text/event-stream".into(),
                chunks,
                interval: Duration::from_millis(if cuts.len() > 10 { 0 } else { 30 }),
            },
            ..Reply::default()
        });
        let got = envoy
            .chat(&chat(true))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&without_usage),
            "split set {n}"
        );
        let log = envoy.access_log(n + 1).await;
        assert_eq!(log[n]["llm_total_tokens"], "11", "split set {n}");
        assert_eq!(log[n]["llm_completion_tokens"], "6", "split set {n}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_shows_tokens_by_instance_and_model_and_ttft() {
    let a = MockLlm::start().await.unwrap();
    let b = MockLlm::start().await.unwrap();
    a.set_default(Reply::default().usage(10, 3));
    b.set_default(Reply::default().usage(100, 30));
    let envoy = Envoy::with_config(&json!({
        "instances": [
            {"name": "inst-a", "provider": "openai", "cluster": "a", "weight": 1, "options": {"model": "gpt-4.1-mini"}},
            {"name": "inst-b", "provider": "deepseek", "cluster": "b", "weight": 1, "options": {"model": "deepseek-chat"}}
        ]
    }))
    .cluster("a", a.port())
    .cluster("b", b.port())
    .start()
    .await
    .unwrap();
    for _ in 0..4 {
        assert_eq!(envoy.chat(&chat(false)).await.unwrap().status(), 200);
    }
    let deadline = Instant::now() + Duration::from_secs(8);
    let text = loop {
        let text = envoy.prometheus().await;
        let flushed = text.contains(
            "aiproxy_time_to_first_token_ms_count{aiproxy_instance=\"inst-b\",aiproxy_model=\"deepseek-chat\"} 2",
        );
        if flushed || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for line in [
        "aiproxy_tokens_total{aiproxy_instance=\"inst-a\",aiproxy_model=\"gpt-4_1-mini\",aiproxy_token_type=\"input\"} 20",
        "aiproxy_tokens_total{aiproxy_instance=\"inst-a\",aiproxy_model=\"gpt-4_1-mini\",aiproxy_token_type=\"output\"} 6",
        "aiproxy_tokens_total{aiproxy_instance=\"inst-b\",aiproxy_model=\"deepseek-chat\",aiproxy_token_type=\"input\"} 200",
        "aiproxy_tokens_total{aiproxy_instance=\"inst-b\",aiproxy_model=\"deepseek-chat\",aiproxy_token_type=\"output\"} 60",
        "aiproxy_requests_total{aiproxy_instance=\"inst-a\",aiproxy_model=\"gpt-4_1-mini\",aiproxy_status_class=\"2xx\"} 2",
        "aiproxy_time_to_first_token_ms_count{aiproxy_instance=\"inst-b\",aiproxy_model=\"deepseek-chat\"} 2",
        "aiproxy_upstream_duration_ms_count{aiproxy_instance=\"inst-a\",aiproxy_model=\"gpt-4_1-mini\"} 2",
    ] {
        assert!(text.contains(line), "missing {line}\n{}", aiproxy_lines(&text));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fallbacks_and_rejections_are_counted() {
    let a = MockLlm::start().await.unwrap();
    let b = MockLlm::start().await.unwrap();
    a.set_default(Reply::status(503));
    let envoy = Envoy::with_config(&json!({
        "fallback_strategy": "http_5xx",
        "instances": [
            {"name": "a", "provider": "openai", "priority": 1},
            {"name": "b", "provider": "openai"}
        ]
    }))
    .cluster("a", a.port())
    .cluster("b", b.port())
    .start()
    .await
    .unwrap();
    for _ in 0..3 {
        assert_eq!(envoy.chat(&chat(false)).await.unwrap().status(), 200);
    }
    assert_eq!(
        envoy
            .post_json("/x", &json!({"nope": 1}))
            .await
            .unwrap()
            .status(),
        400
    );
    let text = envoy.prometheus().await;
    for line in [
        "aiproxy_fallbacks_total{aiproxy_instance=\"a\",aiproxy_reason=\"http_503\"} 3",
        "aiproxy_requests_total{aiproxy_instance=\"b\",aiproxy_model=\"client-model\",aiproxy_status_class=\"2xx\"} 3",
        "aiproxy_requests_total{aiproxy_instance=\"none\",aiproxy_model=\"none\",aiproxy_status_class=\"4xx\"} 1",
    ] {
        assert!(text.contains(line), "missing {line}\n{}", aiproxy_lines(&text));
    }
}

fn aiproxy_lines(text: &str) -> String {
    text.lines()
        .filter(|l| l.starts_with("aiproxy") && !l.contains("_bucket"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn non_json_answer_passes_with_zero_tokens() {
    let mock = MockLlm::start().await.unwrap();
    mock.push(Reply {
        body: Body::Raw {
            content_type: "text/plain".into(),
            bytes: Bytes::from_static(b"not json at all"),
        },
        ..Reply::default()
    });
    let envoy = single(json!({"provider": "openai"}), &mock).await;
    let resp = envoy.chat(&chat(false)).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/plain");
    assert_eq!(resp.text().await.unwrap(), "not json at all");
    let log = envoy.access_log(1).await;
    assert_eq!(log[0]["status"], 200);
    assert_eq!(log[0]["llm_total_tokens"], "0");
    assert_eq!(log[0]["llm_prompt_tokens"], "0");
}

#[tokio::test(flavor = "multi_thread")]
async fn summary_and_payload_logs_never_show_the_key() {
    const KEY: &str = "sk-live-TOPSECRET-0123456789";
    let mock = MockLlm::start().await.unwrap();
    let envoy = Envoy::with_config(&json!({
        "provider": "openai",
        "auth": {"header": {"Authorization": format!("Bearer {KEY}")}, "query": {"key": KEY}},
        "options": {"model": "gpt-4o"},
        "logging": {"summaries": true, "payloads": true}
    }))
    .cluster("openai", mock.port())
    .log_level("trace")
    .start()
    .await
    .unwrap();
    let body = json!({"messages": [{"role": "user", "content": "what is 2+2?"}]});
    assert_eq!(envoy.chat(&body).await.unwrap().status(), 200);
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    envoy.chat(&streamed).await.unwrap().text().await.unwrap();
    // The key did go upstream.
    assert_eq!(
        mock.last().unwrap().header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    envoy.access_log(2).await;
    // Envoy writes its own log every 50 ms: wait for the filter's lines.
    envoy.log_json("envoy-ai-proxy summary ", 2).await;
    envoy.log_json("envoy-ai-proxy payload ", 2).await;

    let log = envoy.log();
    let summaries: Vec<Value> = json_lines(&log, "envoy-ai-proxy summary ");
    let payloads: Vec<Value> = json_lines(&log, "envoy-ai-proxy payload ");
    assert_eq!(summaries.len(), 2, "{log}");
    assert_eq!(payloads.len(), 2);
    let s = &summaries[0];
    assert_eq!(s["instance"], "openai");
    assert_eq!(s["model"], "gpt-4o");
    assert_eq!(s["status"], 200);
    assert_eq!(s["total_tokens"], 18);
    assert_eq!(s["attempts"], 1);
    assert!(s["duration_ms"].is_u64() && s["time_to_first_token_ms"].is_u64());
    assert_eq!(summaries[1]["request_type"], "ai_stream");
    assert!(payloads[0]["request"]
        .as_str()
        .unwrap()
        .contains("what is 2+2?"));
    assert_eq!(payloads[0]["response"], "Hello from the mock.");
    assert_eq!(payloads[1]["response"], "tok0 tok1 tok2 ");

    // At debug level Envoy itself prints its configuration (`config`) and every upstream
    // request's headers (`router`), keys included: that is Envoy's doing, documented in
    // docs/config.md. The filter's own lines (`wasm`), at the most verbose level, never do.
    let records = log_records(&log);
    let wasm_records = records.iter().filter(|r| r.contains("][wasm]")).count();
    assert!(
        wasm_records > 4,
        "expected the filter's debug lines:\n{log}"
    );
    let leaking: Vec<&String> = records
        .iter()
        .filter(|r| r.contains("TOPSECRET"))
        .filter(|r| !(r.contains("][config]") || r.contains("][router]")))
        .collect();
    assert!(leaking.is_empty(), "the key leaks into:\n{leaking:#?}");
}

fn json_lines(log: &str, marker: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|l| l.split_once(marker))
        .map(|(_, j)| serde_json::from_str(j).unwrap())
        .collect()
}

/// Envoy's log as records: a record starts with `[<date>`; other lines continue it.
fn log_records(log: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in log.lines() {
        match out.last_mut() {
            Some(last) if !line.starts_with("[20") => {
                last.push('\n');
                last.push_str(line);
            }
            _ => out.push(line.to_string()),
        }
    }
    out
}
