//! Test-only (tests, and the feature `reference-derive` for the `usage` fuzz target): serde's
//! derive code for the answers' types, as the filter read answers until round 11, and the
//! oracle the hand-written readers (`answer`) are held to. Anthropic's types keep their
//! derive code where they are, in these builds only (`protocol::anthropic`,
//! `protocol::tally`).

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::{Answer, Inner, RawUsage};
use crate::protocol::anthropic::{Event, Message};
use crate::protocol::tally::AnthropicUsage;

#[derive(Deserialize)]
struct DerivedUsage {
    #[serde(alias = "input_tokens")]
    prompt_tokens: Option<u64>,
    #[serde(alias = "output_tokens")]
    completion_tokens: Option<u64>,
    total_tokens: Option<u64>,
    #[serde(alias = "input_tokens_details")]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(alias = "output_tokens_details")]
    completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Deserialize)]
struct PromptDetails {
    cached_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct CompletionDetails {
    reasoning_tokens: Option<u64>,
}

impl From<DerivedUsage> for RawUsage {
    fn from(u: DerivedUsage) -> RawUsage {
        RawUsage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total_tokens,
            cached_tokens: u.prompt_tokens_details.and_then(|d| d.cached_tokens),
            reasoning_tokens: u.completion_tokens_details.and_then(|d| d.reasoning_tokens),
        }
    }
}

#[derive(Deserialize)]
struct DerivedInner {
    model: Option<String>,
    usage: Option<DerivedUsage>,
}

#[derive(Deserialize)]
struct Counted<'a> {
    model: Option<String>,
    usage: Option<DerivedUsage>,
    #[serde(borrow)]
    choices: Option<Vec<Measured<'a>>>,
    response: Option<DerivedInner>,
    #[serde(borrow)]
    delta: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Measured<'a> {
    #[serde(borrow)]
    message: Option<Content<'a>>,
    #[serde(borrow)]
    delta: Option<Content<'a>>,
    #[serde(borrow)]
    text: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Content<'a> {
    #[serde(borrow)]
    content: Option<&'a RawValue>,
}

/// `answer::read` as serde_json and the derive code read it.
pub fn read(data: &[u8]) -> Option<Answer<'_>> {
    let c = serde_json::from_slice::<Counted>(data).ok()?;
    Some(Answer {
        model: c.model,
        usage: c.usage.map(RawUsage::from),
        choices: c.choices.map(|choices| {
            choices
                .into_iter()
                .map(|m| {
                    m.message
                        .or(m.delta)
                        .and_then(|t| t.content)
                        .or(m.text)
                        .map(RawValue::get)
                })
                .collect()
        }),
        response: c.response.map(|r| Inner {
            model: r.model,
            usage: r.usage.map(RawUsage::from),
        }),
        delta: c.delta.map(RawValue::get),
    })
}

/// `answer::text_of` as the derive code read it.
pub fn text_of(raw: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Part {
        text: Option<String>,
    }
    if raw.starts_with('[') {
        let parts: Vec<Part> = serde_json::from_slice(raw.as_bytes()).ok()?;
        Some(parts.into_iter().filter_map(|p| p.text).collect())
    } else {
        serde_json::from_slice::<String>(raw.as_bytes()).ok()
    }
}

/// `answer::usage_of_value` as the derive code read it.
pub fn usage_of_value(v: &Value) -> Option<RawUsage> {
    DerivedUsage::deserialize(v).ok().map(RawUsage::from)
}

/// `answer::anthropic::message` as the derive code read it.
pub fn anthropic_message(data: &[u8]) -> Option<Message> {
    serde_json::from_slice(data).ok()
}

/// `answer::anthropic::event` as the derive code read it.
pub fn anthropic_event(data: &[u8]) -> Option<Event> {
    serde_json::from_slice(data).ok()
}

/// `answer::anthropic_usage_of_value` as the derive code read it (from an owned `Value`).
pub fn anthropic_usage_of_value(v: &Value) -> Option<AnthropicUsage> {
    serde_json::from_value(v.clone()).ok()
}

/// `answer::error_message` as the derive code read it.
pub fn error_message(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Outer {
        error: ErrorInner,
    }
    #[derive(Deserialize)]
    struct ErrorInner {
        message: String,
    }
    serde_json::from_slice::<Outer>(body)
        .ok()
        .map(|o| o.error.message)
}

/// The same bytes read by the filter's readers and by the derive code, each as what it read
/// (`Debug`): an OpenAI answer, the texts of its raw values, its `usage` read as a `Value`,
/// an Anthropic answer and event, an error body's message, and the `usage` as Anthropic's.
/// The `usage` fuzz target holds the two equal.
pub fn read_twice(data: &[u8]) -> [String; 2] {
    let value = serde_json::from_slice::<Value>(data).ok();
    let usage = value.as_ref().and_then(|v| v.get("usage"));
    let texts = |a: &Option<Answer<'_>>, of: fn(&str) -> Option<String>| -> Vec<Option<String>> {
        let Some(a) = a else { return Vec::new() };
        a.choices
            .iter()
            .flatten()
            .chain(std::iter::once(&a.delta))
            .flatten()
            .map(|raw| of(raw))
            .collect()
    };
    let mine = super::read(data);
    let theirs = read(data);
    [
        format!(
            "{mine:?} {:?} {:?} {:?} {:?} {:?} {:?}",
            texts(&mine, super::text_of),
            usage.map(super::usage_of_value),
            super::anthropic::message(data),
            super::anthropic::event(data),
            super::error_message(data),
            usage.map(super::anthropic_usage_of_value),
        ),
        format!(
            "{theirs:?} {:?} {:?} {:?} {:?} {:?} {:?}",
            texts(&theirs, text_of),
            usage.map(usage_of_value),
            anthropic_message(data),
            anthropic_event(data),
            error_message(data),
            usage.map(anthropic_usage_of_value),
        ),
    ]
}
