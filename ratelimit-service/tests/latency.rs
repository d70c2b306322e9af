//! One call's round trip on loopback with Redis behind the service: p50/p99 over 1000
//! sequential calls on one connection, after 100 warm-up calls, for each method the filter
//! may use. The figures go to stdout (`--nocapture`); the test fails only if a call does.

mod common;

use std::time::{Duration, Instant};

use ai_ratelimit_service::kuadrant::{CommitRequest, ReserveRequest};
use ai_ratelimit_service::rls::{self, Code};
use common::{exact, limitador_limit, request, Redis, Service, DOMAIN};

const INSTANCE_A: &[(&str, &str)] = &[("instance", "a")];
const CALLS: usize = 1000;

fn percentiles(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let at =
        |p: f64| v[((v.len() as f64 * p).ceil() as usize).saturating_sub(1)].as_secs_f64() * 1e3;
    (at(0.50), at(0.99))
}

/// Runs `f` 100 times to warm up, then `CALLS` times, collecting the time each reports for
/// its call; every call must answer `want`.
async fn measure<F, Fut>(name: &str, want: i32, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = (i32, Duration)>,
{
    for _ in 0..100 {
        assert_eq!(f().await.0, want, "{name}: warm-up");
    }
    let mut times = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let (code, took) = f().await;
        times.push(took);
        assert_eq!(code, want, "{name}");
    }
    let (p50, p99) = percentiles(times);
    println!("{name}: p50 {p50:.3} ms, p99 {p99:.3} ms over {CALLS} calls");
}

/// The answer's code and how long the call took.
async fn timed<T, Fut>(call: Fut, code: impl FnOnce(T) -> i32) -> (i32, Duration)
where
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let t = Instant::now();
    let answer = call.await.expect("call");
    let took = t.elapsed();
    (code(answer.into_inner()), took)
}

#[tokio::test(flavor = "multi_thread")]
async fn round_trip_of_one_call() {
    let redis = Redis::start().await;
    let limits = limitador_limit("instance a", 1_000_000_000_000, 3600, &exact(INSTANCE_A));
    let s = Service::start(&limits, Some(&redis), &[]).await;
    let ok = i32::from(Code::Ok);
    let k = s.kuadrant().await;
    measure("CheckRateLimit (limitador, Redis)", ok, || {
        let mut k = k.clone();
        async move {
            timed(k.check_rate_limit(request(&[INSTANCE_A], 1)), |r| {
                r.overall_code
            })
            .await
        }
    })
    .await;
    measure("Report (limitador, Redis)", ok, || {
        let mut k = k.clone();
        async move { timed(k.report(request(&[INSTANCE_A], 10)), |r| r.overall_code).await }
    })
    .await;
    // Each reservation is committed (untimed) before the next, as the filter settles each
    // request: Reserve reads every live hold of the counter, so open ones would slow it.
    measure("Reserve (limitador, Redis)", ok, || {
        let mut k = k.clone();
        let descriptors = vec![rls::descriptor(INSTANCE_A)];
        let req = ReserveRequest {
            domain: DOMAIN.into(),
            descriptors: descriptors.clone(),
            amount: 100,
            ttl: None,
        };
        async move {
            let mut id = String::new();
            let timing = timed(k.reserve(req), |r| {
                id = r.reservation_id;
                r.code
            })
            .await;
            let commit = CommitRequest {
                domain: DOMAIN.into(),
                descriptors,
                reservation_id: id,
                actual_amount: 50,
            };
            assert!(
                k.commit(commit)
                    .await
                    .expect("Commit")
                    .into_inner()
                    .reservation_released
            );
            timing
        }
    })
    .await;
    let r = s.rls().await;
    measure("ShouldRateLimit (limitador, Redis)", ok, || {
        let mut r = r.clone();
        async move {
            timed(r.should_rate_limit(request(&[INSTANCE_A], 1)), |a| {
                a.overall_code
            })
            .await
        }
    })
    .await;
    let config = "domain: ai-proxy\ndescriptors:\n  - {key: instance, value: a, rate_limit: {unit: hour, requests_per_unit: 4000000000}}\n";
    let e = Service::start(config, Some(&redis), &["--flavor", "envoy-ratelimit"]).await;
    let r = e.rls().await;
    measure("ShouldRateLimit (envoy-ratelimit, Redis)", ok, || {
        let mut r = r.clone();
        async move {
            timed(r.should_rate_limit(request(&[INSTANCE_A], 1)), |a| {
                a.overall_code
            })
            .await
        }
    })
    .await;
}
