//! The remote backend natively: what each check and settlement sends (as protobuf bytes),
//! how answers are read, the per-Envoy note of spent instances, failures.

use serde_json::{json, Value};

use super::*;
use crate::config;
use crate::metrics::name;
use crate::testing::FakeHost;

fn cfg(protocol: &str, reserve: bool) -> Config {
    let mut rl = json!({"instances": [{"name": "a", "limit": 30, "time_window": 60}],
                        "service": {"cluster": "rls", "domain": "d", "protocol": protocol}});
    if reserve {
        rl["reserve"] = json!("max_tokens");
        rl["limit_strategy"] = json!("completion_tokens");
    }
    let v: Value = json!({
        "instances": [{"name": "a", "provider": "openai"}, {"name": "b", "provider": "openai"}],
        "rate_limiting": rl,
        "consumers": [{"name": "john", "rate_limiting": {"limit": 5, "time_window": 60,
                                                         "limit_strategy": "prompt_tokens"}}]
    });
    config::parse(v.to_string().as_bytes()).unwrap()
}

fn remote(c: &Config) -> Remote {
    Remote::new(
        c.rate_limits.service.clone().unwrap(),
        c.rate_limits.reserve,
    )
}

fn ctx<'a>(c: &'a Config, consumer: Option<&'a str>, estimate: Option<Usage>) -> Ctx<'a> {
    Ctx {
        config: c,
        scope: "s",
        consumer,
        estimate,
    }
}

fn d(entries: &[(&str, &str)], hits: Option<u64>) -> Descriptor {
    Descriptor {
        entries: entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        hits,
    }
}

const A: &[(&str, &str)] = &[("instance", "a")];
const A_JOHN: &[(&str, &str)] = &[("instance", "a"), ("consumer", "john")];

fn asked(check: Check) -> Callout {
    match check {
        Check::Ask(c) => c,
        other => panic!("{other:?}"),
    }
}

fn grpc(c: &Callout) -> (&str, &str, &[u8]) {
    let g = c.grpc.as_ref().unwrap();
    (
        g.service.as_str(),
        g.method.as_str(),
        c.body.as_deref().unwrap(),
    )
}

fn usage(prompt: u64, completion: u64) -> Usage {
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt + completion,
        ..Usage::default()
    }
}

fn dispatched(effects: &[Effect]) -> Vec<(&str, &[u8])> {
    effects
        .iter()
        .map(|e| match e {
            Effect::Dispatch(c) => {
                assert_eq!(c.purpose, Purpose::Settle);
                assert_eq!(c.cluster, "rls");
                let (_, method, body) = grpc(c);
                (method, body)
            }
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn limitador_checks_with_at_least_one_token_and_reports_the_usage() {
    let c = cfg("limitador", false);
    let r = remote(&c);
    let host = FakeHost::at_ms(1_000_000_000);
    let call = asked(r.check(&ctx(&c, Some("john"), None), 0, &host));
    assert_eq!(call.purpose, Purpose::Quota(0));
    assert_eq!((call.cluster.as_str(), call.timeout_ms), ("rls", 200));
    let want = proto::rate_limit_request("d", &[d(A, None), d(A_JOHN, None)], 1);
    assert_eq!(grpc(&call), (KUADRANT, "CheckRateLimit", want.as_slice()));
    // Instance b has only john's limit; no limit at all for b without a consumer: no call.
    assert_eq!(
        r.check(&ctx(&c, None, None), 1, &host),
        Check::Now(Verdict::Admit(None, None))
    );
    // OK: admitted, no quota known (CheckRateLimit reports none).
    let ok = [0x08, 0x01];
    assert_eq!(
        r.answer(&ctx(&c, Some("john"), None), 0, 0, &ok, &host),
        Verdict::Admit(None, None)
    );
    // Settled: one Report per distinct amount (total for the route, prompt for john).
    let out = r.settle(&ctx(&c, Some("john"), None), 0, &usage(3, 7), None, &host);
    assert_eq!(
        dispatched(&out),
        vec![
            (
                "Report",
                proto::rate_limit_request("d", &[d(A_JOHN, None)], 3).as_slice()
            ),
            (
                "Report",
                proto::rate_limit_request("d", &[d(A, None)], 10).as_slice()
            ),
        ]
    );
    // Nothing used, nothing reported (Limitador would count a 0 as 1).
    assert!(r
        .settle(&ctx(&c, None, None), 0, &Usage::default(), None, &host)
        .is_empty());
}

#[test]
fn an_over_limit_answer_is_noted_and_the_instance_skipped_without_asking() {
    let c = cfg("limitador", false);
    let r = remote(&c);
    let host = FakeHost::at_ms(1_000_000_000);
    let q = ctx(&c, None, None);
    assert_eq!(r.admission(&q, &host).per_instance, vec![None, None]);
    match r.answer(&q, 0, 0, &[0x08, 0x02], &host) {
        Verdict::Exhausted(quota, SetId::Route) => {
            assert_eq!((quota.limit, quota.remaining), (30, 0));
            assert_eq!(quota.reset_secs, SPENT_NOTE_SECS);
        }
        other => panic!("{other:?}"),
    }
    assert!(r.admission(&q, &host).exhausted(0));
    // Noted only until the reset: then asked again.
    host.now_ns
        .set(1_000_000_000_000_000 + SPENT_NOTE_SECS * 1_000_000_000);
    assert!(!r.admission(&q, &host).exhausted(0));
}

#[test]
fn failures_are_unknown_and_counted() {
    let c = cfg("limitador", false);
    let r = remote(&c);
    let host = FakeHost::at_ms(1_000_000_000);
    let q = ctx(&c, None, None);
    // Refused (14), timed out (4), unreadable, or an answer with no verdict.
    for (status, message) in [(14, &b""[..]), (4, b""), (0, &[0xff, 0xff][..]), (0, b"")] {
        assert_eq!(r.answer(&q, 0, status, message, &host), Verdict::Unknown);
    }
    assert!(!r.deny_on_failure());
    let metric = name::rate_limit_service_failures();
    assert_eq!(
        r.failure("x", &host),
        vec![Effect::counter(metric.clone(), 1)]
    );
    // Logged at most once per quiet time, counted every time.
    assert_eq!(r.quiet.get(), (1_000_000_000, 0));
    r.failure("y", &host);
    assert_eq!(r.quiet.get(), (1_000_000_000, 1));
}

#[test]
fn envoy_rls_hits_one_shows_the_quota_and_charges_the_rest() {
    let c = cfg("envoy", false);
    let r = remote(&c);
    let host = FakeHost::at_ms(1_000_000_000);
    let q = ctx(&c, Some("john"), None);
    let call = asked(r.check(&q, 0, &host));
    let want = proto::rate_limit_request("d", &[d(A, Some(1)), d(A_JOHN, Some(1))], 1);
    assert_eq!(grpc(&call), (ENVOY, "ShouldRateLimit", want.as_slice()));
    // OK, with statuses: 30 limit with 19 left after the hit, john 5 with 4 left.
    let status = |limit: u8, remaining: u8| {
        vec![
            0x08, 0x01, 0x12, 0x02, 0x08, limit, 0x18, remaining, 0x22, 0x02, 0x08, 0x09,
        ]
    };
    let mut msg = vec![0x08, 0x01];
    for s in [status(30, 19), status(5, 4)] {
        msg.push(0x12);
        msg.push(s.len() as u8);
        msg.extend(s);
    }
    let Verdict::Admit(Some((shown, set)), Some(hold)) = r.answer(&q, 0, 0, &msg, &host) else {
        panic!()
    };
    // The binding quota, as it was before this request's hit.
    assert_eq!((shown.limit, shown.remaining, shown.reset_secs), (5, 5, 9));
    assert_eq!(set, SetId::Consumer(0));
    let out = r.settle(&q, 0, &usage(3, 7), Some(&hold), &host);
    let want = proto::rate_limit_request("d", &[d(A, Some(9)), d(A_JOHN, Some(2))], 9);
    assert_eq!(dispatched(&out), vec![("ShouldRateLimit", want.as_slice())]);
    // Over: the over-limit descriptor names the limit, its reset the note.
    let over = [
        0x08, 0x02, 0x12, 0x02, 0x08, 0x01, 0x12, 0x06, 0x08, 0x02, 0x22, 0x02, 0x08, 0x07,
    ];
    match r.answer(&q, 0, 0, &over, &host) {
        Verdict::Exhausted(quota, SetId::Consumer(0)) => assert_eq!(quota.reset_secs, 7),
        other => panic!("{other:?}"),
    }
}

#[test]
fn reservations_through_limitador_reserve_and_commit() {
    let c = cfg("limitador", true);
    let r = remote(&c);
    let host = FakeHost::at_ms(1_000_000_000);
    let q = ctx(&c, None, Some(usage(50, 100)));
    let call = asked(r.check(&q, 0, &host));
    let want = proto::reserve_request("d", &[d(A, None)], 100, 60);
    assert_eq!(grpc(&call), (KUADRANT, "Reserve", want.as_slice()));
    let ok = [0x08, 0x01, 0x12, 0x02, b'r', b'1'];
    let Verdict::Admit(None, Some(hold)) = r.answer(&q, 0, 0, &ok, &host) else {
        panic!()
    };
    assert_eq!(hold.held, Held::Reservation("r1".into()));
    let out = r.settle(&q, 0, &usage(50, 40), Some(&hold), &host);
    let want = proto::commit_request("d", &[d(A, None)], "r1", 40);
    assert_eq!(dispatched(&out), vec![("Commit", want.as_slice())]);
    // No answer: the hold is committed at 0, which releases it.
    let out = r.release(&q, &hold, &host);
    let want = proto::commit_request("d", &[d(A, None)], "r1", 0);
    assert_eq!(dispatched(&out), vec![("Commit", want.as_slice())]);
    // A reservation that does not fit is not a spent instance: no note.
    assert!(matches!(
        r.answer(&q, 0, 0, &[0x08, 0x02], &host),
        Verdict::Exhausted(..)
    ));
    assert!(!r.admission(&q, &host).exhausted(0));
}

#[test]
fn reservations_through_envoy_rls_charge_the_estimate_then_any_excess() {
    let c = cfg("envoy", true);
    let r = remote(&c);
    let host = FakeHost::at_ms(1_000_000_000);
    let q = ctx(&c, None, Some(usage(50, 100)));
    let call = asked(r.check(&q, 0, &host));
    let want = proto::rate_limit_request("d", &[d(A, Some(100))], 100);
    assert_eq!(grpc(&call), (ENVOY, "ShouldRateLimit", want.as_slice()));
    let Verdict::Admit(_, Some(hold)) = r.answer(&q, 0, 0, &[0x08, 0x01], &host) else {
        panic!()
    };
    // Used less: nothing more (RLS cannot give hits back); used more: the excess.
    assert!(r
        .settle(&q, 0, &usage(50, 60), Some(&hold), &host)
        .is_empty());
    let out = r.settle(&q, 0, &usage(50, 130), Some(&hold), &host);
    let want = proto::rate_limit_request("d", &[d(A, Some(30))], 30);
    assert_eq!(dispatched(&out), vec![("ShouldRateLimit", want.as_slice())]);
}
