//! Target `body`: `body::JsonBody::parse` and `patch`, against serde_json.
//!
//! Oracles (for bodies that serde_json's `Value` can hold: a number beyond `f64` (`1e400`)
//! or a lone surrogate escape (`"\ud800"`) is valid JSON grammar that `Value` refuses, so
//! such bodies are only parsed and patched):
//! - parse accepts exactly the UTF-8 texts that serde_json reads as one object without
//!   repeated keys; each refusal says why truly (`Empty`: blank, `NotUtf8`, `Invalid`: not
//!   one object, `DuplicateKey(k)`: `k` is there twice);
//! - on acceptance, every key serde_json reads is located, its raw text is a trimmed slice
//!   of the body, in key order, and reads as the same value (`string` too);
//! - for edits made from the input (keys present, case variants and new keys; values that
//!   are the member's own text, another member's, scalars, nested and re-formatted
//!   values; each key once, as the filter's callers give them): `patch` is `None` exactly
//!   when every edit gives a present member its very text; otherwise serde_json reads from
//!   the patched body the original object with the edits applied (replaced in place,
//!   appended in order at the end), without repeated keys, and the patched bytes are the
//!   original bytes with the new values spliced in, appended members just before the
//!   closing brace: nothing else moves.

use arbitrary::Unstructured;
use envoy_ai_proxy::body::{BodyError, JsonBody};
use serde_json::{Map, Value};

use crate::input;
use crate::json::Reading;

const JSON_WS: [char; 4] = [' ', '\t', '\n', '\r'];

/// The fuzz target: one input, every oracle.
pub fn check(data: &[u8]) {
    let (control, payload) = input::split(data);
    let reading = Reading::of(payload);
    if let Reading::Unrepresentable = reading {
        // Nothing to compare with; still, parsing and patching must not panic.
        if let Ok(body) = JsonBody::parse(payload) {
            let _ = body.patch([("model", "\"m\""), ("stream", "true")]);
        }
        return;
    }
    let body = match JsonBody::parse(payload) {
        Ok(body) => body,
        Err(e) => return check_refusal(payload, &e, &reading),
    };
    let map = check_acceptance(payload, &body, &reading);
    let edits = edits(&mut Unstructured::new(control), &body, map);
    let pairs = || edits.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let out = body.patched(pairs());
    // The prefix Envoy is given, applied to the client's bytes, is the whole patched body.
    let patch = body.patch(pairs());
    assert!(patch.as_ref().is_none_or(|p| p.replaced <= payload.len()));
    assert_eq!(
        patch.map(|p| (p.new_len(payload.len()), p.apply(payload))),
        out.as_ref().map(|o| (o.len(), o.as_bytes().to_vec())),
        "the prefix patch does not make the whole patched body"
    );
    check_patch(&body, map, &edits, out.as_deref());
}

/// A refused body: the reason is true, and serde_json does not read it as one object
/// without repeated keys either.
pub fn check_refusal(payload: &[u8], err: &BodyError, reading: &Reading) {
    match err {
        BodyError::Empty => assert!(
            payload.iter().all(u8::is_ascii_whitespace),
            "Empty, but the body is not blank"
        ),
        BodyError::NotUtf8 => assert!(
            std::str::from_utf8(payload).is_err(),
            "NotUtf8, but the body is UTF-8"
        ),
        BodyError::Invalid(_) => {}
        BodyError::DuplicateKey(k) => match reading {
            Reading::Object { keys, .. } => assert!(
                keys.iter().filter(|key| *key == k).count() >= 2,
                "DuplicateKey({k:?}), but serde_json reads the keys {keys:?}"
            ),
            other => panic!("DuplicateKey({k:?}), but serde_json reads {other:?}"),
        },
        // Only a protocol's own check refuses a key for its case; parsing never does.
        BodyError::CaseVariant(k, owned) => {
            panic!("parse refused with CaseVariant({k:?}, {owned:?})")
        }
    }
    if let Some(map) = reading.unique_object() {
        assert!(
            std::str::from_utf8(payload).is_err(),
            "refused ({err:?}) a body serde_json reads as one object: {map:?}"
        );
    }
}

/// An accepted body: serde_json reads one object without repeated keys, and every member
/// is located where its value is. Returns that object.
pub fn check_acceptance<'r>(
    payload: &[u8],
    body: &JsonBody<'_>,
    reading: &'r Reading,
) -> &'r Map<String, Value> {
    let Some(map) = reading.unique_object() else {
        panic!("accepted a body that serde_json reads as {reading:?}");
    };
    let text = body.text();
    assert_eq!(text.as_bytes(), payload, "text() is not the body");
    let mut last_end = 0;
    for (key, value) in map {
        let Some(raw) = body.raw(key) else {
            panic!("member {key:?} is not found");
        };
        let start = offset_in(text, raw);
        assert!(start >= last_end, "member {key:?} is located out of order");
        last_end = start + raw.len();
        assert_eq!(
            raw.trim_matches(JSON_WS),
            raw,
            "raw text of {key:?} has whitespace"
        );
        let read: Value = serde_json::from_str(raw)
            .unwrap_or_else(|e| panic!("raw text of {key:?} is not JSON ({e}): {raw:?}"));
        assert_eq!(&read, value, "raw text of {key:?} reads as another value");
        assert_eq!(
            body.string(key).as_deref(),
            value.as_str(),
            "string({key:?})"
        );
    }
    let absent = format!("{}\u{0}", map.keys().next().map_or("", String::as_str));
    assert_eq!(body.raw(&absent), None, "a key that is not there is found");
    map
}

/// Where `raw` starts in `text`, of which it must be a slice.
fn offset_in(text: &str, raw: &str) -> usize {
    let start = (raw.as_ptr() as usize).wrapping_sub(text.as_ptr() as usize);
    assert!(
        start <= text.len() && raw.len() <= text.len() - start,
        "raw text is not a slice of the body"
    );
    start
}

/// Edits made from the control bytes: (key, JSON text of the new value), each key once.
pub fn edits(
    u: &mut Unstructured<'_>,
    body: &JsonBody<'_>,
    map: &Map<String, Value>,
) -> Vec<(String, String)> {
    let keys: Vec<&str> = map.keys().map(String::as_str).collect();
    let pick = |u: &mut Unstructured<'_>| -> Option<&str> {
        let i = u.choose_index(keys.len()).ok()?;
        keys.get(i).copied()
    };
    let mut edits: Vec<(String, String)> = Vec::new();
    for _ in 0..u.int_in_range(0u8..=4).unwrap_or(0) {
        let key = match u.int_in_range(0u8..=3).unwrap_or(0) {
            0 | 1 => pick(u).map(str::to_owned),
            2 => pick(u).map(flip_case),
            _ => None,
        }
        .unwrap_or_else(|| u.arbitrary::<String>().unwrap_or_default());
        if edits.iter().any(|(k, _)| *k == key) {
            continue;
        }
        let member = |u: &mut Unstructured<'_>| pick(u).and_then(|k| body.raw(k)).unwrap_or("1");
        let value = match u.int_in_range(0u8..=6).unwrap_or(0) {
            0 => body.raw(&key).unwrap_or("null").to_owned(),
            1 => member(u).to_owned(),
            2 => scalar(u).to_string(),
            3 => format!("[{},{}]", member(u), scalar(u)),
            4 => format!(
                "{{{}:{}}}",
                Value::from(u.arbitrary::<String>().unwrap_or_default()),
                member(u)
            ),
            5 => {
                let v: Value = serde_json::from_str(member(u)).unwrap_or(Value::Null);
                serde_json::to_string_pretty(&v).unwrap_or_default()
            }
            _ => Value::from(u.arbitrary::<String>().unwrap_or_default()).to_string(),
        };
        edits.push((key, value));
    }
    edits
}

fn flip_case(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_lowercase() {
                c.to_uppercase().collect::<String>()
            } else {
                c.to_lowercase().collect()
            }
        })
        .collect()
}

fn scalar(u: &mut Unstructured<'_>) -> Value {
    match u.int_in_range(0u8..=4).unwrap_or(0) {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary().unwrap_or(false)),
        2 => Value::from(u.arbitrary::<i64>().unwrap_or(0)),
        3 => Value::from(u.arbitrary::<f64>().unwrap_or(0.5)),
        _ => Value::from(u.arbitrary::<String>().unwrap_or_default()),
    }
}

/// What `patch` returned for `edits` on `body` (which serde_json reads as `map`).
pub fn check_patch(
    body: &JsonBody<'_>,
    map: &Map<String, Value>,
    edits: &[(String, String)],
    out: Option<&str>,
) {
    let changes = edits.iter().any(|(k, v)| body.raw(k) != Some(v.as_str()));
    let Some(out) = out else {
        assert!(
            !changes,
            "patch returned None, but {edits:?} change the body"
        );
        return;
    };
    assert!(
        changes,
        "patch returned a body, but {edits:?} change nothing"
    );

    // What serde_json reads: the original object with the edits applied.
    let mut expected = map.clone();
    for (k, v) in edits {
        let v: Value = serde_json::from_str(v).expect("edit values are JSON");
        expected.insert(k.clone(), v);
    }
    let reading = Reading::of(out.as_bytes());
    let Some(got) = reading.unique_object() else {
        panic!("the patched body is not one object without repeated keys: {reading:?}\n{out}");
    };
    assert_eq!(
        got, &expected,
        "the patched body reads as another object\n{out}"
    );
    assert!(
        got.keys().eq(expected.keys()),
        "the patched body has its keys in another order\n{out}"
    );

    // The bytes: the original with the new values spliced in, appended members just before
    // the closing brace, nothing else changed.
    let text = body.text();
    let mut replaced: Vec<(usize, usize, &str)> = edits
        .iter()
        .filter_map(|(k, v)| {
            let raw = body.raw(k)?;
            let start = offset_in(text, raw);
            Some((start, start + raw.len(), v.as_str()))
        })
        .collect();
    replaced.sort_unstable();
    let mut want = String::new();
    let mut pos = 0;
    for (start, end, value) in replaced {
        want.push_str(&text[pos..start]);
        want.push_str(value);
        pos = end;
    }
    want.push_str(&text[pos..]);
    if edits.iter().all(|(k, _)| body.raw(k).is_some()) {
        assert_eq!(out, want, "replacing values changed other bytes");
    } else {
        let close = want.trim_end_matches(JSON_WS).len() - 1;
        let (head, tail) = want.split_at(close);
        assert!(
            out.len() > want.len() && out.starts_with(head) && out.ends_with(tail),
            "appending changed other bytes:\n{out}\nshould keep\n{head}\n...\n{tail}"
        );
    }

    // Member by member: an edited member has the edit's text, any other its own bytes.
    let patched = JsonBody::parse(out.as_bytes())
        .unwrap_or_else(|e| panic!("the patched body does not parse again: {e}\n{out}"));
    for key in expected.keys() {
        let want = match edits.iter().find(|(k, _)| k == key) {
            Some((_, v)) => Some(v.as_str()),
            None => body.raw(key),
        };
        assert_eq!(patched.raw(key), want, "member {key:?} after the patch");
    }
}

/// The oracles themselves can fail: each is shown a wrong answer.
#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = r#"{ "model": "a", "n": 1 }"#;

    fn parsed() -> (JsonBody<'static>, Reading) {
        (
            JsonBody::parse(BODY.as_bytes()).unwrap(),
            Reading::of(BODY.as_bytes()),
        )
    }

    fn edits(e: &[(&str, &str)]) -> Vec<(String, String)> {
        e.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn right_answers_pass() {
        let (body, reading) = parsed();
        let map = check_acceptance(BODY.as_bytes(), &body, &reading);
        let e = edits(&[("model", "\"b\""), ("x", "[1]")]);
        check_patch(&body, map, &e, Some(r#"{ "model": "b", "n": 1 ,"x":[1]}"#));
        check_patch(&body, map, &edits(&[("n", "1")]), None);
        check_refusal(
            b"{\"a\":1,\"a\":2}",
            &BodyError::DuplicateKey("a".into()),
            &Reading::of(b"{\"a\":1,\"a\":2}"),
        );
    }

    #[test]
    #[should_panic(expected = "replacing values changed other bytes")]
    fn whitespace_lost() {
        let (body, reading) = parsed();
        let map = check_acceptance(BODY.as_bytes(), &body, &reading);
        check_patch(
            &body,
            map,
            &edits(&[("model", "\"b\"")]),
            Some(r#"{"model": "b", "n": 1 }"#),
        );
    }

    #[test]
    #[should_panic(expected = "reads as another object")]
    fn edit_not_applied() {
        let (body, reading) = parsed();
        let map = check_acceptance(BODY.as_bytes(), &body, &reading);
        check_patch(
            &body,
            map,
            &edits(&[("model", "\"b\""), ("n", "2")]),
            Some(r#"{ "model": "b", "n": 1 }"#),
        );
    }

    #[test]
    #[should_panic(expected = "change the body")]
    fn none_for_a_change() {
        let (body, reading) = parsed();
        let map = check_acceptance(BODY.as_bytes(), &body, &reading);
        check_patch(&body, map, &edits(&[("n", "1.0")]), None);
    }

    #[test]
    #[should_panic(expected = "repeated keys")]
    fn appended_twice() {
        let (body, reading) = parsed();
        let map = check_acceptance(BODY.as_bytes(), &body, &reading);
        check_patch(
            &body,
            map,
            &edits(&[("model", "\"b\"")]),
            Some(r#"{ "model": "a", "n": 1 ,"model":"b"}"#),
        );
    }

    #[test]
    #[should_panic(expected = "serde_json reads as one object")]
    fn false_refusal() {
        check_refusal(
            BODY.as_bytes(),
            &BodyError::Invalid("no".into()),
            &Reading::of(BODY.as_bytes()),
        );
    }

    #[test]
    #[should_panic(expected = "DuplicateKey")]
    fn false_duplicate() {
        check_refusal(
            BODY.as_bytes(),
            &BodyError::DuplicateKey("n".into()),
            &Reading::of(BODY.as_bytes()),
        );
    }

    #[test]
    #[should_panic(expected = "accepted a body")]
    fn false_acceptance() {
        let (body, _) = parsed();
        check_acceptance(BODY.as_bytes(), &body, &Reading::of(b"[1]"));
    }
}
