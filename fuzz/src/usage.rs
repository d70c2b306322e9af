//! Target `usage`: `usage::Meter`, JSON and SSE modes, under any chunking.
//!
//! Oracles, for the mode, the flags and the chunking read from the control bytes:
//! - usage (and whether there was any), model, collected text and output bytes are the
//!   same however the answer is chunked;
//! - collecting the text for payload logs or not changes none of usage, model and bytes
//!   (relaxed by `text-invariance`);
//! - the bytes are unchanged (every `push` and `finish` say so) unless the meter drops the
//!   usage event; then the output is the stream less some whole events, each a usage-only
//!   event (`choices: []` and a `usage` object), and every event that is plainly one (its
//!   data compact JSON with known field types) is among them;
//! - no usage read means zero usage; the collected text stays within `MAX_LOGGED_TEXT`;
//! - the reader of answers (`answer`) reads the payload, and the data of each of its
//!   `data:` lines, as serde's derive code does (`answer::reference`): the same fields,
//!   texts and usage, or both refuse it.

use std::collections::BTreeMap;

use arbitrary::Unstructured;
use envoy_ai_proxy::answer::reference as derived;
use envoy_ai_proxy::usage::{Meter, Usage, MAX_LOGGED_TEXT};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::Value;

use crate::input::{self, relaxed};
use crate::sse::reference;

/// The fuzz target: one input, every oracle.
pub fn check(data: &[u8]) {
    let (control, payload) = input::split(data);
    let mut u = Unstructured::new(control);
    let sse = u.arbitrary::<bool>().unwrap_or(false);
    let drop_usage_event = u.arbitrary::<bool>().unwrap_or(false);
    let collect_text = u.arbitrary::<bool>().unwrap_or(false);
    let chunks = input::chunks(&mut u, payload);
    let meter = |collect: bool| {
        if sse {
            Meter::sse(drop_usage_event, collect)
        } else {
            Meter::json(collect)
        }
    };

    let whole = Outcome::of(meter(collect_text), &[payload]);
    let chunked = Outcome::of(meter(collect_text), &chunks);
    let shown = String::from_utf8_lossy(payload);
    let sizes: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
    assert_eq!(
        chunked, whole,
        "chunks of {sizes:?} read otherwise than one chunk"
    );
    let other = Outcome::of(meter(!collect_text), &chunks);
    assert!(
        relaxed("text-invariance")
            || (other.usage, other.has_usage, &other.model, &other.out)
                == (whole.usage, whole.has_usage, &whole.model, &whole.out),
        "collecting the text (now {}) changes what is read: {:?} instead of {:?}; {shown:?}",
        !collect_text,
        (other.usage, other.has_usage, &other.model, &other.out),
        (whole.usage, whole.has_usage, &whole.model, &whole.out),
    );

    if !whole.has_usage {
        assert_eq!(whole.usage, Usage::default(), "usage without has_usage");
    }
    if let Some(text) = &whole.text {
        assert!(text.len() <= MAX_LOGGED_TEXT, "collected text too long");
    }
    assert_eq!(
        whole.text.is_some(),
        collect_text,
        "text collected iff asked"
    );
    same_reading(payload);
    for line in payload.split(|&b| b == b'\n') {
        if let Some(data) = line.strip_prefix(b"data:") {
            same_reading(data.trim_ascii_start());
        }
    }
    if sse && drop_usage_event {
        check_dropped(payload, &whole.out.0);
    } else {
        assert!(!whole.replaced && !chunked.replaced, "bytes replaced");
        assert_eq!(whole.out.0, payload, "bytes changed");
    }
}

/// The filter's reader and serde's derive code read `data` alike.
fn same_reading(data: &[u8]) {
    let [mine, theirs] = derived::read_twice(data);
    assert_eq!(
        mine,
        theirs,
        "the reader and the derive code differ on {:?}",
        String::from_utf8_lossy(data)
    );
}

/// What a meter read from an answer fed in chunks.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    pub usage: Usage,
    pub has_usage: bool,
    pub model: Option<String>,
    pub text: Option<String>,
    /// The bytes sent on: each chunk, or what `push` said to send instead, then `finish`'s.
    pub out: Bytes,
    /// Whether `push` or `finish` ever returned bytes to send instead.
    pub replaced: bool,
}

impl Outcome {
    pub fn of(mut meter: Meter, chunks: &[&[u8]]) -> Outcome {
        let mut out = Vec::new();
        let mut replaced = false;
        for chunk in chunks {
            match meter.push(chunk) {
                Some(bytes) => {
                    replaced = true;
                    out.extend(bytes);
                }
                None => out.extend_from_slice(chunk),
            }
        }
        if let Some(bytes) = meter.finish() {
            replaced = true;
            out.extend(bytes);
        }
        assert_eq!(
            replaced,
            meter.rewrites(),
            "bytes returned iff the meter rewrites"
        );
        Outcome {
            usage: meter.usage(),
            has_usage: meter.has_usage(),
            model: meter.model().map(str::to_owned),
            text: meter.text().map(str::to_owned),
            out: Bytes(out),
            replaced,
        }
    }
}

/// Bytes that show as text in assertion messages.
#[derive(PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

/// `out` is `stream` less some whole events: those a meter on its own drops (the verdict
/// is the event's alone), each of them usage-only, every plainly usage-only one among them.
pub fn check_dropped(stream: &[u8], out: &[u8]) {
    let mut want = Vec::new();
    for e in reference(stream) {
        let raw = &stream[e.start..e.end];
        let mut alone = Meter::sse(true, false);
        let mut sent = alone.push(raw).unwrap_or_else(|| raw.to_vec());
        sent.extend(alone.finish().unwrap_or_default());
        let shown = String::from_utf8_lossy(raw);
        if sent.is_empty() {
            assert!(usage_only(&e.data), "event {shown:?} was dropped");
        } else {
            assert_eq!(sent, raw, "event {shown:?} was changed");
            assert!(!plainly_usage_only(&e.data), "event {shown:?} was kept");
            want.extend_from_slice(raw);
        }
    }
    assert!(
        out == want,
        "sent on {:?} instead of {:?}",
        String::from_utf8_lossy(out),
        String::from_utf8_lossy(&want)
    );
}

/// The data is an object with `choices: []` and a `usage` object, read with serde_json
/// field by field: other members are skipped unread (a number beyond `f64` or bytes that
/// are not UTF-8 in them do not matter, as they do not to the meter).
fn usage_only(data: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct UsageOnly {
        choices: Option<Vec<IgnoredAny>>,
        usage: Option<BTreeMap<String, IgnoredAny>>,
    }
    serde_json::from_slice::<UsageOnly>(data)
        .is_ok_and(|u| u.choices.is_some_and(|c| c.is_empty()) && u.usage.is_some())
}

/// Usage-only beyond doubt: compact JSON as serde_json writes it (so no repeated keys, no
/// escapes), starting with `{`, `choices: []`, `model` a string or null, and `usage` with
/// only unsigned integers (or null) where the filter reads token counts, each count under
/// one of its two names.
fn plainly_usage_only(data: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return false;
    };
    let counts = |o: Option<&Value>, keys: &[&str]| match o {
        None | Some(Value::Null) => true,
        Some(Value::Object(o)) => keys
            .iter()
            .all(|k| o.get(*k).is_none_or(|x| x.is_u64() || x.is_null())),
        Some(_) => false,
    };
    let Some(o) = v.as_object() else {
        return false;
    };
    let Some(Value::Object(usage)) = o.get("usage") else {
        return false;
    };
    // The meter reads the Responses API's names as aliases of the chat ones: a usage with
    // both spellings of one count has a duplicate field to it, an event it cannot read and
    // keeps (nothing is lost), so that is not plainly usage-only.
    let spellings = [
        ("prompt_tokens", "input_tokens"),
        ("completion_tokens", "output_tokens"),
        ("prompt_tokens_details", "input_tokens_details"),
        ("completion_tokens_details", "output_tokens_details"),
    ];
    let one = |(chat, responses): (&str, &str)| usage.get(chat).or(usage.get(responses));
    serde_json::to_vec(&v).is_ok_and(|c| c == data)
        && !spellings
            .iter()
            .any(|(a, b)| usage.contains_key(*a) && usage.contains_key(*b))
        && o.get("choices") == Some(&Value::Array(Vec::new()))
        && o.get("model").is_none_or(|m| m.is_string() || m.is_null())
        && counts(
            o.get("usage"),
            &[
                "prompt_tokens",
                "completion_tokens",
                "total_tokens",
                "input_tokens",
                "output_tokens",
            ],
        )
        && counts(one(spellings[2]), &["cached_tokens"])
        && counts(one(spellings[3]), &["reasoning_tokens"])
}

/// The oracles themselves can fail: each is shown a wrong output.
#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &[u8] = b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n\
        data: {\"choices\":[],\"usage\":{\"total_tokens\":3}}\n\ndata: [DONE]\n\n";

    #[test]
    fn right_output_passes() {
        let mut m = Meter::sse(true, false);
        let mut out = m.push(STREAM).unwrap();
        out.extend(m.finish().unwrap());
        check_dropped(STREAM, &out);
        assert_eq!(m.usage().total_tokens, 3);
    }

    #[test]
    #[should_panic(expected = "sent on")]
    fn usage_event_kept() {
        check_dropped(STREAM, STREAM);
    }

    #[test]
    fn usage_only_reads_past_what_value_cannot_hold() {
        assert!(usage_only(
            b"{\"created\":1e999,\"choices\":[],\"usage\":{\"x\":\"\xff\"}}"
        ));
        assert!(!usage_only(b"{\"choices\":[1],\"usage\":{}}"));
        assert!(!usage_only(b"{\"choices\":[],\"usage\":null}"));
    }

    #[test]
    #[should_panic(expected = "sent on")]
    fn other_event_dropped() {
        check_dropped(STREAM, b"data: [DONE]\n\n");
    }
}
