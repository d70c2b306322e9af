//! Single-provider mode (APISIX `ai-proxy`) through the real Envoy and the built `.wasm`.

use std::time::{Duration, Instant};

use integration::{Envoy, MockLlm, Reply};
use serde_json::{json, Value};

fn hello() -> Value {
    json!({"model": "client-model", "messages": [{"role": "user", "content": "hi"}]})
}

/// Asserts an OpenAI-style error body with the given status and code.
async fn assert_error(resp: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(resp.status().as_u16(), status);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let body: Value = resp.json().await.expect("error body is JSON");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(body["error"]["type"].is_string(), "{body}");
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_reaches_provider_with_configured_model_auth_host_and_path() {
    let mock = MockLlm::start().await.unwrap();
    let envoy = Envoy::with_config(&json!({
        "provider": "openai",
        "auth": {"header": {"Authorization": "Bearer sk-configured"}},
        "options": {"model": "gpt-4o", "temperature": 0.2}
    }))
    .cluster("openai", mock.port())
    .start()
    .await
    .unwrap();

    let resp = envoy
        .client()
        .post(envoy.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer client-key")
        .body(hello().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = resp.bytes().await.unwrap();

    let reqs = mock.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/v1/chat/completions");
    assert_eq!(r.header("host"), Some("api.openai.com"));
    assert_eq!(
        r.headers_named("authorization"),
        vec!["Bearer sk-configured"]
    );
    let sent = r.json();
    assert_eq!(sent["model"], "gpt-4o");
    assert_eq!(sent["temperature"], 0.2);
    assert_eq!(sent["messages"], hello()["messages"]);
    // The declared length is the real one.
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );
    // The routing header stays inside Envoy.
    assert_eq!(r.header("x-ai-proxy-cluster"), None);

    // The client gets the upstream's answer byte for byte.
    let expected = integration::mock::chat("gpt-4o", &Reply::default()).to_string();
    assert_eq!(got, expected.as_bytes());
}

#[tokio::test(flavor = "multi_thread")]
async fn embeddings_go_to_the_embeddings_path() {
    let mock = MockLlm::start().await.unwrap();
    let envoy = Envoy::with_config(&json!({
        "provider": "openai",
        "options": {"model": "text-embedding-3-small"}
    }))
    .cluster("openai", mock.port())
    .start()
    .await
    .unwrap();

    let resp = envoy
        .post_json("/anything", &json!({"input": "hello world"}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "text-embedding-3-small");

    let r = mock.last().unwrap();
    assert_eq!(r.path, "/v1/embeddings");
    assert_eq!(r.json()["model"], "text-embedding-3-small");
    let log = envoy.access_log(1).await;
    assert_eq!(log[0]["request_type"], "ai_chat");
    assert_eq!(log[0]["llm_model"], "text-embedding-3-small");
}

#[tokio::test(flavor = "multi_thread")]
async fn endpoint_path_query_and_auth_query() {
    let mock = MockLlm::start().await.unwrap();
    let envoy = Envoy::with_config(&json!({
        "provider": "openai-compatible",
        "override": {"endpoint": "https://llm.example.com:8443/openai/deployments/d1/chat/completions?api-version=2024-06-01"},
        "auth": {"query": {"api-key": "s3cret&=x"}},
        "cluster": "azure"
    }))
    .cluster("azure", mock.port())
    .start()
    .await
    .unwrap();

    let resp = envoy
        .client()
        .post(envoy.url("/v1/chat/completions?client=param"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer client-gateway-key")
        .body(hello().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let r = mock.last().unwrap();
    // The gateway owns the upstream credentials: the client's key never reaches the provider.
    assert_eq!(r.header("authorization"), None);
    assert_eq!(r.path, "/openai/deployments/d1/chat/completions");
    assert_eq!(
        r.query.as_deref(),
        Some("api-version=2024-06-01&api-key=s3cret%26%3Dx")
    );
    assert_eq!(r.header("host"), Some("llm.example.com:8443"));
    // Nothing in the body needed a change: it went out as the client sent it.
    assert_eq!(r.body, hello().to_string().as_bytes());
}

#[tokio::test(flavor = "multi_thread")]
async fn client_cannot_choose_the_cluster() {
    let configured = MockLlm::start().await.unwrap();
    let other = MockLlm::start().await.unwrap();
    let envoy = Envoy::with_config(&json!({"provider": "deepseek"}))
        .cluster("deepseek", configured.port())
        .cluster("other", other.port())
        .start()
        .await
        .unwrap();

    for _ in 0..3 {
        let resp = envoy
            .client()
            .post(envoy.url("/chat/completions"))
            .header("content-type", "application/json")
            .header("x-ai-proxy-cluster", "other")
            .header("authorization", "Bearer byok")
            .body(hello().to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(other.count(), 0);
    assert_eq!(configured.count(), 3);
    let r = configured.last().unwrap();
    assert_eq!(r.path, "/chat/completions");
    assert_eq!(r.header("host"), Some("api.deepseek.com"));
    assert_eq!(r.header("x-ai-proxy-cluster"), None);
    // No auth configured: the client brings its own key.
    assert_eq!(r.header("authorization"), Some("Bearer byok"));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_openai_errors_and_never_reach_upstream() {
    let mock = MockLlm::start().await.unwrap();
    let envoy = Envoy::with_config(&json!({"provider": "openai", "max_req_body_size": 1024}))
        .cluster("openai", mock.port())
        .start()
        .await
        .unwrap();
    let c = envoy.client();
    let url = envoy.url("/v1/chat/completions");
    let post =
        |ct: &'static str, body: Vec<u8>| c.post(&url).header("content-type", ct).body(body).send();

    let resp = post("application/json", b"{\"messages\": [".to_vec())
        .await
        .unwrap();
    assert_error(resp, 400, "invalid_json").await;

    let resp = c
        .post(&url)
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_error(resp, 400, "empty_body").await;

    let resp = post("application/json", b"  ".to_vec()).await.unwrap();
    assert_error(resp, 400, "empty_body").await;

    let resp = post("text/plain", hello().to_string().into_bytes())
        .await
        .unwrap();
    assert_error(resp, 415, "unsupported_media_type").await;

    let resp = post("application/json", br#"{"prompt": "hi"}"#.to_vec())
        .await
        .unwrap();
    assert_error(resp, 400, "unknown_request_kind").await;

    let resp = post(
        "application/json",
        br#"{"model":"a","model":"b","messages":[]}"#.to_vec(),
    )
    .await
    .unwrap();
    assert_error(resp, 400, "duplicate_key").await;

    // Too large, announced by content-length.
    let big = json!({"messages": [{"role": "user", "content": "x".repeat(2000)}]}).to_string();
    let resp = post("application/json", big.clone().into_bytes())
        .await
        .unwrap();
    assert_error(resp, 413, "request_too_large").await;

    // Too large, streamed without a length: caught while buffering.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.as_bytes().chunks(300).map(|c| Ok(c.to_vec())).collect();
    let resp = c
        .post(&url)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_error(resp, 413, "request_too_large").await;

    let resp = c.get(&url).send().await.unwrap();
    let allow = resp.headers().get("allow").cloned();
    assert_error(resp, 405, "method_not_allowed").await;
    assert_eq!(allow.as_ref().and_then(|v| v.to_str().ok()), Some("POST"));

    assert_eq!(mock.count(), 0, "{:?}", mock.requests());

    // And the filter still serves good requests afterwards (no VM damage).
    let resp = envoy.chat(&hello()).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(mock.count(), 1);
}

/// A chunked request body whose options change it: the upstream gets a correct length.
#[tokio::test(flavor = "multi_thread")]
async fn chunked_request_is_reframed_after_a_change() {
    let mock = MockLlm::start().await.unwrap();
    let envoy =
        Envoy::with_config(&json!({"provider": "openai", "options": {"model": "gpt-4o-mini"}}))
            .cluster("openai", mock.port())
            .start()
            .await
            .unwrap();
    let body = hello().to_string();
    for _ in 0..2 {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            body.as_bytes().chunks(7).map(|c| Ok(c.to_vec())).collect();
        let resp = envoy
            .client()
            .post(envoy.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(futures_iter(chunks)))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 2);
    for r in reqs {
        assert_eq!(r.json()["model"], "gpt-4o-mini");
        assert_eq!(
            r.header("content-length"),
            Some(r.body.len().to_string().as_str())
        );
        assert_eq!(r.header("transfer-encoding"), None);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_upstream_gets_504() {
    let mock = MockLlm::start().await.unwrap();
    mock.set_default(Reply::default().delay(Duration::from_millis(1500)));
    let envoy = Envoy::with_config(&json!({"provider": "openai", "timeout": 300}))
        .cluster("openai", mock.port())
        .start()
        .await
        .unwrap();

    let started = Instant::now();
    let resp = envoy.chat(&hello()).await.unwrap();
    let took = started.elapsed();
    assert_error(resp, 504, "upstream_timeout").await;
    assert!(took < Duration::from_millis(1400), "took {took:?}");
    assert!(took >= Duration::from_millis(250), "took {took:?}");

    // A client cannot lift the configured timeout with Envoy's own headers.
    let resp = envoy
        .client()
        .post(envoy.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("x-envoy-upstream-rq-timeout-ms", "5000")
        .header("x-envoy-upstream-rq-per-try-timeout-ms", "5000")
        .body(hello().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 504);
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_may_outlast_the_timeout() {
    let mock = MockLlm::start().await.unwrap();
    mock.set_default(Reply::default().sse(6, Duration::from_millis(150)));
    let envoy = Envoy::with_config(&json!({"provider": "openai", "timeout": 400}))
        .cluster("openai", mock.port())
        .start()
        .await
        .unwrap();
    let mut body = hello();
    body["stream"] = json!(true);
    let resp = envoy.chat(&body).await.unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(text.contains("tok5"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_upstream_gets_503_json() {
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let envoy = Envoy::with_config(&json!({"provider": "openai"}))
        .cluster("openai", port)
        .start()
        .await
        .unwrap();
    let resp = envoy.chat(&hello()).await.unwrap();
    assert_error(resp, 503, "upstream_unavailable").await;
}

/// One provider asked for `gpt-4o`: a body that asks for it too is forwarded unpatched.
async fn gpt_4o_envoy() -> (MockLlm, Envoy) {
    let mock = MockLlm::start().await.unwrap();
    let envoy = Envoy::with_config(&json!({"provider": "openai", "options": {"model": "gpt-4o"}}))
        .cluster("openai", mock.port())
        .start()
        .await
        .unwrap();
    (mock, envoy)
}

#[tokio::test(flavor = "multi_thread")]
async fn unchanged_body_is_forwarded_byte_for_byte() {
    let (mock, envoy) = gpt_4o_envoy().await;
    // Odd spacing, escapes and number forms that a re-encoder would change.
    let body = "{ \"model\" : \"gpt-4o\",\n\t\"messages\": [ {\"role\":\"user\", \"content\": \"caf\\u00e9 \\/ \\ud83d\\ude00\"} ],\n  \"temperature\": 1.0e0, \"x_unknown\": {\"keep\": [1, 2.50]} }\n";
    let resp = envoy
        .client()
        .post(envoy.url("/v1/chat/completions"))
        .header("content-type", "application/json; charset=utf-8")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let r = mock.last().unwrap();
    assert_eq!(r.body, body.as_bytes());
    assert_eq!(
        r.header("content-length"),
        Some(body.len().to_string().as_str())
    );
}

/// Sends a chat body and checks the filter read it as serde_json would: a valid one
/// reaches the upstream byte for byte, an invalid one gets the 400. Returns whether it was
/// forwarded.
async fn read_exactly(
    c: &reqwest::Client,
    url: &str,
    mock: &MockLlm,
    body: Vec<u8>,
    valid: bool,
    what: &str,
) -> bool {
    let resp = c
        .post(url)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    if valid {
        assert_eq!(resp.status(), 200, "{what}");
        assert_eq!(mock.last().unwrap().body, body, "{what}");
    } else {
        assert_error(resp, 400, "invalid_json").await;
    }
    valid
}

/// The wasm build reads a body's strings 16 and 256 bytes at a time (`simd128`) and checks
/// for ASCII the same way: whatever ends plain string content (an escape, a quote, a control
/// character) or is not ASCII is found at every offset of a long string, as serde_json
/// finds it. (The unit tests run in the wasm build too, under Node's V8; this is the
/// filter as Envoy runs it.)
#[tokio::test(flavor = "multi_thread")]
async fn a_special_byte_anywhere_in_a_long_string_is_read_exactly() {
    let (mock, envoy) = gpt_4o_envoy().await;
    let c = envoy.client();
    let url = envoy.url("/v1/chat/completions");
    // (what is placed in the string, whether the body is valid JSON)
    let kinds: [(&[u8], bool); 6] = [
        (b"\\\"", true),
        (b"\\\\", true),
        (b"\\u00e9", true),
        ("\u{e9}".as_bytes(), true),
        // A control character, and a byte that is not UTF-8: refused wherever they are.
        (b"\x01", false),
        (b"\xff", false),
    ];
    let mut forwarded = 0;
    // Every offset of the first blocks, and around the edges of the 256-byte tests that
    // long ASCII runs take after 64 plain bytes (at 320 and 576).
    let offsets = (0..140).chain(310..330).chain(570..582);
    for (special, valid) in kinds {
        for at in offsets.clone() {
            let mut content = vec![b'x'; at];
            content.extend_from_slice(special);
            content.extend(std::iter::repeat_n(b'y', 650 - at));
            let mut body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":""#.to_vec();
            body.extend_from_slice(&content);
            // A second message, so the first one's closing quote (at 651) falls inside a
            // whole 256-byte test too.
            body.extend_from_slice(br#""},{"role":"user","content":""#);
            body.extend(std::iter::repeat_n(b'z', 300));
            body.extend_from_slice(br#""}]}"#);
            let what = format!("{:?} at {at}", String::from_utf8_lossy(special));
            forwarded += usize::from(read_exactly(c, &url, &mock, body, valid, &what).await);
        }
    }
    assert_eq!(mock.count(), forwarded);
}

/// Text dense in escapes (code, as agents send it): the wasm build passes over its short
/// escapes (`\n`, `\"`, ...) a block at a time, and reads `\uXXXX` escapes back to back
/// (text that is not ASCII, as some encoders spell it). Whatever else is in such text (an
/// escape it leaves to the byte-by-byte reading, one that is not JSON's, a control
/// character, a byte that is not UTF-8, a character that is not ASCII) is found at every
/// offset of a block, between escapes, as serde_json finds it.
#[tokio::test(flavor = "multi_thread")]
async fn code_dense_in_escapes_is_read_exactly() {
    let (mock, envoy) = gpt_4o_envoy().await;
    let c = envoy.client();
    let url = envoy.url("/v1/chat/completions");
    // One line of code as JSON spells it: 50 bytes, 4 escapes.
    let line: &[u8] = br#"    let name = format!(\"{}-{}\", key, value);\n\t"#;
    // Where a line can be cut without splitting an escape.
    let cuts: Vec<usize> = (0..line.len())
        .filter(|&k| k == 0 || line[k - 1] != b'\\')
        .step_by(4)
        .collect();
    let kinds: [(&[u8], bool); 9] = [
        (b"\\\\\\n", true),
        (b"\\u00e9", true),
        (b"\\u00e9\\u4F60xuz", true),
        ("\u{e9}".as_bytes(), true),
        (b"\\/\\b\\f\\r", true),
        (b"\\x", false),
        (b"\\u12G4", false),
        (b"\x01", false),
        (b"\xff", false),
    ];
    let mut forwarded = 0;
    let cases = kinds.iter().flat_map(|&kind| {
        let cuts = &cuts;
        (0..16).flat_map(move |align| {
            cuts.iter()
                .flat_map(move |&cut| [false, true].map(|last| (kind, align, cut, last)))
        })
    });
    for ((special, valid), align, cut, last) in cases {
        // Between escapes, or last: right before the string's closing quote, in the block
        // where escapes were just passed over.
        let mut content = vec![b'x'; align];
        content.extend(line.repeat(3));
        content.extend_from_slice(&line[..cut]);
        content.extend_from_slice(special);
        if !last {
            content.extend_from_slice(&line[cut..]);
            content.extend(line.repeat(3));
        }
        let mut body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":""#.to_vec();
        body.extend_from_slice(&content);
        body.extend_from_slice(br#""}]}"#);
        let what = format!(
            "{:?} after {align} + 3 lines + {cut}, last: {last}",
            String::from_utf8_lossy(special)
        );
        forwarded += usize::from(read_exactly(c, &url, &mock, body, valid, &what).await);
    }
    assert_eq!(mock.count(), forwarded);
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_errors_pass_through() {
    let mock = MockLlm::start().await.unwrap();
    mock.push(Reply::status(429).header("retry-after", "3"));
    let envoy = Envoy::with_config(&json!({"provider": "openai"}))
        .cluster("openai", mock.port())
        .start()
        .await
        .unwrap();
    let resp = envoy.chat(&hello()).await.unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers().get("retry-after").unwrap(), "3");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["message"], "mock error 429");
}

#[test]
fn invalid_configurations_are_refused_by_envoy() {
    let cases = [
        (
            json!({"provider": "openai", "modle": "gpt-4o"}),
            "unknown field `modle`",
        ),
        (json!({"provider": "openia"}), "unknown provider `openia`"),
        (
            json!({"provider": "openai-compatible"}),
            "field `override.endpoint`: is required",
        ),
        (
            json!({"provider": "openai", "ssl_verify": false}),
            "field `ssl_verify`",
        ),
    ];
    for (config, expected) in cases {
        let log = Envoy::with_config(&config)
            .cluster("openai", 9)
            .start_expecting_exit()
            .unwrap();
        assert!(
            log.contains("envoy-ai-proxy: invalid plugin configuration") && log.contains(expected),
            "{config}: log does not name the problem ({expected}):\n{log}"
        );
    }
    let log = Envoy::with_raw_config("{not json")
        .cluster("openai", 9)
        .start_expecting_exit()
        .unwrap();
    assert!(log.contains("invalid plugin configuration"), "{log}");
}

/// A stream of ready chunks for `reqwest::Body::wrap_stream`.
fn futures_iter(
    items: Vec<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + Sync + 'static {
    struct Iter(std::vec::IntoIter<Result<Vec<u8>, std::io::Error>>);
    impl futures_core::Stream for Iter {
        type Item = Result<Vec<u8>, std::io::Error>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            std::task::Poll::Ready(self.0.next())
        }
    }
    Iter(items.into_iter())
}

/// A client cannot make Envoy retry (and bill) the provider again, nor stretch timeouts,
/// with Envoy's own control headers.
#[tokio::test(flavor = "multi_thread")]
async fn client_cannot_steer_envoy_retries() {
    let mock = MockLlm::start().await.unwrap();
    mock.set_default(Reply::status(503));
    let envoy = Envoy::with_config(&json!({"provider": "openai"}))
        .cluster("openai", mock.port())
        .start()
        .await
        .unwrap();
    let resp = envoy
        .client()
        .post(envoy.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("x-envoy-retry-on", "5xx,retriable-status-codes")
        .header("x-envoy-retriable-status-codes", "503")
        .header("x-envoy-max-retries", "3")
        .body(hello().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(
        mock.count(),
        1,
        "the provider was called {} times",
        mock.count()
    );
    let r = mock.last().unwrap();
    assert_eq!(r.header("x-envoy-retry-on"), None);
    assert_eq!(r.header("x-envoy-max-retries"), None);
}
