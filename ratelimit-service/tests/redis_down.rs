//! The service when its Redis goes away: what a client with a 1 s deadline sees (as the
//! filter's `timeout_ms` would be), that it is never an admission, and when limiting resumes
//! without restarting the service. Run with `--nocapture` to see the timings.
//!
//! The Limitador flavor reconnects as limitador-server 2.4 does (redis-rs 0.27 defaults): one
//! attempt at once, the next 1-2 s later, then every 60-120 s; calls wait meanwhile. So a
//! short outage heals in about 2 s and a longer one takes minutes (the ignored test shows it).
//! The envoy-ratelimit flavor fails each call at once while Redis is away, as upstream does,
//! and works again with the first call after Redis is back.

mod common;

use std::future::Future;
use std::time::{Duration, Instant};

use ai_ratelimit_service::rls::{Code, RateLimitRequest, RateLimitResponse};
use common::{exact, limitador_limit, request, Redis, Service};

const INSTANCE_A: &[(&str, &str)] = &[("instance", "a")];
const DEADLINE: Duration = Duration::from_secs(1);
const ENVOY_CONFIG: &str = "domain: ai-proxy\ndescriptors:\n  - {key: instance, value: a, rate_limit: {unit: hour, requests_per_unit: 30}}\n";

#[derive(Debug, PartialEq)]
enum Outcome {
    Answer(i32),
    Status(tonic::Code),
    NoAnswer,
}

type Answer = Result<tonic::Response<RateLimitResponse>, tonic::Status>;

fn deadline(req: RateLimitRequest) -> tonic::Request<RateLimitRequest> {
    let mut r = tonic::Request::new(req);
    r.set_timeout(DEADLINE); // sent as grpc-timeout, as Envoy does
    r
}

/// One call, bounded by the deadline on this side too.
async fn outcome<Fut: Future<Output = Answer>>(call: Fut) -> (Outcome, Duration) {
    let t = Instant::now();
    let o = match tokio::time::timeout(DEADLINE + Duration::from_millis(500), call).await {
        Ok(Ok(r)) => Outcome::Answer(r.into_inner().overall_code),
        Ok(Err(s)) => Outcome::Status(s.code()),
        Err(_) => Outcome::NoAnswer,
    };
    (o, t.elapsed())
}

/// Stops Redis, calls `calls` times (none may be admitted), restarts it after `outage`, and
/// answers how long after the restart the first OK came (at most `recover_within`).
async fn outage<F, Fut>(
    redis: &mut Redis,
    name: &str,
    calls: usize,
    outage: Duration,
    recover_within: Duration,
    mut check: F,
) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Answer>,
{
    let ok = Outcome::Answer(i32::from(Code::Ok));
    assert_eq!(outcome(check()).await.0, ok, "{name}: not OK before");
    redis.stop().await;
    let down = Instant::now();
    for i in 0..calls {
        let (o, took) = outcome(check()).await;
        println!(
            "{name}: Redis down, call {i}: {o:?} after {} ms",
            took.as_millis()
        );
        assert_ne!(o, ok, "{name}: admitted while Redis is down");
    }
    tokio::time::sleep(outage.saturating_sub(down.elapsed())).await;
    redis.restart().await;
    let back = Instant::now();
    loop {
        let (o, took) = outcome(check()).await;
        if o == ok {
            let after = back.elapsed();
            println!(
                "{name}: Redis back after {} ms down; OK again {} ms later",
                (back - down).as_millis(),
                after.as_millis()
            );
            return after;
        }
        println!("{name}: Redis back, {o:?} after {} ms", took.as_millis());
        assert!(
            back.elapsed() < recover_within,
            "{name}: not recovered within {recover_within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn limitador_service(redis: &Redis) -> Service {
    let limits = limitador_limit("instance a", 30, 60, &exact(INSTANCE_A));
    Service::start(&limits, Some(redis), &[]).await
}

#[tokio::test(flavor = "multi_thread")]
async fn limitador_flavor_heals_a_short_outage_at_its_first_reconnect() {
    let mut redis = Redis::start().await;
    let s = limitador_service(&redis).await;
    let client = s.kuadrant().await;
    let check = || {
        let mut c = client.clone();
        async move {
            c.check_rate_limit(deadline(request(&[INSTANCE_A], 1)))
                .await
        }
    };
    outage(
        &mut redis,
        "CheckRateLimit",
        1,
        Duration::from_millis(300),
        Duration::from_secs(10),
        check,
    )
    .await;
    // Counting works again (the restarted Redis is empty).
    let mut c = client.clone();
    c.report(request(&[INSTANCE_A], 10)).await.expect("Report");
    assert_eq!(redis.limitador_counter(&exact(INSTANCE_A)).await, Some(10));
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "takes minutes: run it to see how long Limitador's reconnection back-off holds after a longer outage"]
async fn limitador_flavor_after_a_5_s_outage() {
    let mut redis = Redis::start().await;
    let s = limitador_service(&redis).await;
    let client = s.kuadrant().await;
    let check = || {
        let mut c = client.clone();
        async move {
            c.check_rate_limit(deadline(request(&[INSTANCE_A], 1)))
                .await
        }
    };
    outage(
        &mut redis,
        "CheckRateLimit",
        3,
        Duration::from_secs(5),
        Duration::from_secs(600),
        check,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn limitador_flavor_waits_for_redis_at_start() {
    let mut redis = Redis::start().await;
    redis.stop().await;
    let limits = limitador_limit("instance a", 30, 60, &exact(INSTANCE_A));
    let started = Instant::now();
    let (s, up) = tokio::join!(Service::start_url(&limits, Some(redis.url()), &[]), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        redis.restart().await;
        started.elapsed()
    });
    let ready = started.elapsed();
    println!(
        "limitador flavor: Redis up after {} ms, service ready after {} ms",
        up.as_millis(),
        ready.as_millis()
    );
    assert!(ready >= up, "ready before Redis was up");
    let mut c = s.kuadrant().await;
    let answer = c
        .check_rate_limit(request(&[INSTANCE_A], 1))
        .await
        .expect("check");
    assert_eq!(answer.into_inner().overall_code, i32::from(Code::Ok));
}

#[tokio::test(flavor = "multi_thread")]
async fn envoy_flavor_fails_fast_while_redis_is_down_and_recovers_at_once() {
    let mut redis = Redis::start().await;
    let s = Service::start(ENVOY_CONFIG, Some(&redis), &["--flavor", "envoy-ratelimit"]).await;
    let client = s.rls().await;
    let check = || {
        let mut c = client.clone();
        async move {
            c.should_rate_limit(deadline(request(&[INSTANCE_A], 1)))
                .await
        }
    };
    let t = Instant::now();
    let after = outage(
        &mut redis,
        "ShouldRateLimit (envoy-ratelimit)",
        3,
        Duration::from_secs(2),
        Duration::from_secs(2),
        check,
    )
    .await;
    assert!(
        after < Duration::from_secs(1),
        "recovered {after:?} after Redis"
    );
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "took {:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn envoy_flavor_exits_when_redis_is_unreachable_at_start() {
    let dir = common::TempDir::new();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, ENVOY_CONFIG).expect("config");
    let started = Instant::now();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ai-ratelimit-service"))
        .args(["--port", "0", "--flavor", "envoy-ratelimit", "--limits"])
        .arg(&config)
        .args([
            "--redis",
            &format!("redis://127.0.0.1:{}", common::free_port()),
        ])
        .output();
    let out = tokio::time::timeout(Duration::from_secs(10), out)
        .await
        .expect("did not exit")
        .expect("run");
    println!(
        "envoy-ratelimit flavor without Redis: exit {:?} after {} ms",
        out.status.code(),
        started.elapsed().as_millis()
    );
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "it announced readiness");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("failed to connect to Redis"), "{err}");
}
