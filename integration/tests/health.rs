//! Health checks through the real Envoy: active probes (one prober per Envoy), passive
//! checks from real traffic, Retry-After cooldowns, and "all unhealthy means all used".

use std::time::{Duration, Instant};

use integration::{Envoy, MockLlm, Reply};
use serde_json::{json, Value};

fn chat() -> Value {
    json!({"messages": [{"role": "user", "content": "hi"}]})
}

/// Chat requests (POSTs) a mock has answered.
fn chats(m: &MockLlm) -> usize {
    m.requests().iter().filter(|r| r.method == "POST").count()
}

fn active(path: &str, interval: f64) -> Value {
    json!({"active": {
        "http_path": path,
        "host": "probe.example.com",
        "req_headers": ["X-Probe: yes"],
        "healthy": {"interval": interval, "successes": 2},
        "unhealthy": {"interval": interval, "http_failures": 2}
    }})
}

async fn gauge(envoy: &Envoy, instance: &str) -> Option<u64> {
    let text = envoy.prometheus().await;
    let prefix = format!("aiproxy_healthy{{aiproxy_instance=\"{instance}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
}

async fn wait_gauge(envoy: &Envoy, instance: &str, want: u64, within: Duration) -> Duration {
    let start = Instant::now();
    while start.elapsed() < within {
        if gauge(envoy, instance).await == Some(want) {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{instance} health gauge never became {want} within {within:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_probes_take_an_instance_out_and_passing_ones_bring_it_back() {
    let a = MockLlm::start().await.unwrap();
    let b = MockLlm::start().await.unwrap();
    let envoy = Envoy::with_config(&json!({
        "instances": [
            {"name": "a", "provider": "openai", "priority": 1,
             "auth": {"header": {"Authorization": "Bearer key-a"}}, "checks": active("/health", 0.5)},
            {"name": "b", "provider": "openai"}
        ]
    }))
    .cluster("a", a.port())
    .cluster("b", b.port())
    .start()
    .await
    .unwrap();
    wait_gauge(&envoy, "a", 1, Duration::from_secs(3)).await;
    assert_eq!(envoy.chat(&chat()).await.unwrap().status(), 200);
    assert_eq!(chats(&a), 1);

    // The probe carries the instance's auth, the configured host, path and headers.
    let probe = a.requests_to("/health").pop().expect("a probe");
    assert_eq!(probe.method, "GET");
    assert_eq!(probe.header("authorization"), Some("Bearer key-a"));
    assert_eq!(probe.header("host"), Some("probe.example.com"));
    assert_eq!(probe.header("x-probe"), Some("yes"));

    a.set_path_reply("/health", Reply::status(500));
    wait_gauge(&envoy, "a", 0, Duration::from_secs(4)).await;
    for _ in 0..20 {
        assert_eq!(envoy.chat(&chat()).await.unwrap().status(), 200);
    }
    assert_eq!(chats(&a), 1, "no request reaches a while it is unhealthy");
    assert_eq!(chats(&b), 20);

    a.set_path_reply("/health", Reply::status(200));
    let back = Instant::now();
    loop {
        assert_eq!(envoy.chat(&chat()).await.unwrap().status(), 200);
        if chats(&a) == 2 {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(5), "a never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // interval x successes, plus one interval, plus the 200 ms tick.
    let took = back.elapsed();
    assert!(
        took <= Duration::from_millis(1500 + 200 + 300),
        "back after {took:?}"
    );
    eprintln!("a back in rotation after {took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_prober_per_envoy_not_one_per_worker() {
    let a = MockLlm::start().await.unwrap();
    let b = MockLlm::start().await.unwrap();
    let envoy = Envoy::with_config(&json!({
        "instances": [
            {"name": "a", "provider": "openai", "checks": active("/health", 0.5)},
            {"name": "b", "provider": "openai", "checks": active("/ping", 0.5)}
        ]
    }))
    .cluster("a", a.port())
    .cluster("b", b.port())
    .concurrency(2)
    .start()
    .await
    .unwrap();
    wait_gauge(&envoy, "a", 1, Duration::from_secs(3)).await;
    let (a0, b0) = (a.requests_to("/health").len(), b.requests_to("/ping").len());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (a1, b1) = (
        a.requests_to("/health").len() - a0,
        b.requests_to("/ping").len() - b0,
    );
    // 3 s at one probe per 0.5 s: 6, give or take a tick; three VMs probing would give ~18.
    assert!((4..=8).contains(&a1), "a got {a1} probes in 3 s");
    assert!((4..=8).contains(&b1), "b got {b1} probes in 3 s");
}

#[tokio::test(flavor = "multi_thread")]
async fn when_every_instance_is_unhealthy_all_are_used() {
    let a = MockLlm::start().await.unwrap();
    let b = MockLlm::start().await.unwrap();
    a.set_path_reply("/health", Reply::status(503));
    b.set_path_reply("/health", Reply::status(503));
    let envoy = Envoy::with_config(&json!({
        "instances": [
            {"name": "a", "provider": "openai", "weight": 1, "checks": active("/health", 0.3)},
            {"name": "b", "provider": "openai", "weight": 1, "checks": active("/health", 0.3)}
        ]
    }))
    .cluster("a", a.port())
    .cluster("b", b.port())
    .start()
    .await
    .unwrap();
    wait_gauge(&envoy, "a", 0, Duration::from_secs(4)).await;
    wait_gauge(&envoy, "b", 0, Duration::from_secs(4)).await;
    for _ in 0..6 {
        assert_eq!(envoy.chat(&chat()).await.unwrap().status(), 200);
    }
    assert_eq!((chats(&a), chats(&b)), (3, 3));
}

#[tokio::test(flavor = "multi_thread")]
async fn consecutive_failures_trip_a_cooldown_then_the_instance_is_tried_again() {
    let a = MockLlm::start().await.unwrap();
    let b = MockLlm::start().await.unwrap();
    a.set_default(Reply::status(503));
    let envoy = Envoy::with_config(&json!({
        "fallback_strategy": "http_5xx",
        "instances": [
            {"name": "a", "provider": "openai", "priority": 1,
             "checks": {"passive": {"unhealthy": {"http_failures": 3}, "cooldown": 1.5}}},
            {"name": "b", "provider": "openai"}
        ]
    }))
    .cluster("a", a.port())
    .cluster("b", b.port())
    .start()
    .await
    .unwrap();
    for _ in 0..3 {
        assert_eq!(envoy.chat(&chat()).await.unwrap().status(), 200);
    }
    assert_eq!((chats(&a), chats(&b)), (3, 3));
    let tripped = Instant::now();
    for _ in 0..5 {
        assert_eq!(envoy.chat(&chat()).await.unwrap().status(), 200);
    }
    assert_eq!(chats(&a), 3, "a is skipped during the cooldown");
    assert!(tripped.elapsed() < Duration::from_millis(1500));
    let logged = Instant::now();
    while !envoy.log().contains("instance a taken out for") {
        assert!(
            logged.elapsed() < Duration::from_secs(3),
            "transition not logged"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    assert_eq!(chats(&a), 3);
    a.set_default(Reply::default());
    tokio::time::sleep(Duration::from_millis(1600).saturating_sub(tripped.elapsed())).await;
    assert_eq!(envoy.chat(&chat()).await.unwrap().status(), 200);
    assert_eq!(chats(&a), 4, "a is tried again after the cooldown");
    assert_eq!(envoy.chat(&chat()).await.unwrap().status(), 200);
    assert_eq!(chats(&a), 5, "and stays in once it answers");
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_after_takes_an_instance_out_for_that_long() {
    let a = MockLlm::start().await.unwrap();
    let b = MockLlm::start().await.unwrap();
    a.push(Reply::status(429).header("retry-after", "2"));
    let envoy = Envoy::with_config(&json!({
        "fallback_strategy": ["http_429"],
        "instances": [
            {"name": "a", "provider": "openai", "priority": 1, "checks": {"passive": {}}},
            {"name": "b", "provider": "openai"}
        ]
    }))
    .cluster("a", a.port())
    .cluster("b", b.port())
    .start()
    .await
    .unwrap();
    let first = Instant::now();
    assert_eq!(envoy.chat(&chat()).await.unwrap().status(), 200);
    assert_eq!((chats(&a), chats(&b)), (1, 1));
    while first.elapsed() < Duration::from_millis(1700) {
        assert_eq!(envoy.chat(&chat()).await.unwrap().status(), 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(chats(&a), 1, "a is left out while its Retry-After runs");
    tokio::time::sleep(Duration::from_millis(2300).saturating_sub(first.elapsed())).await;
    assert_eq!(envoy.chat(&chat()).await.unwrap().status(), 200);
    assert_eq!(chats(&a), 2, "a is back after 2 s");
}
