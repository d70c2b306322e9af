//! JSON values built member by member: what `serde_json::json!` builds, without passing
//! each value through serde's serialiser on the way (every `json!` site costs V8 compile
//! memory at start: "Round 14" in docs/performance.md).

use serde_json::{Map, Value};

/// An object of these members, in this order (`json!({"k": v, ...})`).
#[inline(always)]
pub fn obj<const N: usize>(mut members: [(&'static str, Value); N]) -> Value {
    let object = take_all(&mut members);
    // `take_all` left `null` in every member, which owns nothing: no drop code at each
    // call site for values already moved out.
    std::mem::forget(members);
    object
}

fn take_all(members: &mut [(&'static str, Value)]) -> Value {
    let mut m = Map::with_capacity(members.len());
    for (k, v) in members.iter_mut() {
        m.insert((*k).to_owned(), std::mem::take(v));
    }
    Value::Object(m)
}

/// An empty object (`json!({})`).
pub fn empty() -> Value {
    Value::Object(Map::new())
}

/// A value's compact text, written straight into bytes (what `value.to_string()` gives,
/// without `Display`'s second, pretty-printing copy of serde_json's writer).
pub fn to_bytes(v: &Value) -> Vec<u8> {
    // Writing a `Value` into a `Vec` cannot fail: its keys are strings.
    serde_json::to_vec(v).unwrap_or_default()
}

/// A value's compact text (`value.to_string()`).
pub fn to_text(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// A value's deep copy, compiled once: `Value::clone` is inlined wherever it is called
/// otherwise, a match over every kind of value at each call site.
#[inline(never)]
pub fn copy(v: &Value) -> Value {
    v.clone()
}

/// A member that may be missing, as `null` when it is.
pub fn or_null(v: Option<&Value>) -> Value {
    v.map_or(Value::Null, copy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builds_what_json_builds_in_the_same_order() {
        let nested = obj([("z", 1.into()), ("a", Value::Null)]);
        let built = obj([
            ("type", "text".into()),
            ("n", 7u64.into()),
            ("b", true.into()),
            ("inner", nested),
            ("list", Value::Array(vec![empty()])),
            ("gone", or_null(None)),
            ("kept", or_null(Some(&json!([1, "x"])))),
        ]);
        let want = json!({"type": "text", "n": 7, "b": true, "inner": {"z": 1, "a": null},
                          "list": [{}], "gone": null, "kept": [1, "x"]});
        assert_eq!(built, want);
        assert_eq!(built.to_string(), want.to_string());
        assert_eq!(to_text(&built), want.to_string());
        assert_eq!(to_bytes(&built), want.to_string().into_bytes());
        assert_eq!(
            built.to_string(),
            r#"{"type":"text","n":7,"b":true,"inner":{"z":1,"a":null},"list":[{}],"gone":null,"kept":[1,"x"]}"#
        );
    }

    #[test]
    fn a_repeated_key_keeps_the_last_value_as_json_does() {
        let built = obj([("k", 1.into()), ("k", 2.into())]);
        assert_eq!(built, json!({"k": 1, "k": 2}));
        assert_eq!(to_text(&built), r#"{"k":2}"#);
    }
}
