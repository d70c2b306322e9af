//! OpenAI's and Anthropic's `usage` already read as a `serde_json::Value` (the translators
//! read events that way), taken as serde's derive code took it from a `Value`: the same
//! rules as the bytes' reader in `answer`, over a tree.

use serde_json::Value;

use super::reader::{find, Fields};
use super::{RawUsage, CACHED, REASONING, USAGE};
use crate::protocol::tally::AnthropicUsage;

/// OpenAI's `usage` object, already read as a `Value` (the translators'), as the derive code
/// read it: an object, or an array of the five counts in order.
pub fn usage_of_value(v: &Value) -> Option<RawUsage> {
    let mut f = ValueFields::of(v, USAGE)?;
    let prompt = count_of(f.next()?)?;
    let completion = count_of(f.next()?)?;
    let total = count_of(f.next()?)?;
    let cached = details_of(f.next()?, CACHED)?;
    let reasoning = details_of(f.next()?, REASONING)?;
    f.done().then_some(RawUsage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: total,
        cached_tokens: cached,
        reasoning_tokens: reasoning,
    })
}

/// Anthropic's `usage`, already read as a `Value` (the translator's), as the derive code
/// read it.
pub fn anthropic_usage_of_value(v: &Value) -> Option<AnthropicUsage> {
    let mut f = ValueFields::of(v, super::anthropic::USAGE)?;
    let u = AnthropicUsage {
        input_tokens: count_of(f.next()?)?,
        output_tokens: count_of(f.next()?)?,
        cache_creation_input_tokens: count_of(f.next()?)?,
        cache_read_input_tokens: count_of(f.next()?)?,
    };
    f.done().then_some(u)
}

/// A struct's fields in a `Value`: by name from an object (a field given twice, by two of
/// its names, fails; absent is null), or in order from an array of exactly as many.
struct ValueFields<'v> {
    values: Vec<Option<&'v Value>>,
    next: usize,
}

impl<'v> ValueFields<'v> {
    fn of(v: &'v Value, fields: Fields) -> Option<ValueFields<'v>> {
        let values = match v {
            Value::Object(map) => {
                let mut values = vec![None; fields.len()];
                for (key, value) in map {
                    if let Some(slot) = find(fields, key).and_then(|i| values.get_mut(i)) {
                        slot.is_none().then_some(())?;
                        *slot = Some(value);
                    }
                }
                values
            }
            Value::Array(items) if items.len() == fields.len() => items.iter().map(Some).collect(),
            _ => return None,
        };
        Some(ValueFields { values, next: 0 })
    }

    /// The next field's value (`None` inside: absent).
    fn next(&mut self) -> Option<Option<&'v Value>> {
        let v = *self.values.get(self.next)?;
        self.next = self.next.saturating_add(1);
        Some(v)
    }

    fn done(&self) -> bool {
        self.next == self.values.len()
    }
}

/// An `Option<u64>` field: absent or null is none; anything but a `u64` fails.
fn count_of(v: Option<&Value>) -> Option<Option<u64>> {
    match v {
        None | Some(Value::Null) => Some(None),
        Some(Value::Number(n)) => n.as_u64().map(Some),
        Some(_) => None,
    }
}

/// The one count of a details struct (`Option<...Details>`).
fn details_of(v: Option<&Value>, fields: Fields) -> Option<Option<u64>> {
    match v {
        None | Some(Value::Null) => Some(None),
        Some(v) => {
            let mut f = ValueFields::of(v, fields)?;
            let n = count_of(f.next()?)?;
            f.done().then_some(n)
        }
    }
}
