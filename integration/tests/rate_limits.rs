//! Token rate limits (APISIX `ai-rate-limiting`) through the real Envoy: per instance, per
//! consumer (Envoy's `api_key_auth`), with and without rate-limit fallback, across workers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use integration::windows::clear_of_window_end;
use integration::{Envoy, MockLlm, Reply};
use serde_json::{json, Value};

fn chat() -> Value {
    json!({"messages": [{"role": "user", "content": "hi"}]})
}

/// Sleeps until a fixed window of `secs` has just begun, so a short test stays inside one.
async fn start_of_window(secs: u64) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let into = now.as_millis() as u64 % (secs * 1000);
    tokio::time::sleep(Duration::from_millis(secs * 1000 - into + 50)).await;
}

/// Waits for the next window when the current one of `secs` ends too soon for a test's
/// requests to all fall in one window.
async fn avoid_window_end(secs: u64) {
    let needed = if secs <= 60 { 10 } else { 60 };
    clear_of_window_end(secs, Duration::from_secs(needed)).await;
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn api_key_auth(header: &str) -> Value {
    json!({
        "name": "envoy.filters.http.api_key_auth",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuth",
            "credentials": [{"key": "john-key", "client": "john"}, {"key": "jane-key", "client": "jane"}],
            "key_sources": [{"header": "apikey"}],
            "forwarding": {"header": header, "hide_credentials": true}
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn spent_instance_is_skipped_until_its_window_ends() {
    let a = MockLlm::start().await.unwrap();
    let b = MockLlm::start().await.unwrap();
    a.set_default(Reply::default().usage(20, 11));
    b.set_default(Reply::default().usage(20, 11));
    let envoy = Envoy::with_config(&json!({
        "fallback_strategy": "instance_health_and_rate_limiting",
        "instances": [
            {"name": "a", "provider": "openai", "priority": 1},
            {"name": "b", "provider": "openai", "priority": 0}
        ],
        "rate_limiting": {"instances": [{"name": "a", "limit": 10, "time_window": 3}]}
    }))
    .cluster("a", a.port())
    .cluster("b", b.port())
    .start()
    .await
    .unwrap();

    start_of_window(3).await;
    for _ in 0..3 {
        assert_eq!(envoy.chat(&chat()).await.unwrap().status(), 200);
    }
    assert_eq!(
        (a.count(), b.count()),
        (1, 2),
        "request 1 on a, then b only"
    );
    start_of_window(3).await;
    let resp = envoy.chat(&chat()).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "x-ai-ratelimit-remaining-a").as_deref(),
        Some("10")
    );
    assert_eq!(a.count(), 2, "a is used again in the next window");
}

#[tokio::test(flavor = "multi_thread")]
async fn consumers_from_api_key_auth_have_their_own_limits() {
    let a = MockLlm::start().await.unwrap();
    let b = MockLlm::start().await.unwrap();
    a.set_default(Reply::default().usage(23, 8));
    b.set_default(Reply::default().usage(23, 8));
    let envoy = Envoy::with_config(&json!({
        "fallback_strategy": "instance_health_and_rate_limiting",
        "instances": [
            {"name": "a", "provider": "openai", "weight": 0, "options": {"model": "gpt-4"}},
            {"name": "b", "provider": "deepseek", "weight": 0, "options": {"model": "deepseek-chat"}}
        ],
        "consumers": [
            {"name": "john", "rate_limiting": {"instances": [{"name": "a", "limit": 10, "time_window": 60}]}},
            {"name": "jane", "rate_limiting": {"instances": [{"name": "b", "limit": 10, "time_window": 60}]}}
        ]
    }))
    .pre_filter(api_key_auth("x-consumer"))
    .cluster("a", a.port())
    .cluster("b", b.port())
    .start()
    .await
    .unwrap();
    avoid_window_end(60).await;

    let send = |key: Option<&'static str>, spoof: Option<&'static str>| {
        let mut r = envoy
            .client()
            .post(envoy.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(chat().to_string());
        if let Some(k) = key {
            r = r.header("apikey", k);
        }
        if let Some(s) = spoof {
            r = r.header("x-consumer", s);
        }
        r.send()
    };
    let model = |resp: reqwest::Response| async move {
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().await.unwrap();
        v["model"].as_str().unwrap().to_string()
    };

    assert_eq!(send(None, None).await.unwrap().status(), 401);
    assert_eq!(
        send(Some("wrong"), Some("john")).await.unwrap().status(),
        401
    );

    // john's first request claims to be jane: the consumer is still john, whose limit on a
    // is the one shown (jane has none there).
    let first = send(Some("john-key"), Some("jane")).await.unwrap();
    assert_eq!(
        header(&first, "x-ai-ratelimit-limit-a").as_deref(),
        Some("10")
    );
    assert_eq!(model(first).await, "gpt-4");
    assert_eq!(a.last().unwrap().headers_named("x-consumer"), ["john"]);
    assert_eq!(
        a.last().unwrap().header("apikey"),
        None,
        "credential hidden upstream"
    );

    assert_eq!(
        model(send(Some("jane-key"), None).await.unwrap()).await,
        "deepseek-chat"
    );
    assert_eq!(
        model(send(Some("john-key"), None).await.unwrap()).await,
        "deepseek-chat"
    );
    assert_eq!(
        model(send(Some("jane-key"), None).await.unwrap()).await,
        "gpt-4"
    );
    // Tokens by the consumer api_key_auth named (john: a, then b; jane: b, then a).
    let text = envoy.prometheus().await;
    for (instance, consumer) in [("a", "john"), ("b", "john"), ("a", "jane"), ("b", "jane")] {
        for (kind, n) in [("input", 23), ("output", 8)] {
            let line = format!(
                "aiproxy_consumer_tokens_total{{aiproxy_instance=\"{instance}\",aiproxy_token_type=\"{kind}\",aiproxy_consumer=\"{consumer}\"}} {n}"
            );
            assert!(text.contains(&line), "missing {line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_fallback_the_limit_rejects_with_headers() {
    let mock = MockLlm::start().await.unwrap();
    mock.set_default(Reply::default().usage(6, 4));
    let envoy = Envoy::with_config(&json!({
        "provider": "openai",
        "rate_limiting": {"limit": 30, "time_window": 60, "rejected_code": 403,
                          "rejected_msg": "monthly budget spent"}
    }))
    .cluster("openai", mock.port())
    .start()
    .await
    .unwrap();
    avoid_window_end(60).await;
    for remaining in ["30", "20", "10"] {
        let resp = envoy.chat(&chat()).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            header(&resp, "x-ai-ratelimit-limit-openai").as_deref(),
            Some("30")
        );
        assert_eq!(
            header(&resp, "x-ai-ratelimit-remaining-openai").as_deref(),
            Some(remaining)
        );
        let reset: u64 = header(&resp, "x-ai-ratelimit-reset-openai")
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&reset), "reset {reset}");
    }
    let resp = envoy.chat(&chat()).await.unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(
        header(&resp, "x-ai-ratelimit-remaining-openai").as_deref(),
        Some("0")
    );
    assert_eq!(
        header(&resp, "x-ai-ratelimit-limit-openai").as_deref(),
        Some("30")
    );
    let retry_after: u64 = header(&resp, "retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["message"], "monthly budget spent");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(mock.count(), 3);

    let text = envoy.prometheus().await;
    assert!(
        text.contains("aiproxy_ratelimit_rejections_total{aiproxy_instance=\"openai\"} 1"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn completion_tokens_strategy_counts_only_completions() {
    let mock = MockLlm::start().await.unwrap();
    mock.set_default(Reply::default().usage(100, 4));
    let envoy = Envoy::with_config(&json!({
        "provider": "openai",
        "rate_limiting": {"limit": 10, "time_window": 60, "limit_strategy": "completion_tokens"}
    }))
    .cluster("openai", mock.port())
    .start()
    .await
    .unwrap();
    avoid_window_end(60).await;
    for remaining in ["10", "6", "2"] {
        let resp = envoy.chat(&chat()).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            header(&resp, "x-ai-ratelimit-remaining-openai").as_deref(),
            Some(remaining)
        );
    }
    let resp = envoy.chat(&chat()).await.unwrap();
    assert_eq!(resp.status(), 429);
    assert!(header(&resp, "retry-after").is_some());
}

/// Sends `tasks` x `each` chats at once, every one answered 200.
async fn in_parallel(envoy: &Envoy, tasks: usize, each: usize) {
    let mut running = Vec::new();
    for _ in 0..tasks {
        let url = envoy.url("/v1/chat/completions");
        running.push(tokio::spawn(async move {
            let c = reqwest::Client::new();
            for _ in 0..each {
                let r = c
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(chat().to_string())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                r.bytes().await.unwrap();
            }
        }));
    }
    for t in running {
        t.await.unwrap();
    }
    let stats = envoy
        .admin("/stats?filter=worker_.\\.downstream_cx_total")
        .await;
    assert!(
        stats.lines().filter(|l| !l.ends_with(": 0")).count() >= 2,
        "both workers served: {stats}"
    );
}

/// The route's counter of `instance` as the operator sees it (a gauge refreshed every
/// second), once it reads `expected` or after 10 s.
async fn used_gauge(envoy: &Envoy, instance: &str, expected: u64) -> String {
    let gauge = format!(
        "aiproxy_ratelimit_used_tokens{{aiproxy_instance=\"{instance}\",aiproxy_consumer=\"all\"}}"
    );
    let mut last = String::new();
    for _ in 0..40 {
        let text = envoy.prometheus().await;
        last = text
            .lines()
            .find(|l| l.starts_with(&gauge))
            .unwrap_or("")
            .to_string();
        if last == format!("{gauge} {expected}") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    last.strip_prefix(&gauge)
        .unwrap_or(&last)
        .trim()
        .to_string()
}

/// The exact total across two workers. At this load the read-modify-write windows of the two
/// workers rarely overlap, so this would also pass without compare-and-swap (checked): the
/// CAS retry path itself is proven by `ratelimit::tests::a_lost_race_is_retried_and_nothing_is_lost`.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_charges_across_workers_lose_nothing() {
    let mock = MockLlm::start().await.unwrap();
    mock.set_default(Reply::default().usage(3, 4));
    let window = 100_000;
    let envoy = Envoy::with_config(&json!({
        "provider": "openai",
        "rate_limiting": {"limit": 1_000_000, "time_window": window}
    }))
    .cluster("openai", mock.port())
    .concurrency(2)
    .start()
    .await
    .unwrap();
    avoid_window_end(window).await;
    // 16 x 12 = 192, plus 8 more to make 200.
    in_parallel(&envoy, 16, 12).await;
    for _ in 0..8 {
        assert_eq!(envoy.chat(&chat()).await.unwrap().status(), 200);
    }
    assert_eq!(mock.count(), 200);
    assert_eq!(used_gauge(&envoy, "openai", 1400).await, "1400");
    // And as the next request is told.
    let resp = envoy.chat(&chat()).await.unwrap();
    assert_eq!(
        header(&resp, "x-ai-ratelimit-remaining-openai").as_deref(),
        Some("998600")
    );
}

/// The counters of one limit set share one shared-data value (one read at admission), so
/// charges to different instances race for it: across two workers and three instances taken
/// in turn, every instance's count is exactly what its answers used.
#[tokio::test(flavor = "multi_thread")]
async fn charges_to_the_instances_of_one_limit_set_lose_nothing() {
    let mocks = [
        MockLlm::start().await.unwrap(),
        MockLlm::start().await.unwrap(),
        MockLlm::start().await.unwrap(),
    ];
    for (m, completion) in mocks.iter().zip([4, 5, 6]) {
        m.set_default(Reply::default().usage(3, completion));
    }
    let window = 100_000;
    let mut b = Envoy::with_config(&json!({
        "instances": [
            {"name": "a", "provider": "openai"},
            {"name": "b", "provider": "openai"},
            {"name": "c", "provider": "openai"}
        ],
        "rate_limiting": {"limit": 1_000_000, "time_window": window}
    }))
    .concurrency(2);
    for (name, m) in ["a", "b", "c"].iter().zip(&mocks) {
        b = b.cluster(name, m.port());
    }
    let envoy = b.start().await.unwrap();
    avoid_window_end(window).await;
    in_parallel(&envoy, 16, 12).await;
    let counts: Vec<usize> = mocks.iter().map(MockLlm::count).collect();
    assert_eq!(counts.iter().sum::<usize>(), 192);
    assert!(
        counts.iter().all(|n| *n > 0),
        "every instance answered: {counts:?}"
    );
    for ((name, n), total) in ["a", "b", "c"].iter().zip(&counts).zip([7, 8, 9]) {
        let expected = *n as u64 * total;
        assert_eq!(
            used_gauge(&envoy, name, expected).await,
            expected.to_string(),
            "instance {name}, {n} answers of {total} tokens"
        );
    }
    // The next request on a is told what is left of a's own limit.
    let resp = envoy.chat(&chat()).await.unwrap();
    let shown: Vec<_> = ["a", "b", "c"]
        .iter()
        .filter_map(|i| header(&resp, &format!("x-ai-ratelimit-remaining-{i}")))
        .collect();
    assert_eq!(shown.len(), 1, "one instance answered: {shown:?}");
    let left: u64 = shown[0].parse().unwrap();
    assert!(
        [7, 8, 9]
            .iter()
            .zip(&counts)
            .any(|(t, n)| left == 1_000_000 - *n as u64 * t),
        "{left} is one instance's limit less its answers"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_configurations_count_separately() {
    let mock = MockLlm::start().await.unwrap();
    mock.set_default(Reply::default().usage(6, 4));
    let limits = json!({"limit": 30, "time_window": 60});
    let envoy = Envoy::with_config(&json!({"provider": "openai", "rate_limiting": limits}))
        .second_listener(&json!({"provider": "openai", "rate_limiting": limits, "timeout": 20000}))
        .cluster("openai", mock.port())
        .start()
        .await
        .unwrap();
    avoid_window_end(60).await;
    let post = |listener: &'static str| {
        envoy
            .client()
            .post(envoy.url_on(listener, "/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(chat().to_string())
            .send()
    };
    for _ in 0..3 {
        assert_eq!(post("ai_gateway").await.unwrap().status(), 200);
    }
    assert_eq!(post("ai_gateway").await.unwrap().status(), 429);
    let other = post("ai_gateway_b").await.unwrap();
    assert_eq!(other.status(), 200);
    assert_eq!(
        header(&other, "x-ai-ratelimit-remaining-openai").as_deref(),
        Some("30")
    );
}
