//! What serde_json, the reference, reads from a text: whether it is one JSON object, its
//! top-level keys in order (repeats included, which `serde_json::Value` would hide: the
//! last one wins there) and its value.

use std::fmt;

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};

/// serde_json's reading of a text.
#[derive(Debug)]
pub enum Reading {
    /// Not JSON at all (or not UTF-8, or trailing bytes).
    Invalid,
    /// Valid JSON to serde_json's scanner (which checks the grammar, as `RawValue` and the
    /// filter's body parser do) that `Value` cannot hold: a number beyond `f64` (`1e400`)
    /// or a lone UTF-16 surrogate escape (`"\ud800"`). The filter may pass it on; there is
    /// nothing to compare with.
    Unrepresentable,
    /// JSON, but not an object.
    NotObject,
    /// One object: every top-level key as written (unescaped, in order, repeats kept) and
    /// the object as `Value` reads it.
    Object {
        keys: Vec<String>,
        map: Map<String, Value>,
    },
}

impl Reading {
    pub fn of(bytes: &[u8]) -> Reading {
        match serde_json::from_slice::<Value>(bytes) {
            Err(_) if serde_json::from_slice::<IgnoredAny>(bytes).is_ok() => {
                Reading::Unrepresentable
            }
            Err(_) => Reading::Invalid,
            Ok(Value::Object(map)) => {
                let keys = top_level_keys(bytes)
                    .expect("serde_json read an object as Value but not key by key");
                Reading::Object { keys, map }
            }
            Ok(_) => Reading::NotObject,
        }
    }

    /// The object, when it is one without repeated keys.
    pub fn unique_object(&self) -> Option<&Map<String, Value>> {
        match self {
            Reading::Object { keys, map } if keys.len() == map.len() => Some(map),
            _ => None,
        }
    }
}

/// The top-level keys of an object, in order, repeats kept.
fn top_level_keys(bytes: &[u8]) -> Result<Vec<String>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let keys = de.deserialize_map(Keys)?;
    de.end()?;
    Ok(keys)
}

struct Keys;

impl<'de> Visitor<'de> for Keys {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
        let mut keys = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            map.next_value::<IgnoredAny>()?;
            keys.push(key);
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings() {
        assert!(matches!(Reading::of(b"{"), Reading::Invalid));
        assert!(matches!(Reading::of(b"{} x"), Reading::Invalid));
        assert!(matches!(Reading::of(b"[1]"), Reading::NotObject));
        assert!(matches!(
            Reading::of(b"{\"a\":1e400}"),
            Reading::Unrepresentable
        ));
        assert!(matches!(
            Reading::of(b"{\"a\":\"\\ud888d\"}"),
            Reading::Unrepresentable
        ));
        assert!(matches!(
            Reading::of(b"{\"a\":\"\\u12\"}"),
            Reading::Invalid
        ));
        let r = Reading::of(br#"{"a":1,"b":2,"\u0061":3}"#);
        match &r {
            Reading::Object { keys, map } => {
                assert_eq!(keys, &["a", "b", "a"]);
                assert_eq!(map.len(), 2);
            }
            other => panic!("{other:?}"),
        }
        assert!(r.unique_object().is_none());
        assert!(Reading::of(br#" {"a":1} "#).unique_object().is_some());
    }
}
