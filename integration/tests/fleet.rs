//! One token budget across a fleet of Envoys, through a real rate limit service (the test
//! service on the `limitador` crate, `ratelimit-service/`) over a real Redis: two Envoy
//! processes share one budget (instance and consumer limits), two service processes share
//! one Redis, a spent instance is skipped by the other Envoy at once, the service stopped or
//! hung lets requests through (or refuses them with `failure_mode_deny`) and counts it, limits
//! come back with the service, streams are charged, and reservations never overspend.
//!
//! Needs `redis-server` and `RLS_BIN` (scripts/test.sh: `ensure_redis`, `build_rls`).

use std::time::Duration;

use integration::rls::{envoy_ratelimit_config, limitador_limits};
use integration::services::{Hung, RateLimitService, Redis};
use integration::windows::clear_of_window_end;
use integration::{Envoy, MockLlm, Reply};
use serde_json::{json, Value};

const DOMAIN: &str = "ai-proxy";

/// The plugin configuration with the service on cluster `rls`.
fn with_service(mut config: Value, protocol: &str, extra: Value) -> Value {
    let mut service = json!({"cluster": "rls", "domain": DOMAIN, "protocol": protocol,
                             "timeout_ms": 300});
    if let (Some(s), Some(e)) = (service.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    config["rate_limiting"]["service"] = service;
    config
}

/// The service's limits, written from the configuration as `envoy-config` writes them.
fn limits(config: &Value, flavor: &str) -> String {
    let parsed = envoy_ai_proxy::config::parse(config.to_string().as_bytes()).unwrap();
    match flavor {
        "limitador" => limitador_limits(&parsed, DOMAIN),
        _ => envoy_ratelimit_config(&parsed, DOMAIN),
    }
}

async fn envoy(config: &Value, mock: &MockLlm, rls_port: u16) -> Envoy {
    let mut b = Envoy::with_config(config).grpc_cluster("rls", rls_port);
    let parsed = envoy_ai_proxy::config::parse(config.to_string().as_bytes()).unwrap();
    for inst in &parsed.instances {
        b = b.cluster(&inst.cluster, mock.port());
    }
    b.start().await.unwrap()
}

/// Ten tokens per answer.
fn ten() -> Reply {
    Reply::default().usage(4, 6)
}

fn chat() -> Value {
    json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
}

/// Status of each request, alternating between the Envoys; settlements land between them
/// (they are sent when an answer ends, and nobody waits for them).
async fn sequence(envoys: &[&Envoy], n: usize, consumer: Option<&str>) -> Vec<u16> {
    let mut out = Vec::new();
    for i in 0..n {
        let e = envoys[i % envoys.len()];
        let mut req = e
            .client()
            .post(e.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(chat().to_string());
        if let Some(c) = consumer {
            req = req.header("x-consumer", c);
        }
        out.push(req.send().await.unwrap().status().as_u16());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    out
}

fn instance_limit() -> Value {
    json!({"provider": "openai",
           "rate_limiting": {"instances": [{"name": "openai", "limit": 30, "time_window": 60}],
                             "rejected_code": 403}})
}

fn consumer_limit() -> Value {
    json!({"provider": "openai", "rate_limiting": {},
           "consumers": [{"name": "john", "rate_limiting": {"limit": 30, "time_window": 60,
                                                            "rejected_code": 403}}]})
}

#[tokio::test(flavor = "multi_thread")]
async fn two_envoys_share_one_budget_through_one_service() {
    for (name, base, consumer) in [
        ("instance limit", instance_limit(), None),
        ("consumer limit", consumer_limit(), Some("john")),
    ] {
        for protocol in ["limitador", "envoy"] {
            let flavor = if protocol == "limitador" {
                "limitador"
            } else {
                "envoy-ratelimit"
            };
            let config = with_service(base.clone(), protocol, json!({}));
            let redis = Redis::start().unwrap();
            let rls =
                RateLimitService::start(flavor, &limits(&config, flavor), Some(&redis)).unwrap();
            let mock = MockLlm::start().await.unwrap();
            mock.set_default(ten());
            let (e1, e2) = (
                envoy(&config, &mock, rls.port).await,
                envoy(&config, &mock, rls.port).await,
            );
            if flavor == "envoy-ratelimit" {
                // Its windows are aligned to the clock (Limitador's start at the first hit).
                clear_of_window_end(60, Duration::from_secs(10)).await;
            }
            let got = sequence(&[&e1, &e2], 4, consumer).await;
            assert_eq!(got, [200, 200, 200, 403], "{name}, {protocol}");
            assert_eq!(
                mock.count(),
                3,
                "{name}, {protocol}: the refused one never went upstream"
            );
            if let Some(c) = consumer {
                // Another consumer has no limit: still served.
                let other = sequence(&[&e1], 1, Some("jane")).await;
                assert_eq!(other, [200], "{name}, {protocol}: {c}'s budget is his");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_services_share_one_redis() {
    let config = with_service(instance_limit(), "limitador", json!({}));
    let redis = Redis::start().unwrap();
    let text = limits(&config, "limitador");
    let rls1 = RateLimitService::start("limitador", &text, Some(&redis)).unwrap();
    let rls2 = RateLimitService::start("limitador", &text, Some(&redis)).unwrap();
    let mock = MockLlm::start().await.unwrap();
    mock.set_default(ten());
    let e1 = envoy(&config, &mock, rls1.port).await;
    let e2 = envoy(&config, &mock, rls2.port).await;
    assert_eq!(sequence(&[&e1, &e2], 4, None).await, [200, 200, 200, 403]);
    assert_eq!(redis.limitador_count(DOMAIN, "openai").unwrap(), 30);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_spent_through_one_envoy_is_skipped_by_the_other_at_once() {
    let config = with_service(
        json!({"instances": [{"name": "a", "provider": "openai", "priority": 1},
                             {"name": "b", "provider": "openai", "priority": 0}],
               "fallback_strategy": ["rate_limiting"],
               "rate_limiting": {"instances": [{"name": "a", "limit": 10, "time_window": 60}]}}),
        "limitador",
        json!({}),
    );
    let redis = Redis::start().unwrap();
    let rls =
        RateLimitService::start("limitador", &limits(&config, "limitador"), Some(&redis)).unwrap();
    let mock = MockLlm::start().await.unwrap();
    mock.set_default(ten());
    let e1 = envoy(&config, &mock, rls.port).await;
    let e2 = envoy(&config, &mock, rls.port).await;
    assert_eq!(sequence(&[&e1], 1, None).await, [200]);
    // Envoy 2 has never seen a: the service says it is spent, b serves the same request.
    let r = e2.chat(&chat()).await.unwrap();
    assert_eq!(r.status(), 200);
    let log = e2.access_log(1).await;
    assert_eq!(log[0]["llm_instance"], "b");
    assert_eq!(log[0]["llm_attempts"], "1", "skipped, not tried");
    // And Envoy 2 noted it: the next request goes to b without asking about a.
    let r = e2.chat(&chat()).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(e2.access_log(2).await[1]["llm_instance"], "b");
}

/// The failure metric's value in an Envoy.
async fn failures(envoy: &Envoy) -> u64 {
    let text = envoy.prometheus().await;
    text.lines()
        .find(|l| l.starts_with("aiproxy_rate_limit_service_failures_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_or_hung_service_fails_open_or_closed_and_limits_come_back() {
    let mock = MockLlm::start().await.unwrap();
    mock.set_default(ten());
    let open = with_service(instance_limit(), "limitador", json!({}));
    let closed = with_service(
        instance_limit(),
        "limitador",
        json!({"failure_mode_deny": true}),
    );
    let redis = Redis::start().unwrap();
    let mut rls =
        RateLimitService::start("limitador", &limits(&open, "limitador"), Some(&redis)).unwrap();
    let e_open = envoy(&open, &mock, rls.port).await;
    let e_closed = envoy(&closed, &mock, rls.port).await;
    assert_eq!(
        sequence(&[&e_open, &e_closed], 3, None).await,
        [200, 200, 200]
    );

    // Stopped: refused connections.
    rls.stop();
    assert_eq!(
        sequence(&[&e_open], 2, None).await,
        [200, 200],
        "fails open"
    );
    let r = e_closed.chat(&chat()).await.unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_service_unavailable");
    assert!(failures(&e_open).await >= 2);
    assert!(failures(&e_closed).await >= 1);

    // Back: the budget the service kept (30 of 30 used) applies again, without a restart.
    rls.restart().unwrap();
    assert_eq!(sequence(&[&e_open, &e_closed], 2, None).await, [403, 403]);

    // Hung: accepts, never answers; each check waits `timeout_ms`, then the failure mode.
    let hung = Hung::start().unwrap();
    let e_open = envoy(&open, &mock, hung.port).await;
    let e_closed = envoy(&closed, &mock, hung.port).await;
    let started = std::time::Instant::now();
    assert_eq!(sequence(&[&e_open], 1, None).await, [200]);
    assert_eq!(e_closed.chat(&chat()).await.unwrap().status(), 503);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(failures(&e_open).await >= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_are_charged_their_real_usage() {
    let config = with_service(instance_limit(), "limitador", json!({}));
    let redis = Redis::start().unwrap();
    let rls =
        RateLimitService::start("limitador", &limits(&config, "limitador"), Some(&redis)).unwrap();
    let mock = MockLlm::start().await.unwrap();
    mock.set_default(
        Reply::default()
            .usage(5, 7)
            .sse(3, Duration::from_millis(5)),
    );
    let e1 = envoy(&config, &mock, rls.port).await;
    let mut body = chat();
    body["stream"] = json!(true);
    for _ in 0..2 {
        let text = e1.chat(&body).await.unwrap().text().await.unwrap();
        assert!(text.contains("[DONE]"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(redis.limitador_count(DOMAIN, "openai").unwrap(), 24);
}

/// Twenty requests at once, alternating between two Envoys, `max_tokens: 100`, answered
/// with 100 completion tokens after a pause; the limit is 300 completion tokens.
async fn twenty_at_once(reserve: bool) -> (usize, u64) {
    let mut rl = json!({"instances": [{"name": "openai", "limit": 300, "time_window": 60}],
                        "limit_strategy": "completion_tokens"});
    if reserve {
        rl["reserve"] = json!("max_tokens");
    }
    let config = with_service(
        json!({"provider": "openai", "rate_limiting": rl}),
        "limitador",
        json!({}),
    );
    let redis = Redis::start().unwrap();
    let rls =
        RateLimitService::start("limitador", &limits(&config, "limitador"), Some(&redis)).unwrap();
    let mock = MockLlm::start().await.unwrap();
    mock.set_default(
        Reply::default()
            .usage(10, 100)
            .delay(Duration::from_millis(500)),
    );
    let e1 = envoy(&config, &mock, rls.port).await;
    let e2 = envoy(&config, &mock, rls.port).await;
    let mut body = chat();
    body["max_tokens"] = json!(100);
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..20 {
        let e = if i % 2 == 0 { &e1 } else { &e2 };
        let req = e
            .client()
            .post(e.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body.to_string());
        calls.spawn(async move { req.send().await.unwrap().status().as_u16() });
    }
    let statuses = calls.join_all().await;
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    tokio::time::sleep(Duration::from_millis(500)).await;
    (admitted, redis.limitador_count(DOMAIN, "openai").unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn reservations_across_two_envoys_never_overspend() {
    assert_eq!(twenty_at_once(true).await, (3, 300));
    // Without: admitted while at least 1 token is left, so all twenty may run at once: the
    // documented bound is limit - 1 + the cost of every request in flight.
    let (admitted, used) = twenty_at_once(false).await;
    eprintln!("without reserve: {admitted} admitted, {used} tokens");
    assert_eq!(used, 100 * admitted as u64);
    assert!(used <= 300 - 1 + 100 * 20, "{used}");
    assert!(
        admitted > 3,
        "check + report lets concurrent requests overspend: {admitted}"
    );
}

/// `text` with `from` (which must occur exactly once) replaced by `to`.
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "`{from}` should occur once");
    text.replacen(from, to, 1)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_many_envoys_example_is_current_and_runs() {
    let dir = integration::envoy::repo_root().join("examples/many-envoys");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let config: Value = serde_json::from_str(&read("plugin-config.json")).unwrap();
    // What envoy-config writes today (see the header of docker-compose.yaml).
    let opts = integration::bootstrap::Options {
        wasm: "/etc/envoy/envoy_ai_proxy.wasm".into(),
        rls_address: Some(("limitador".into(), 8081)),
        header: "Generated by envoy-config from examples/many-envoys/plugin-config.json.".into(),
        ..Default::default()
    };
    let bootstrap = read("envoy.yaml");
    assert_eq!(
        integration::bootstrap::generate(&config, &opts).unwrap(),
        bootstrap,
        "regenerate examples/many-envoys/envoy.yaml"
    );
    let limits_file = read("limits.yaml");
    assert_eq!(
        integration::rls::service_limits_file(&config).unwrap(),
        limits_file,
        "regenerate examples/many-envoys/limits.yaml"
    );
    // The Compose file and the manifests parse, and carry the same files.
    let check = r#"
import sys, yaml
d = sys.argv[1]
compose = yaml.safe_load(open(d + "/docker-compose.yaml"))
s = compose["services"]
assert set(s) == {"redis", "limitador", "mock", "envoy-a", "envoy-b"}, set(s)
assert "./limits.yaml:/etc/limitador/limits.yaml:ro" in s["limitador"]["volumes"]
for e in ("envoy-a", "envoy-b"):
    assert "./envoy.yaml:/etc/envoy/envoy.yaml:ro" in s[e]["volumes"]
docs = list(yaml.safe_load_all(open(d + "/kubernetes.yaml")))
maps = {m["metadata"]["name"]: m["data"] for m in docs if m["kind"] == "ConfigMap"}
assert maps["envoy-bootstrap"]["envoy.yaml"] == open(d + "/envoy.yaml").read()
assert maps["limitador-limits"]["limits.yaml"] == open(d + "/limits.yaml").read()
gw = [m for m in docs if m["kind"] == "Deployment" and m["metadata"]["name"] == "ai-gateway"][0]
assert gw["spec"]["replicas"] == 2
print("ok")
"#;
    let out = std::process::Command::new(integration::clients::python())
        .args(["-c", check])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Natively: the same bootstrap twice, the test service on the same limits, real Redis.
    let redis = Redis::start().unwrap();
    let rls = RateLimitService::start("limitador", &limits_file, Some(&redis)).unwrap();
    let mock = MockLlm::start().await.unwrap();
    mock.set_default(ten());
    let wasm = integration::envoy::wasm_path().unwrap();
    let mut native = replace_once(
        &bootstrap,
        "\"/etc/envoy/envoy_ai_proxy.wasm\"",
        &integration::envoy::yaml_str(&wasm.to_string_lossy()),
    );
    for (host, port) in [("mock", mock.port()), ("limitador", rls.port)] {
        native = replace_once(
            &native,
            &format!("address: \"{host}\"\n                port_value: 8081"),
            &format!("address: \"127.0.0.1\"\n                port_value: {port}"),
        );
    }
    for port in ["9901", "10000"] {
        native = native.replace(&format!("port_value: {port}"), "port_value: 0");
    }
    native = native.replace("address: \"0.0.0.0\"", "address: \"127.0.0.1\"");
    let a = Envoy::with_bootstrap(native.clone()).start().await.unwrap();
    let b = Envoy::with_bootstrap(native).start().await.unwrap();
    assert_eq!(sequence(&[&a, &b], 4, None).await, [200, 200, 200, 429]);
}
