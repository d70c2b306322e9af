//! The client's JSON body: validated once, its top-level members located by byte span, and
//! patched by splicing so that every byte the filter does not change reaches the upstream
//! as the client sent it (no re-encoding of messages, numbers or escapes).

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::scan;

/// Why a body could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    Empty,
    NotUtf8,
    Invalid(String),
    DuplicateKey(String),
    /// A key that differs only in case from one the gateway reads or sets (key, that one).
    CaseVariant(String, String),
}

/// One top-level member: the unescaped key and the byte span of its value in the body.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Member<'a> {
    /// Borrowed from the body unless it had escapes.
    key: Cow<'a, str>,
    start: usize,
    end: usize,
}

/// A body known to be one JSON object, with its top-level members located.
#[derive(Debug)]
pub struct JsonBody<'a> {
    text: &'a str,
    members: Vec<Member<'a>>,
    /// Byte offset of the object's closing `}`.
    close: usize,
}

impl<'a> JsonBody<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<JsonBody<'a>, BodyError> {
        Self::parse_with(bytes, true)
    }

    /// `fast`: try the structural scan (`scan`) first; serde_json decides whatever it is not
    /// sure of, and always without it.
    fn parse_with(bytes: &'a [u8], fast: bool) -> Result<JsonBody<'a>, BodyError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(BodyError::Empty);
        }
        let (text, located) = match fast.then(|| scan::object(bytes)).flatten() {
            Some((text, members)) => (
                text,
                members
                    .into_iter()
                    .map(|m| (Cow::Borrowed(m.key), m.start, m.end))
                    .collect(),
            ),
            None => {
                let text = std::str::from_utf8(bytes).map_err(|_| BodyError::NotUtf8)?;
                (text, serde_members(text)?)
            }
        };
        let mut members: Vec<Member> = Vec::with_capacity(located.len());
        for (key, start, end) in located {
            if members.iter().any(|m| m.key == key) {
                return Err(BodyError::DuplicateKey(key.into_owned()));
            }
            members.push(Member { key, start, end });
        }
        // Only JSON whitespace may follow the object (checked by `end()`), so the last
        // non-whitespace byte is its closing brace.
        let close = text
            .trim_end_matches([' ', '\t', '\r', '\n'])
            .len()
            .saturating_sub(1);
        Ok(JsonBody {
            text,
            members,
            close,
        })
    }

    /// What serde_json alone makes of a body, and what the members are (to compare with
    /// the structural scan).
    #[cfg(test)]
    pub(crate) fn without_scan(bytes: &'a [u8]) -> Result<JsonBody<'a>, BodyError> {
        Self::parse_with(bytes, false)
    }

    #[cfg(test)]
    pub(crate) fn spans(&self) -> (Vec<(String, usize, usize)>, usize) {
        let m = self.members.iter();
        (
            m.map(|m| (m.key.to_string(), m.start, m.end)).collect(),
            self.close,
        )
    }

    /// The raw JSON text of a top-level member's value.
    pub fn raw(&self, key: &str) -> Option<&'a str> {
        let m = self.members.iter().find(|m| m.key == key)?;
        self.text.get(m.start..m.end)
    }

    /// The first top-level key that differs from one of `owned` only in case (as Go's
    /// case-insensitive JSON decoding folds it), with the owned key it shadows.
    pub fn case_clash<'o>(&self, owned: &'o [String]) -> Option<(&str, &'o str)> {
        self.members.iter().find_map(|m| {
            owned
                .iter()
                .find(|o| **o != m.key && fold_eq(o, &m.key))
                .map(|o| (m.key.as_ref(), o.as_str()))
        })
    }

    /// The top-level keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|m| m.key.as_ref())
    }

    /// A top-level string member, unescaped.
    pub fn string(&self, key: &str) -> Option<String> {
        self.raw(key)
            .and_then(|r| serde_json::from_slice(r.as_bytes()).ok())
    }

    pub fn text(&self) -> &'a str {
        self.text
    }

    /// Applies `edits` (key, new JSON text of the value): an existing member's value is
    /// replaced in place, a missing one is appended. Returns `None` when nothing changes, so
    /// the caller can forward the original bytes untouched. Only the bytes up to the last
    /// change are built (see [`Patch`]): a large body's unchanged tail is never copied.
    pub fn patch<'e, I>(&self, edits: I) -> Option<Patch>
    where
        I: IntoIterator<Item = (&'e str, &'e str)>,
    {
        // (start, end, replacement); appended members all splice at the closing brace.
        let mut splices: Vec<(usize, usize, &'e str)> = Vec::new();
        let mut appended: Vec<(&'e str, &'e str)> = Vec::new();
        for (key, value) in edits {
            match self.members.iter().find(|m| m.key == key) {
                Some(m) => {
                    if self.text.get(m.start..m.end) != Some(value) {
                        splices.push((m.start, m.end, value));
                    }
                }
                None => appended.push((key, value)),
            }
        }
        if splices.is_empty() && appended.is_empty() {
            return None;
        }
        crate::sort::sort_small(&mut splices, |a, b| a.0 < b.0);
        // The original bytes the patch replaces: up to the end of the last splice, or to the
        // closing brace when members are appended.
        let replaced = if appended.is_empty() {
            splices.last().map_or(0, |s| s.1)
        } else {
            self.close
        };

        let extra = splices
            .iter()
            .map(|s| s.2.len())
            .fold(0usize, usize::saturating_add);
        let extra = appended.iter().fold(extra, |acc, (k, v)| {
            acc.saturating_add(k.len())
                .saturating_add(v.len())
                .saturating_add(8)
        });
        let mut out = String::with_capacity(replaced.saturating_add(extra));
        let mut pos = 0;
        for (start, end, value) in splices {
            out.push_str(self.text.get(pos..start).unwrap_or(""));
            out.push_str(value);
            pos = end;
        }
        out.push_str(self.text.get(pos..replaced).unwrap_or(""));
        let mut first = self.members.is_empty();
        for (key, value) in appended {
            if !first {
                out.push(',');
            }
            first = false;
            // Keys are configuration strings: encode them as JSON strings.
            out.push_str(&serde_json::to_string(key).unwrap_or_default());
            out.push(':');
            out.push_str(value);
        }
        Some(Patch {
            prefix: out,
            replaced,
        })
    }

    /// The whole patched text (for small values, and callouts that carry a whole body).
    pub fn patched<'e, I>(&self, edits: I) -> Option<String>
    where
        I: IntoIterator<Item = (&'e str, &'e str)>,
    {
        self.patch(edits).map(|p| {
            let mut whole = p.prefix;
            whole.push_str(self.text.get(p.replaced..).unwrap_or(""));
            whole
        })
    }
}

/// A new body as Envoy takes it: the first `replaced` bytes of the client's body give way
/// to `prefix`, and the rest stays where it is (Envoy replaces a prefix of a buffered body in
/// place). A body built anew replaces all of the client's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patch {
    pub prefix: String,
    pub replaced: usize,
}

impl Patch {
    /// All of a client's body of `len` bytes gives way to `body`.
    pub fn whole(body: String, len: usize) -> Patch {
        Patch {
            prefix: body,
            replaced: len,
        }
    }

    /// The length of the patched body, for a client's body of `len` bytes.
    pub fn new_len(&self, len: usize) -> usize {
        len.saturating_sub(self.replaced)
            .saturating_add(self.prefix.len())
    }

    /// The patched body, whole.
    pub fn apply(&self, original: &[u8]) -> Vec<u8> {
        let tail = original.get(self.replaced..).unwrap_or(&[]);
        let mut out = Vec::with_capacity(self.prefix.len().saturating_add(tail.len()));
        out.extend_from_slice(self.prefix.as_bytes());
        out.extend_from_slice(tail);
        out
    }
}

/// Every top-level member (key, value span) of a body the scan was not sure of: serde_json
/// accepts or refuses it (its error is the client's) and decodes the keys; the scan, which
/// accepts whatever serde_json does, locates the values. (serde_json could give the spans
/// itself only with its `raw_value` feature, whose `Value` reading costs the module 4 MB of
/// V8's compile memory and reads `{"$serde_json::private::RawValue": "…"}` as the JSON in
/// the string: "Round 13" in docs/performance.md.)
#[inline(never)] // compiled on its own: see "Round 5" in docs/performance.md
fn serde_members(text: &str) -> Result<Vec<(Cow<'_, str>, usize, usize)>, BodyError> {
    let mut de = serde_json::Deserializer::from_slice(text.as_bytes());
    let keys = de
        .deserialize_map(TopLevel)
        .and_then(|m| de.end().map(|()| m))
        .map_err(|e| BodyError::Invalid(e.to_string()))?;
    let spans = scan::value_spans(text).unwrap_or_default();
    if spans.len() != keys.len() {
        // Not reached: the scan is held to serde_json on every body its tests and the
        // `body` fuzz target try.
        return Err(BodyError::Invalid(
            "its members could not be located".into(),
        ));
    }
    Ok(keys
        .into_iter()
        .zip(spans)
        .map(|(key, (start, end))| (key, start, end))
        .collect())
}

/// A key's character as a case-insensitive decoder compares it: ASCII lower case, with the two
/// characters Go's `encoding/json` also folds to ASCII (U+017F long s, U+212A Kelvin sign).
fn fold(c: char) -> char {
    match c {
        '\u{17f}' => 's',
        '\u{212a}' => 'k',
        c => c.to_ascii_lowercase(),
    }
}

/// Whether two keys fold to the same (compared as they go: no copy is made).
fn fold_eq(a: &str, b: &str) -> bool {
    a.chars().map(fold).eq(b.chars().map(fold))
}

/// Visits the top-level object, keeping its keys (each value is validated and passed over).
struct TopLevel;

impl<'de> Visitor<'de> for TopLevel {
    type Value = Vec<Cow<'de, str>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            map.next_value::<IgnoredAny>()?;
            out.push(key);
        }
        Ok(out)
    }
}

/// A top-level key, borrowed from the body when it has no escapes (no copy per key).
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(v.to_string())))
    }

    fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(v)))
    }
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::Empty => f.write_str("the request body is empty"),
            BodyError::NotUtf8 => f.write_str("the request body is not valid UTF-8"),
            BodyError::Invalid(e) => write!(f, "the request body is not valid JSON: {e}"),
            BodyError::DuplicateKey(k) => {
                write!(f, "the request body has the key `{k}` more than once")
            }
            BodyError::CaseVariant(k, owned) => write!(
                f,
                "the request body has the key `{k}`, which differs only in case from `{owned}`: send `{owned}` once"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn patched(body: &str, edits: &[(&str, &str)]) -> Option<String> {
        JsonBody::parse(body.as_bytes())
            .unwrap()
            .patched(edits.iter().copied())
    }

    #[test]
    fn rejects_what_is_not_one_object() {
        type Case<'a> = (&'a str, &'a [u8], fn(&BodyError) -> bool);
        let cases: &[Case] = &[
            ("empty", b"", |e| *e == BodyError::Empty),
            ("blank", b" \n\t", |e| *e == BodyError::Empty),
            ("not utf-8", b"{\"a\":\"\xff\"}", |e| {
                *e == BodyError::NotUtf8
            }),
            ("array", b"[1,2]", |e| matches!(e, BodyError::Invalid(_))),
            ("string", b"\"hi\"", |e| matches!(e, BodyError::Invalid(_))),
            ("truncated", b"{\"a\":", |e| {
                matches!(e, BodyError::Invalid(_))
            }),
            ("trailing", b"{} {}", |e| matches!(e, BodyError::Invalid(_))),
            ("bad nested", b"{\"m\":[1,}", |e| {
                matches!(e, BodyError::Invalid(_))
            }),
            ("duplicate", b"{\"model\":\"a\",\"model\":\"b\"}", |e| {
                *e == BodyError::DuplicateKey("model".into())
            }),
            (
                "escaped duplicate",
                b"{\"model\":\"a\",\"mod\\u0065l\":\"b\"}",
                |e| *e == BodyError::DuplicateKey("model".into()),
            ),
        ];
        for (name, body, ok) in cases {
            let err = JsonBody::parse(body)
                .err()
                .unwrap_or_else(|| panic!("{name}: accepted"));
            assert!(ok(&err), "{name}: {err:?}");
        }
    }

    #[test]
    fn keys_that_differ_only_in_case_from_owned_ones() {
        let owned = ["model".to_string(), "max_tokens".to_string()];
        let clash = |body: &str| {
            JsonBody::parse(body.as_bytes())
                .unwrap()
                .case_clash(&owned)
                .map(|(k, o)| (k.to_string(), o.to_string()))
        };
        assert_eq!(clash(r#"{"model":"a","messages":[]}"#), None);
        assert_eq!(
            clash(r#"{"model":"a","MODEL":"b"}"#),
            Some(("MODEL".into(), "model".into()))
        );
        assert_eq!(
            clash(r#"{"Model":"b"}"#),
            Some(("Model".into(), "model".into()))
        );
        assert_eq!(
            clash("{\"max_to\\u212aens\":1}"),
            Some(("max_to\u{212a}ens".into(), "max_tokens".into()))
        );
        assert_eq!(clash(r#"{"Messages":[]}"#), None, "not owned");
    }

    #[test]
    fn reads_members() {
        let b = JsonBody::parse(
            br#" { "model" : "gpt\u002d4o", "n": 1, "messages": [ {"x": "}"} ] } "#,
        )
        .unwrap();
        assert_eq!(b.string("model").as_deref(), Some("gpt-4o"));
        assert_eq!(b.raw("n"), Some("1"));
        assert_eq!(b.raw("messages"), Some(r#"[ {"x": "}"} ]"#));
        assert_eq!(b.raw("missing"), None);
        assert_eq!(b.string("n"), None);
    }

    #[test]
    fn patch_replaces_and_appends_keeping_other_bytes() {
        let body =
            "{\n  \"model\": \"a\",\n  \"messages\": [{\"content\": \"caf\\u00e9 1.0e3\"}]\n}\n";
        let out = patched(body, &[("model", "\"gpt-4o\""), ("max_tokens", "16")]).unwrap();
        assert_eq!(
            out,
            "{\n  \"model\": \"gpt-4o\",\n  \"messages\": [{\"content\": \"caf\\u00e9 1.0e3\"}]\n,\"max_tokens\":16}\n"
        );
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["max_tokens"], 16);
    }

    #[test]
    fn patch_is_none_when_nothing_changes() {
        assert_eq!(
            patched(r#"{"model":"gpt-4o","x":1}"#, &[("model", "\"gpt-4o\"")]),
            None
        );
        assert_eq!(patched(r#"{"model":"gpt-4o"}"#, &[]), None);
    }

    #[test]
    fn patch_into_empty_object_and_many_splices() {
        assert_eq!(
            patched("{}", &[("model", "\"m\""), ("t", "0.5")]).unwrap(),
            r#"{"model":"m","t":0.5}"#
        );
        let out = patched(
            r#"{"c":3,"a":1,"b":2}"#,
            &[("b", "20"), ("a", "10"), ("c", "30")],
        )
        .unwrap();
        assert_eq!(out, r#"{"c":30,"a":10,"b":20}"#);
    }

    #[test]
    fn a_patch_builds_only_the_bytes_up_to_its_last_change() {
        let tail = "y".repeat(1000);
        let body = format!(r#"{{"model":"a","messages":"{tail}"}} "#);
        let parsed = JsonBody::parse(body.as_bytes()).unwrap();
        // A replaced value: the prefix ends with it.
        let p = parsed.patch([("model", "\"gpt-4o\"")]).unwrap();
        assert_eq!(p.prefix, r#"{"model":"gpt-4o""#);
        assert_eq!(p.replaced, r#"{"model":"a""#.len());
        // Appended members: the prefix ends before the closing brace.
        let p = parsed.patch([("model", "\"b\""), ("n", "2")]).unwrap();
        assert_eq!(p.replaced, body.trim_end().len() - 1);
        assert!(p.prefix.ends_with(&format!(r#"{tail}","n":2"#)));
        // Applied, either is the whole patched body; its length is known without it.
        for edits in [
            vec![("model", "\"gpt-4o\"")],
            vec![("model", "\"b\""), ("n", "2")],
        ] {
            let p = parsed.patch(edits.iter().copied()).unwrap();
            let whole = parsed.patched(edits.iter().copied()).unwrap();
            assert_eq!(p.apply(body.as_bytes()), whole.as_bytes());
            assert_eq!(p.new_len(body.len()), whole.len());
            let v: Value = serde_json::from_str(&whole).unwrap();
            assert_eq!(v["messages"], Value::from(tail.clone()));
        }
        // A body built anew replaces all of the client's.
        let p = Patch::whole("{}".into(), body.len());
        assert_eq!(p.apply(body.as_bytes()), b"{}");
        assert_eq!(p.new_len(body.len()), 2);
    }

    #[test]
    fn appended_keys_are_json_encoded() {
        let out = patched("{}", &[("we\"ird", "1")]).unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["we\"ird"], 1);
    }
}
