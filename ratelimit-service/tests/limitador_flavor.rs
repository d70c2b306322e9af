//! The Limitador flavor over one Redis shared by two service processes: Kuadrant's
//! check/report sequence (APISIX's 30/20/10) for an instance and a consumer limit, one charge
//! per limit for a request that carries both descriptors, and `ShouldRateLimit`. The limits
//! are the example file generated from the filter's configuration.

mod common;

use ai_ratelimit_service::rls::Code;
use common::{exact, request, Redis, Service};

const INSTANCE_A: &[(&str, &str)] = &[("instance", "a")];
const ALICE_ON_A: &[(&str, &str)] = &[("instance", "a"), ("consumer", "alice")];
const INSTANCE_B: &[(&str, &str)] = &[("instance", "b")];
const ALICE_ON_B: &[(&str, &str)] = &[("instance", "b"), ("consumer", "alice")];

/// The limits `integration::rls::limitador_limits` writes for `examples/filter-config.json`:
/// instance `a` 30 per 60 s; alice on `a` 100 per 60 s; alice on `b` 30 per 60 s.
fn limits() -> String {
    include_str!("../examples/limitador-limits.yaml").to_string()
}

async fn two_services(redis: &Redis, extra: &[&str]) -> (Service, Service) {
    let l = limits();
    (
        Service::start(&l, Some(redis), extra).await,
        Service::start(&l, Some(redis), extra).await,
    )
}

/// Check (at least 1 left?) then, when admitted, report 10: four requests alternating between
/// the two services. Answers the overall codes of the four checks.
async fn check_then_report(s: [&Service; 2], descriptors: &[&[(&str, &str)]]) -> Vec<i32> {
    let mut codes = Vec::new();
    for i in 0..4 {
        let mut client = s[i % 2].kuadrant().await;
        let answer = client
            .check_rate_limit(request(descriptors, 1))
            .await
            .expect("CheckRateLimit")
            .into_inner();
        assert!(
            answer.statuses.is_empty(),
            "CheckRateLimit answered statuses"
        );
        if answer.overall_code == i32::from(Code::Ok) {
            client
                .report(request(descriptors, 10))
                .await
                .expect("Report");
        }
        codes.push(answer.overall_code);
    }
    codes
}

fn ok_ok_ok_over() -> Vec<i32> {
    let (ok, over) = (i32::from(Code::Ok), i32::from(Code::OverLimit));
    vec![ok, ok, ok, over]
}

#[tokio::test(flavor = "multi_thread")]
async fn instance_limit_30_20_10_across_two_services() {
    let redis = Redis::start().await;
    let (s1, s2) = two_services(&redis, &[]).await;
    assert_eq!(
        check_then_report([&s1, &s2], &[INSTANCE_A]).await,
        ok_ok_ok_over()
    );
    assert_eq!(redis.limitador_counter(&exact(INSTANCE_A)).await, Some(30));
}

#[tokio::test(flavor = "multi_thread")]
async fn consumer_limit_30_20_10_across_two_services() {
    let redis = Redis::start().await;
    let (s1, s2) = two_services(&redis, &[]).await;
    // `b` has no instance limit: only the consumer descriptor is sent.
    assert_eq!(
        check_then_report([&s1, &s2], &[ALICE_ON_B]).await,
        ok_ok_ok_over()
    );
    assert_eq!(redis.limitador_counter(&exact(ALICE_ON_B)).await, Some(30));
    assert_eq!(redis.limitador_counter(&exact(INSTANCE_B)).await, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn both_descriptors_charge_each_limit_once() {
    let redis = Redis::start().await;
    let (s1, s2) = two_services(&redis, &[]).await;
    // Instance a (30) binds before alice on a (100): the fourth check is refused by it.
    assert_eq!(
        check_then_report([&s1, &s2], &[INSTANCE_A, ALICE_ON_A]).await,
        ok_ok_ok_over()
    );
    assert_eq!(redis.limitador_counter(&exact(INSTANCE_A)).await, Some(30));
    assert_eq!(redis.limitador_counter(&exact(ALICE_ON_A)).await, Some(30));
    // A report is added unconditionally, even past the limit.
    s2.kuadrant()
        .await
        .report(request(&[INSTANCE_A], 7))
        .await
        .expect("Report");
    assert_eq!(redis.limitador_counter(&exact(INSTANCE_A)).await, Some(37));
    // Other consumers on b have no limit: nothing is counted for them.
    let bob = &[("instance", "b"), ("consumer", "bob")][..];
    let answer = s1
        .kuadrant()
        .await
        .check_rate_limit(request(&[bob], 1))
        .await
        .expect("check");
    assert_eq!(answer.into_inner().overall_code, i32::from(Code::Ok));
}

#[tokio::test(flavor = "multi_thread")]
async fn should_rate_limit_charges_what_fits_and_nothing_else() {
    let redis = Redis::start().await;
    let (s1, s2) = two_services(&redis, &["--rate-limit-headers", "DRAFT_VERSION_03"]).await;
    let mut codes = Vec::new();
    let mut remaining = Vec::new();
    for (i, hits) in [10, 10, 10, 10, 0].into_iter().enumerate() {
        let mut client = if i % 2 == 0 {
            s1.rls().await
        } else {
            s2.rls().await
        };
        let answer = client
            .should_rate_limit(request(&[INSTANCE_A], hits))
            .await
            .expect("ShouldRateLimit")
            .into_inner();
        assert!(answer.statuses.is_empty(), "Limitador answers no statuses");
        codes.push(answer.overall_code);
        let header = answer
            .response_headers_to_add
            .iter()
            .find(|h| h.key == "X-RateLimit-Remaining")
            .map(|h| h.value.clone());
        remaining.push(header);
    }
    let (ok, over) = (i32::from(Code::Ok), i32::from(Code::OverLimit));
    // Hits 0 count as 1: still over.
    assert_eq!(codes, vec![ok, ok, ok, over, over]);
    let r = |v: &str| Some(v.to_string());
    assert_eq!(remaining, vec![r("20"), r("10"), r("0"), r("0"), r("0")]);
    // A refused charge charges nothing.
    assert_eq!(redis.limitador_counter(&exact(INSTANCE_A)).await, Some(30));
}
