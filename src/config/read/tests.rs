//! The path told from serde_json's position against `serde_path_to_error`'s (the way the
//! filter found it before), over configurations broken in every place and every way.

use serde_json::{json, Value};

use super::*;

/// The reading as it was: every deserializer wrapped by `serde_path_to_error`, whose path
/// goes with serde's message as `read` tells it, from the text as a `&str` (serde_json's
/// `StrRead`; `read` reads its bytes, `SliceRead`, and must tell every error the same). (Then `fallback_strategy` told apart as
/// `read` does: it was an untagged enum, read in place;
/// `configuration_errors_read_as_serde_gives_them` holds its message and path.)
fn tracked(text: &str) -> Result<RawConfig, ConfigError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let raw: RawConfig = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| told(e.path().to_string(), e.inner()))?;
    finish(&mut de, raw)
}

/// `v` with every object's members in the opposite order (the last member first).
fn reversed(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .rev()
                .map(|(k, c)| (k.clone(), reversed(c)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(reversed).collect()),
        other => other.clone(),
    }
}

/// Configurations that read well, with every kind of field; each also with its members in
/// the opposite order, as where a member stands changes where serde_json stops.
fn bases() -> Vec<Value> {
    let written = vec![
        json!({
            "provider": "openai", "auth": {"header": {"Authorization": "Bearer k"}, "query": {"key": "v"}},
            "options": {"model": "m", "temperature": 0.5}, "override": {"endpoint": "http://h/v1"},
            "cluster": "c", "timeout": 5000, "max_req_body_size": 1024, "cluster_header": "x-c",
            "logging": {"summaries": true, "payloads": false},
            "rate_limiting": {"limit": 10, "time_window": 60, "limit_strategy": "total_tokens",
                "rejected_code": 429, "rejected_msg": "trop de requêtes — \"réessayez\" ✓", "show_limit_quota_header": true,
                "service": {"cluster": "rls", "domain": "d", "protocol": "grpc", "timeout_ms": 20,
                    "failure_mode_deny": false},
                "reserve": "max_tokens", "default_reserve": 100},
            "consumers": [{"name": "c1", "rate_limiting": {"limit": 1, "time_window": 1}}],
            "consumer_header": "x-consumer", "require_consumer": false
        }),
        json!({
            "instances": [
                {"name": "a", "provider": "openai", "priority": 1, "weight": 8,
                 "auth": {"header": {"Authorization": "Bearer k"}}, "options": {"model": "m"},
                 "override": {"endpoint": "http://h"}, "cluster": "ca",
                 "checks": {"active": {"type": "http", "timeout": 1.5, "http_path": "/p",
                     "host": "h", "req_headers": ["a: b"], "http_method": "GET",
                     "http_req_body": {"x": 1},
                     "healthy": {"interval": 1, "successes": 2, "http_statuses": [200, 201]},
                     "unhealthy": {"interval": 1, "http_failures": 2, "tcp_failures": 2,
                         "timeouts": 3, "http_statuses": [500, 502]}},
                   "passive": {"unhealthy": {"http_statuses": [500], "http_failures": 3},
                     "cooldown": 10}}},
                {"name": "b", "provider": "deepseek", "priority": 0}
            ],
            "balancer": {"algorithm": "chash", "hash_on": "header", "key": "x-user"},
            "fallback_strategy": ["http_429", "http_5xx"], "fallback_http_statuses": [429, 503],
            "max_retries": 2, "retry_on_failure_within_ms": 100,
            "rate_limiting": {"instances": [{"name": "a", "limit": 5, "time_window": 60}]}
        }),
        json!({"provider": "openai", "fallback_strategy": "instance_health_and_rate_limiting",
               "ssl_verify": false, "options": {"ключ": ["значение", {"é": null}]}}),
    ];
    let mut all: Vec<Value> = written.iter().map(reversed).collect();
    all.extend(written);
    all
}

/// Every value's place in `v`, as JSON pointers.
fn places(v: &Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match v {
        Value::Object(m) => m
            .iter()
            .for_each(|(k, c)| places(c, format!("{at}/{k}"), out)),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, c)| places(c, format!("{at}/{i}"), out)),
        _ => {}
    }
}

/// `base` with the value at `place` replaced by `raw` JSON text, compact or pretty.
fn with_text(base: &Value, place: &str, raw: &str, pretty: bool) -> String {
    let mut v = base.clone();
    if let Some(slot) = v.pointer_mut(place) {
        *slot = json!("\u{1}MARK\u{1}");
    }
    let text = if pretty {
        serde_json::to_string_pretty(&v).unwrap()
    } else {
        v.to_string()
    };
    text.replace("\"\\u0001MARK\\u0001\"", raw)
}

fn same(text: &str, checked: &mut usize) {
    *checked += 1;
    match (read(text), tracked(text)) {
        // What is read is the same too, every field.
        (Ok(new), Ok(old)) => assert_eq!(format!("{new:?}"), format!("{old:?}"), "{text}"),
        (Err(new), Err(old)) => assert_eq!(
            (new.path.as_str(), new.message.as_str()),
            (old.path.as_str(), old.message.as_str()),
            "{text}"
        ),
        (new, old) => panic!("{text}: read {:?}, tracked {:?}", new.err(), old.err()),
    }
}

#[test]
fn every_broken_value_names_the_field_serde_path_to_error_named() {
    let bad = [
        "\"x\"",
        "7",
        "-1",
        "1.5",
        "true",
        "null",
        "[]",
        "{}",
        "[1,\"x\"]",
        "{\"zz\":1}",
        "[{}]",
        "[\"x\", 1]",
        "{\"name\":\"n\"}",
        "70000",
        "\"\\\"q\\\"\"",
        // Each integer type's edges, and numbers that are floats or out of every range.
        "65535",
        "65536",
        "4294967296",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775808",
        "-9223372036854775809",
        "-0",
        "1.0",
        "1e400",
        "[null]",
        "[null, null, null]",
    ];
    let mut checked = 0;
    for base in bases() {
        let mut all = Vec::new();
        places(&base, String::new(), &mut all);
        for place in &all {
            for raw in bad {
                for pretty in [false, true] {
                    same(&with_text(&base, place, raw, pretty), &mut checked);
                }
            }
        }
    }
    assert!(checked > 2000, "{checked}");
}

#[test]
fn unknown_duplicate_and_missing_members_name_the_same_field() {
    let mut checked = 0;
    for base in bases() {
        let mut all = Vec::new();
        places(&base, String::new(), &mut all);
        for place in &all {
            let Some(Value::Object(m)) = base.pointer(place) else {
                continue;
            };
            let members: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{}:{v}", Value::from(k.as_str())))
                .collect();
            let mut variants = vec![
                // An unknown member, first and last.
                format!("{{\"zz\":1,{}}}", members.join(",")),
                format!("{{{},\"zz\":1}}", members.join(",")),
                format!("{{ {} , \"z\\\"z\" : 1 }}", members.join(" , ")),
            ];
            if let (Some(first), Some(last)) = (members.first(), members.last()) {
                // A duplicate, of the first member and of the last.
                variants.push(format!("{{{},{first}}}", members.join(",")));
                variants.push(format!("{{{last},{}}}", members.join(",")));
            }
            // Each member missing in turn (with and without space before the brace).
            for skip in 0..members.len() {
                let rest: Vec<&str> = members
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != skip)
                    .map(|(_, m)| m.as_str())
                    .collect();
                variants.push(format!("{{{}}}", rest.join(",")));
                variants.push(format!("{{ {} }}", rest.join(", ")));
            }
            for raw in &variants {
                for pretty in [false, true] {
                    same(&with_text(&base, place, raw, pretty), &mut checked);
                }
            }
        }
    }
    assert!(checked > 500, "{checked}");
}

#[test]
fn a_text_cut_anywhere_names_the_same_field() {
    let mut checked = 0;
    for base in bases() {
        for text in [
            base.to_string(),
            serde_json::to_string_pretty(&base).unwrap(),
        ] {
            for end in 0..text.len() {
                if let Some(cut) = text.get(..end) {
                    same(cut, &mut checked);
                    // And something wrong at the cut instead of the end.
                    same(&format!("{cut}#{}", text.get(end..).unwrap()), &mut checked);
                }
            }
        }
    }
    assert!(checked > 5000, "{checked}");
}

#[test]
fn the_path_steps_through_objects_and_arrays() {
    let text = r#"{"a": [1, {"b": {"c": 5}}]}"#;
    // After `5`: inside a.[1].b.c; after the brace that closes `b`'s object, `b`.
    let at = text.find('5').unwrap() + 1;
    assert_eq!(path_at(text, 1, at, "invalid type", true), "a[1].b.c");
    assert_eq!(
        path_at(text, 1, at + 1, "missing field `d`", true),
        "a[1].b"
    );
    // After the name `"b"`: an unknown field is that member, a duplicate is its object.
    let at = text.find("\"b\"").unwrap() + 3;
    assert_eq!(path_at(text, 1, at, "unknown field `b`", true), "a[1].b");
    assert_eq!(path_at(text, 1, at, "duplicate field `b`", true), "a[1]");
    // No position, or the whole text: the top.
    assert_eq!(path_at(text, 0, 0, "x", true), ".");
    assert_eq!(path_at(text, 1, text.len(), "missing field `z`", true), ".");
    // Lines count as serde_json counts them.
    assert_eq!(path_at("{\n\"a\":\n 7", 3, 2, "invalid type", true), "a");
}
