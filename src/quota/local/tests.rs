//! Shared-data counters: keys and slots, windows, CAS races, admission and settlement per
//! strategy.

use super::*;
use crate::config;
use crate::quota::SetId;
use crate::store::mem::Mem;
use crate::testing::FakeHost;

fn limited() -> Config {
    config::parse(
        serde_json::json!({
            "instances": [
                {"name": "a", "provider": "openai", "priority": 1},
                {"name": "b", "provider": "openai"}
            ],
            "rate_limiting": {"instances": [{"name": "a", "limit": 10, "time_window": 60}],
                              "rejected_msg": "over quota"},
            "consumers": [{"name": "john", "rate_limiting": {
                "instances": [{"name": "b", "limit": 5, "time_window": 30}],
                "limit_strategy": "completion_tokens", "rejected_code": 403}}]
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap()
}

/// Slot `slot` of the value at `key`.
fn at(key: &str, slot: usize) -> At<'_> {
    At { key, slot }
}

fn ctx<'a>(c: &'a Config, consumer: Option<&'a str>) -> Ctx<'a> {
    Ctx {
        config: c,
        scope: "s",
        consumer,
        estimate: None,
    }
}

#[test]
fn charges_add_up_and_roll_over() {
    let s = Mem::default();
    store::seed(&s, "k", &Counter::default().encode()).unwrap();
    assert_eq!(charge(&s, at("k", 0), 125, 60, 10).unwrap().used, 10);
    assert_eq!(charge(&s, at("k", 0), 130, 60, 7).unwrap().used, 17);
    assert_eq!(read(&s, at("k", 0), 179, 60).used, 17);
    // Next window.
    assert_eq!(read(&s, at("k", 0), 180, 60).used, 0);
    assert_eq!(
        charge(&s, at("k", 0), 181, 60, 2).unwrap(),
        Counter {
            window_start: 180,
            used: 2
        }
    );
    // Another slot of the same value counts on its own, in a window of its own.
    assert_eq!(charge(&s, at("k", 2), 181, 30, 5).unwrap().used, 5);
    assert_eq!(s.value("k").as_deref(), Some("180:2,,180:5"));
    assert_eq!(read(&s, at("k", 0), 181, 60).used, 2);
    assert_eq!(read(&s, at("k", 1), 181, 60).used, 0);
    assert_eq!(read(&s, at("k", 2), 211, 30).used, 0);
}

#[test]
fn a_lost_race_is_retried_and_nothing_is_lost() {
    let s = Mem::default();
    store::seed(&s, "k", b"0:0,0:0").unwrap();
    // Another worker charges 5 tokens first, three times, to the other instance's slot:
    // the race is on the whole value, and neither charge is lost.
    *s.rival.borrow_mut() = Some(Box::new(|v| {
        let mut c = Counter::at(Counter::in_slot(v, 1), 100, 60);
        c.used += 5;
        c.into_slot(v, 1)
    }));
    s.interfere.set(3);
    let c = charge(&s, at("k", 0), 100, 60, 7).unwrap();
    assert_eq!(c.used, 7);
    assert_eq!(read(&s, at("k", 0), 100, 60).used, 7);
    assert_eq!(read(&s, at("k", 1), 100, 60).used, 15);
    // Then to the same slot.
    *s.rival.borrow_mut() = Some(Box::new(|v| {
        let mut c = Counter::at(Counter::in_slot(v, 0), 100, 60);
        c.used += 5;
        c.into_slot(v, 0)
    }));
    s.interfere.set(2);
    assert_eq!(charge(&s, at("k", 0), 100, 60, 1).unwrap().used, 18);
    assert_eq!(s.value("k").as_deref(), Some("60:18,60:15"));
    s.interfere.set(usize::MAX);
    assert_eq!(
        charge(&s, at("k", 0), 100, 60, 1),
        Err(StoreError::CasMismatch)
    );
}

#[test]
fn admission_reads_every_limit_and_the_binding_one_shows() {
    let c = limited();
    let host = FakeHost::at_ms(1_000_000_000);
    let local = Local::new(&c, "s");
    assert_eq!(local.sets.len(), 2);
    local.start(&host);
    assert_eq!(
        host.store.keys(),
        ["aiproxy.tokens.s.*", "aiproxy.tokens.s.john"]
    );
    // One slot per instance, a counter where the set limits it.
    assert_eq!(
        host.store.value("aiproxy.tokens.s.*").as_deref(),
        Some("0:0,")
    );
    assert_eq!(
        host.store.value("aiproxy.tokens.s.john").as_deref(),
        Some(",0:0")
    );
    let reads = host.store.reads.get();
    let adm = local.admission(&ctx(&c, None), &host);
    assert_eq!(adm.shown(&c, 0).map(|q| q.remaining), Some(10));
    assert!(adm.per_instance[1].is_none());
    assert_eq!(host.store.reads.get() - reads, 1);

    let now = 1_000_000;
    charge(&host.store, at("aiproxy.tokens.s.*", 0), now, 60, 3).unwrap();
    charge(&host.store, at("aiproxy.tokens.s.john", 1), now, 30, 5).unwrap();
    let reads = host.store.reads.get();
    let john = local.admission(&ctx(&c, Some("john")), &host);
    assert_eq!(host.store.reads.get() - reads, 2);
    assert_eq!(
        john.shown(&c, 0).map(|q| (q.limit, q.remaining)),
        Some((10, 7))
    );
    assert!(john.exhausted(1));
    let jane = local.admission(&ctx(&c, Some("jane")), &host);
    assert!(!jane.exhausted(1) && jane.per_instance[1].is_none());
    // John's consumer limit inherits the route's message, not its status.
    match john.rejection(&c, 1) {
        crate::error::ProxyError::RateLimited {
            status, message, ..
        } => assert_eq!((status, message.as_str()), (403, "over quota")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn settling_follows_each_limits_strategy() {
    let c = limited();
    let host = FakeHost::at_ms(1_000_000_000);
    let local = Local::new(&c, "s");
    local.start(&host);
    let u = Usage {
        prompt_tokens: 3,
        completion_tokens: 4,
        total_tokens: 7,
        ..Usage::default()
    };
    let used = |key: &str, slot, window| read(&host.store, at(key, slot), 1_000_000, window).used;
    local.settle(&ctx(&c, None), 0, &u, None, &host);
    assert_eq!(used("aiproxy.tokens.s.*", 0, 60), 7);
    // No limit on b for the route, nor for an unknown consumer.
    local.settle(&ctx(&c, None), 1, &u, None, &host);
    local.settle(&ctx(&c, Some("nobody")), 1, &u, None, &host);
    assert_eq!(used("aiproxy.tokens.s.john", 1, 30), 0);
    assert_eq!(
        host.store.value("aiproxy.tokens.s.*").as_deref(),
        Some("999960:7,")
    );
    local.settle(&ctx(&c, Some("john")), 1, &u, None, &host);
    assert_eq!(used("aiproxy.tokens.s.john", 1, 30), 4);
    // John's answer from a counts to the route's limit on a, and to nothing of his.
    local.settle(&ctx(&c, Some("john")), 0, &u, None, &host);
    assert_eq!(used("aiproxy.tokens.s.*", 0, 60), 14);
    assert_eq!(
        host.store.value("aiproxy.tokens.s.john").as_deref(),
        Some(",999990:4")
    );
    let gauges = local.gauges(&c, &host);
    assert_eq!(
        gauges,
        vec![
            Effect::gauge(name::ratelimit_used("a", "all"), 14),
            Effect::gauge(name::ratelimit_used("b", "john"), 4)
        ]
    );
}

fn reserving(limit: u64) -> Config {
    config::parse(
        serde_json::json!({
            "instances": [{"name": "a", "provider": "openai"}, {"name": "b", "provider": "openai"}],
            "rate_limiting": {"limit": limit, "time_window": 60,
                              "limit_strategy": "completion_tokens", "reserve": "max_tokens"}
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap()
}

fn completion(n: u64) -> Usage {
    Usage {
        prompt_tokens: 7,
        completion_tokens: n,
        total_tokens: n + 7,
        ..Usage::default()
    }
}

#[test]
fn reservations_admit_only_what_fits_and_settle_to_the_real_usage() {
    let c = reserving(300);
    let host = FakeHost::at_ms(1_000_000_000);
    let local = Local::new(&c, "s");
    local.start(&host);
    let asking = |n| Ctx {
        estimate: Some(completion(n)),
        ..ctx(&c, None)
    };
    let used = || read(&host.store, at("aiproxy.tokens.s.*", 0), 1_000_000, 60).used;
    // Three of 100 fit in 300; the fourth does not, and takes nothing.
    let mut holds = Vec::new();
    for _ in 0..3 {
        match local.check(&asking(100), 0, &host) {
            Check::Now(Verdict::Admit(None, Some(h))) => holds.push(h),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(used(), 300);
    match local.check(&asking(100), 0, &host) {
        Check::Now(Verdict::Exhausted(q, SetId::Route)) => assert_eq!(q.remaining, 0),
        other => panic!("{other:?}"),
    }
    assert_eq!(used(), 300);
    // Settled: one used 40 (60 back), one 100, one got no answer (all back).
    local.settle(&ctx(&c, None), 0, &completion(40), Some(&holds[0]), &host);
    assert_eq!(used(), 240);
    local.settle(&ctx(&c, None), 0, &completion(100), Some(&holds[1]), &host);
    assert_eq!(used(), 240);
    local.release(&ctx(&c, None), &holds[2], &host);
    assert_eq!(used(), 140);
    // A request that used more than it reserved is charged the rest.
    let Check::Now(Verdict::Admit(_, Some(h))) = local.check(&asking(10), 0, &host) else {
        panic!()
    };
    local.settle(&ctx(&c, None), 0, &completion(25), Some(&h), &host);
    assert_eq!(used(), 165);
    // Held on a, answered by b (a fallback): a gets its hold back, b the usage.
    let Check::Now(Verdict::Admit(_, Some(h))) = local.check(&asking(50), 0, &host) else {
        panic!()
    };
    assert_eq!(used(), 215);
    local.settle(&ctx(&c, None), 1, &completion(30), Some(&h), &host);
    assert_eq!(used(), 165);
    assert_eq!(
        read(&host.store, at("aiproxy.tokens.s.*", 1), 1_000_000, 60).used,
        30
    );
    assert_eq!(
        host.store.value("aiproxy.tokens.s.*").as_deref(),
        Some("999960:165,999960:30")
    );
}

#[test]
fn a_hold_from_a_past_window_is_not_taken_from_the_new_one() {
    let c = reserving(300);
    let host = FakeHost::at_ms(1_000_000_000);
    let local = Local::new(&c, "s");
    local.start(&host);
    let ask = Ctx {
        estimate: Some(completion(100)),
        ..ctx(&c, None)
    };
    let Check::Now(Verdict::Admit(_, Some(h))) = local.check(&ask, 0, &host) else {
        panic!()
    };
    // The answer ends in the next window, having used 20: the past window counted its
    // 100 already, the new one is neither charged again nor given back 80 it never had.
    let a = at("aiproxy.tokens.s.*", 0);
    charge(&host.store, a, 1_000_060, 60, 5).unwrap();
    host.now_ns.set(1_000_060_000_000_000);
    local.settle(&ctx(&c, None), 0, &completion(20), Some(&h), &host);
    assert_eq!(read(&host.store, a, 1_000_060, 60).used, 5);
}

#[test]
fn without_reserve_the_check_admits_at_once() {
    let c = limited();
    let host = FakeHost::at_ms(1_000_000_000);
    let local = Local::new(&c, "s");
    let ask = Ctx {
        estimate: Some(completion(100)),
        ..ctx(&c, None)
    };
    assert_eq!(
        local.check(&ask, 0, &host),
        Check::Now(Verdict::Admit(None, None))
    );
}

#[test]
fn each_limit_set_s_key_is_made_once_and_found_by_its_consumer() {
    let consumers = ["ann", "bob", "cy"]
        .map(|n| serde_json::json!({"name": n, "rate_limiting": {"limit": 50, "time_window": 60}}));
    let c = config::parse(
        serde_json::json!({
            "instances": [{"name": "a", "provider": "openai"}],
            "rate_limiting": {"limit": 100, "time_window": 60},
            "consumers": consumers
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let local = Local::new(&c, "s");
    assert_eq!(local.key(SetId::Route), Some("aiproxy.tokens.s.*"));
    for (i, name) in ["ann", "bob", "cy"].iter().enumerate() {
        let want = format!("aiproxy.tokens.s.{name}");
        assert_eq!(local.key(SetId::Consumer(i)), Some(want.as_str()));
        assert_eq!(set_key("s", Some(name)), want);
    }
    assert_eq!(local.key(SetId::Consumer(3)), None);
    // Cy's answer is charged to cy's counters and the route's, nobody else's.
    let host = FakeHost::at_ms(1_000_000_000);
    local.start(&host);
    local.settle(&ctx(&c, Some("cy")), 0, &completion(3), None, &host);
    let used = |key: &str| read(&host.store, at(key, 0), 1_000_000, 60).used;
    assert_eq!(used("aiproxy.tokens.s.cy"), 10);
    assert_eq!(used("aiproxy.tokens.s.*"), 10);
    assert_eq!(used("aiproxy.tokens.s.bob"), 0);
    assert_eq!(used("aiproxy.tokens.s.ann"), 0);
}
