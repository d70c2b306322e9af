//! `--flavor envoy-ratelimit` over one Redis shared by two service processes: every hit is
//! counted, OVER_LIMIT once the count after the hit exceeds the limit, statuses carry the
//! limit, the remaining count and the time to reset; nested consumer descriptors.

mod common;

use ai_ratelimit_service::rls::{Code, UInt64Value, Unit};
use common::{avoid_window_end, request, Redis, Service};

/// The config `integration::rls::envoy_ratelimit_config` writes for
/// `examples/filter-config.json`: instance `a` 30/minute with alice on it 100/minute nested;
/// `b` without a limit of its own, alice on it 30/minute.
const CONFIG: &str = include_str!("../examples/envoy-ratelimit.yaml");

const INSTANCE_A: &[(&str, &str)] = &[("instance", "a")];
const ALICE_ON_A: &[(&str, &str)] = &[("instance", "a"), ("consumer", "alice")];
const ALICE_ON_B: &[(&str, &str)] = &[("instance", "b"), ("consumer", "alice")];
const FLAVOR: &[&str] = &["--flavor", "envoy-ratelimit"];

/// (overall code, [(code, remaining)] per descriptor) of 5 calls alternating between `s`.
async fn sequence(
    s: [&Service; 2],
    descriptors: &[&[(&str, &str)]],
    hits: [u32; 5],
) -> Vec<(i32, Vec<(i32, u32)>)> {
    let mut out = Vec::new();
    for (i, h) in hits.into_iter().enumerate() {
        let answer = s[i % 2]
            .rls()
            .await
            .should_rate_limit(request(descriptors, h))
            .await
            .expect("ShouldRateLimit")
            .into_inner();
        assert_eq!(answer.statuses.len(), descriptors.len());
        for st in &answer.statuses {
            let limit = st.current_limit.as_ref().expect("current_limit");
            assert_eq!(limit.unit, i32::from(Unit::Minute));
            let reset = st
                .duration_until_reset
                .as_ref()
                .expect("duration_until_reset")
                .seconds;
            assert!((1..=60).contains(&reset), "reset in {reset} s");
        }
        let st = answer
            .statuses
            .iter()
            .map(|s| (s.code, s.limit_remaining))
            .collect();
        out.push((answer.overall_code, st));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn every_hit_counts_and_over_means_past_the_limit() {
    let redis = Redis::start().await;
    let (s1, s2) = (
        Service::start(CONFIG, Some(&redis), FLAVOR).await,
        Service::start(CONFIG, Some(&redis), FLAVOR).await,
    );
    avoid_window_end(60).await;
    let (ok, over) = (i32::from(Code::Ok), i32::from(Code::OverLimit));
    let got = sequence([&s1, &s2], &[INSTANCE_A], [10, 10, 10, 10, 0]).await;
    assert_eq!(
        got,
        vec![
            (ok, vec![(ok, 20)]),
            (ok, vec![(ok, 10)]),
            (ok, vec![(ok, 0)]),
            (over, vec![(over, 0)]),
            (over, vec![(over, 0)]), // hits 0 count as 1, and are counted
        ]
    );
    // The counter holds every hit, refused ones included: 10 * 4 + 1.
    let mut c = redis.conn().await.expect("redis");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("ai-proxy_instance_a_*")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let value: u64 = redis::cmd("GET")
        .arg(&keys[0])
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(value, 41);
}

#[tokio::test(flavor = "multi_thread")]
async fn nested_consumer_limits_count_apart_from_the_instance() {
    let redis = Redis::start().await;
    let (s1, s2) = (
        Service::start(CONFIG, Some(&redis), FLAVOR).await,
        Service::start(CONFIG, Some(&redis), FLAVOR).await,
    );
    avoid_window_end(60).await;
    let (ok, over) = (i32::from(Code::Ok), i32::from(Code::OverLimit));
    let got = sequence([&s1, &s2], &[ALICE_ON_B], [10, 10, 10, 10, 1]).await;
    let codes: Vec<i32> = got.iter().map(|(c, _)| *c).collect();
    assert_eq!(codes, vec![ok, ok, ok, over, over]);
    // Both descriptors: each counts its own hits once.
    let got = sequence([&s1, &s2], &[INSTANCE_A, ALICE_ON_A], [10, 10, 10, 10, 10]).await;
    let remaining: Vec<Vec<(i32, u32)>> = got.into_iter().map(|(_, s)| s).collect();
    assert_eq!(remaining[2], vec![(ok, 0), (ok, 70)]);
    assert_eq!(remaining[4], vec![(over, 0), (ok, 50)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn descriptor_hits_zero_checks_without_counting_and_unknown_descriptors_pass() {
    let redis = Redis::start().await;
    let s = Service::start(CONFIG, Some(&redis), FLAVOR).await;
    avoid_window_end(60).await;
    let mut client = s.rls().await;
    client
        .should_rate_limit(request(&[INSTANCE_A], 12))
        .await
        .expect("hit");
    let mut req = request(&[INSTANCE_A], 5);
    req.descriptors[0].hits_addend = Some(UInt64Value { value: 0 });
    let answer = client
        .should_rate_limit(req)
        .await
        .expect("check")
        .into_inner();
    assert_eq!(answer.statuses[0].limit_remaining, 30 - 12);
    // No limit matches: OK, a status without a limit.
    let bob = &[("instance", "a"), ("consumer", "bob")][..];
    let answer = client
        .should_rate_limit(request(&[bob], 1))
        .await
        .expect("bob")
        .into_inner();
    assert_eq!(answer.overall_code, i32::from(Code::Ok));
    assert!(answer.statuses[0].current_limit.is_none());
    // Upstream refuses an empty domain (UNKNOWN).
    let mut req = request(&[INSTANCE_A], 1);
    req.domain.clear();
    let err = client
        .should_rate_limit(req)
        .await
        .expect_err("empty domain");
    assert_eq!(err.code(), tonic::Code::Unknown);
    // Kuadrant's service is not served under this flavor.
    let err = s
        .kuadrant()
        .await
        .check_rate_limit(request(&[INSTANCE_A], 1))
        .await
        .expect_err("kuadrant");
    assert_eq!(err.code(), tonic::Code::Unimplemented);
}
