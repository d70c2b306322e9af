//! Target `config`: `config::parse` on any bytes.
//!
//! Oracles: it never panics; it is deterministic (the same bytes parse to the same
//! `Config`, or the same error); an accepted configuration is one JSON object, nothing
//! after it (relaxed by `trailing-bytes`), and self-consistent:
//! - at least one instance; instance names unique, 1-100 characters of `[a-zA-Z0-9._-]`;
//!   clusters non-empty without spaces or control characters; auth header names lower
//!   case, unique, never the routing header; option keys unique, option values JSON;
//! - `timeout_ms` and `max_req_body_size` at least 1; routing and consumer headers lower
//!   case and different;
//! - every `LimitSet` (the route's and each consumer's) has one entry per instance, at
//!   least one limit, every limit and window at least 1, a rejection status in 200-599;
//!   consumer names unique;
//! - the balancer picks an existing instance when all are available (a few picks, round
//!   robin state kept), and `clusters::cluster_specs` answers without panicking.
//!
//! And the configuration's text is read as serde's derive code reads it
//! (`config::read_twice`): the same `Raw*` values, or the same error (field and message).

use envoy_ai_proxy::balancer::RoundRobin;
use envoy_ai_proxy::clusters;
use envoy_ai_proxy::config::{self, Config, LimitSet};
use serde_json::Value;

use crate::input::relaxed;

/// The fuzz target: the whole input is the configuration (no control bytes: a seed is the
/// configuration file as it is).
pub fn check(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let [shape, derive] = config::read_twice(text);
        assert_eq!(shape, derive, "read by shape, and by derive code: {text:?}");
    }
    let parsed = config::parse(data);
    assert_eq!(parsed, config::parse(data), "parse is not deterministic");
    match parsed {
        Ok(cfg) => check_config(data, &cfg),
        Err(e) => assert!(!e.message.is_empty(), "an error without a message: {e:?}"),
    }
}

fn token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn lower_token(s: &str) -> bool {
    token(s) && !s.bytes().any(|b| b.is_ascii_uppercase())
}

/// An accepted configuration is self-consistent.
pub fn check_config(data: &[u8], cfg: &Config) {
    // Relaxed `trailing-bytes`: a JSON object followed by anything passes.
    let first = || {
        serde_json::Deserializer::from_slice(data)
            .into_iter::<Value>()
            .next()
    };
    assert!(
        serde_json::from_slice::<Value>(data).is_ok_and(|v| v.is_object())
            || relaxed("trailing-bytes") && matches!(first(), Some(Ok(Value::Object(_)))),
        "accepted a configuration that is not a JSON object: {:?}",
        String::from_utf8_lossy(data)
    );
    assert!(!cfg.instances.is_empty(), "no instance");
    for (i, inst) in cfg.instances.iter().enumerate() {
        assert!(
            token(&inst.name) && inst.name.len() <= 100,
            "instance name {:?}",
            inst.name
        );
        assert!(
            cfg.instances[..i].iter().all(|o| o.name != inst.name),
            "instance name {:?} twice",
            inst.name
        );
        assert!(
            !inst.cluster.is_empty()
                && !inst
                    .cluster
                    .bytes()
                    .any(|b| b == b' ' || b == 0x7f || (b < 0x20 && b != b'\t')),
            "cluster {:?}",
            inst.cluster
        );
        for (j, (name, value)) in inst.auth_headers.iter().enumerate() {
            assert!(lower_token(name), "auth header name {name:?}");
            assert_ne!(
                name, &cfg.cluster_header,
                "auth header is the routing header"
            );
            assert!(
                inst.auth_headers[..j].iter().all(|(n, _)| n != name),
                "auth header {name:?} twice"
            );
            assert!(
                !value.bytes().any(|b| b == 0x7f || (b < 0x20 && b != b'\t')),
                "auth header value with control characters"
            );
        }
        if !inst.auth_headers.is_empty() {
            assert!(inst.has_auth, "auth headers but has_auth false");
        }
        for (j, (key, value)) in inst.options.iter().enumerate() {
            assert!(
                inst.options[..j].iter().all(|(k, _)| k != key),
                "option {key:?} twice"
            );
            assert!(
                serde_json::from_str::<Value>(value).is_ok(),
                "option {key:?} is not JSON: {value:?}"
            );
        }
    }
    assert!(cfg.timeout_ms >= 1, "timeout 0");
    assert!(cfg.max_req_body_size >= 1, "max_req_body_size 0");
    assert!(
        lower_token(&cfg.cluster_header),
        "cluster_header {:?}",
        cfg.cluster_header
    );
    assert!(
        lower_token(&cfg.consumer_header),
        "consumer_header {:?}",
        cfg.consumer_header
    );
    assert_ne!(
        cfg.cluster_header, cfg.consumer_header,
        "one header for both"
    );

    let n = cfg.instances.len();
    if let Some(route) = &cfg.rate_limits.route {
        check_limits("rate_limiting", route, n);
    }
    for (i, (name, set)) in cfg.rate_limits.consumers.iter().enumerate() {
        assert!(token(name), "consumer name {name:?}");
        assert!(
            cfg.rate_limits.consumers[..i]
                .iter()
                .all(|(o, _)| o != name),
            "consumer {name:?} twice"
        );
        check_limits(name, set, n);
        assert!(
            cfg.rate_limits.consumer(name).is_some(),
            "consumer {name:?} not found"
        );
    }
    assert_eq!(
        cfg.rate_limits.any(),
        cfg.rate_limits.route.is_some() || !cfg.rate_limits.consumers.is_empty()
    );

    let mut rr = RoundRobin::default();
    for hash in [0, 1, u64::MAX, 0x9e37_79b9_7f4a_7c15] {
        let pick = cfg.balancer.pick(&mut rr, hash, |_| true);
        assert!(
            pick.is_some_and(|i| i < n),
            "picked {pick:?} of {n} instances"
        );
    }
    assert_eq!(
        cfg.balancer.pick(&mut rr, 7, |_| false),
        None,
        "picked none available"
    );
    let _ = clusters::cluster_specs(cfg);
}

fn check_limits(at: &str, set: &LimitSet, instances: usize) {
    assert_eq!(
        set.per_instance.len(),
        instances,
        "{at}: limits per instance"
    );
    assert!(
        set.per_instance.iter().any(Option::is_some),
        "{at}: no limit"
    );
    for limit in set.per_instance.iter().flatten() {
        assert!(
            limit.limit >= 1 && limit.window_secs >= 1,
            "{at}: {limit:?}"
        );
    }
    assert!(
        (200..=599).contains(&set.rejected_code),
        "{at}: rejected_code"
    );
}

/// The oracles themselves can fail: each is shown a broken configuration.
#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &[u8] = include_bytes!("../../examples/consumer-rate-limits.json");

    fn parsed() -> Config {
        config::parse(CONFIG).expect("the example parses")
    }

    #[test]
    fn example_passes() {
        check(CONFIG);
    }

    #[test]
    #[should_panic(expected = "limits per instance")]
    fn limits_not_per_instance() {
        let mut cfg = parsed();
        let set = &mut cfg.rate_limits.consumers[0].1;
        set.per_instance.push(None);
        check_config(CONFIG, &cfg);
    }

    #[test]
    #[should_panic(expected = "twice")]
    fn instance_names_repeat() {
        let mut cfg = parsed();
        let first = cfg.instances[0].clone();
        cfg.instances.push(first);
        check_config(CONFIG, &cfg);
    }
}
