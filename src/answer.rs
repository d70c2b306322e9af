//! The answers' fields the filter reads, read by hand over the scan's cursor
//! (`scan::Cursor`) by one small reader (`answer/reader.rs`) instead of serde's derive code
//! for each type: here an OpenAI answer or stream event (the model, the usage, each choice's
//! text, a Responses event's `response`) and an error body's `error.message`; Anthropic's
//! answers and events in `answer/anthropic.rs`; a `usage` already read as a `Value` in
//! `answer/value.rs`. Each accepts and refuses exactly what serde_json's reading of the
//! same types did: field names with their aliases and escapes, a struct written as an array
//! of its fields in order, a repeated field, what a `u64` takes, which strings are checked
//! for UTF-8. The derive code is kept as the tests' oracle (`answer/reference.rs`), and the
//! `usage` fuzz target holds the two equal.

use reader::{Fields, Reader};

/// Usage as OpenAI reports it: chat and completions (`prompt_tokens`, ...), and the
/// Responses API (`input_tokens`, ..., the aliases). Each count as the answer gave it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawUsage {
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub total_tokens: Option<u64>,
    /// `prompt_tokens_details.cached_tokens` (`None` without the details too).
    pub cached_tokens: Option<u64>,
    /// `completion_tokens_details.reasoning_tokens` (`None` without the details too).
    pub reasoning_tokens: Option<u64>,
}

/// The `response` object of a Responses stream event (`response.completed` carries the
/// usage).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inner {
    pub model: Option<String>,
    pub usage: Option<RawUsage>,
}

/// What is read of one body or event; texts stay raw JSON, borrowed from it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer<'a> {
    pub model: Option<String>,
    pub usage: Option<RawUsage>,
    /// Each choice's text: its `message`'s `content` (or, without a message, its `delta`'s),
    /// or else its `text`.
    pub choices: Option<Vec<Option<&'a str>>>,
    pub response: Option<Inner>,
    /// A Responses text delta.
    pub delta: Option<&'a str>,
}

const ANSWER: Fields = &[
    &["model"],
    &["usage"],
    &["choices"],
    &["response"],
    &["delta"],
];
const CHOICE: Fields = &[&["message"], &["delta"], &["text"]];
const CONTENT: Fields = &[&["content"]];
const INNER: Fields = &[&["model"], &["usage"]];
pub(crate) const USAGE: Fields = &[
    &["prompt_tokens", "input_tokens"],
    &["completion_tokens", "output_tokens"],
    &["total_tokens"],
    &["prompt_tokens_details", "input_tokens_details"],
    &["completion_tokens_details", "output_tokens_details"],
];
pub(crate) const CACHED: Fields = &[&["cached_tokens"]];
pub(crate) const REASONING: Fields = &[&["reasoning_tokens"]];
const PART: Fields = &[&["text"]];
const ERROR: Fields = &[&["error"]];
const ERROR_MESSAGE: Fields = &[&["message"]];

/// A whole body or event (whitespace around it only); `None` where serde_json's reading
/// failed.
pub fn read(data: &[u8]) -> Option<Answer<'_>> {
    let mut r = Reader::new(data);
    let answer = r.answer()?;
    r.end().then_some(answer)
}

/// The text of a content value (raw JSON): a string, or the `text` of each part of an array
/// of parts.
pub fn text_of(raw: &str) -> Option<String> {
    let mut r = Reader::new(raw.as_bytes());
    let text = if raw.starts_with('[') {
        r.parts()?
    } else {
        r.string()?
    };
    r.end().then_some(text)
}

/// `error.message` of an OpenAI or Anthropic error body (both required: a body without
/// them, or with a `message` that is not a string, has none).
pub fn error_message(body: &[u8]) -> Option<String> {
    let mut r = Reader::new(body);
    let mut message = None;
    r.record(ERROR, &mut |r, _| {
        let mut inner = None;
        r.record(ERROR_MESSAGE, &mut |r, _| {
            inner = Some(r.string()?);
            Some(())
        })?;
        message = Some(inner?);
        Some(())
    })?;
    r.end().then_some(())?;
    message
}

impl<'a> Reader<'a> {
    /// The answer (or event) itself.
    fn answer(&mut self) -> Option<Answer<'a>> {
        let mut a = Answer::default();
        self.record(ANSWER, &mut |r, i| {
            match i {
                0 => a.model = r.opt_string()?,
                1 => a.usage = r.usage()?,
                2 => a.choices = r.choices()?,
                3 => a.response = r.inner()?,
                _ => a.delta = r.raw()?,
            }
            Some(())
        })?;
        Some(a)
    }

    fn inner(&mut self) -> Option<Option<Inner>> {
        if self.null()? {
            return Some(None);
        }
        let mut inner = Inner::default();
        self.record(INNER, &mut |r, i| {
            match i {
                0 => inner.model = r.opt_string()?,
                _ => inner.usage = r.usage()?,
            }
            Some(())
        })?;
        Some(Some(inner))
    }

    fn usage(&mut self) -> Option<Option<RawUsage>> {
        if self.null()? {
            return Some(None);
        }
        let mut u = RawUsage::default();
        self.record(USAGE, &mut |r, i| {
            match i {
                0 => u.prompt_tokens = r.count()?,
                1 => u.completion_tokens = r.count()?,
                2 => u.total_tokens = r.count()?,
                3 => u.cached_tokens = r.details(CACHED)?,
                _ => u.reasoning_tokens = r.details(REASONING)?,
            }
            Some(())
        })?;
        Some(Some(u))
    }

    /// A details struct of one count.
    fn details(&mut self, fields: Fields) -> Option<Option<u64>> {
        if self.null()? {
            return Some(None);
        }
        let mut n = None;
        self.record(fields, &mut |r, _| {
            n = r.count()?;
            Some(())
        })?;
        Some(n)
    }

    /// `choices`: an array of choices, each read for its text.
    fn choices(&mut self) -> Option<Option<Vec<Option<&'a str>>>> {
        if self.null()? {
            return Some(None);
        }
        self.take(b'[')?;
        let mut texts = Vec::new();
        let mut first = true;
        while self.more(first)? {
            first = false;
            texts.push(self.choice()?);
        }
        Some(Some(texts))
    }

    fn choice(&mut self) -> Option<Option<&'a str>> {
        // Each of `message` and `delta`: absent, or present with its content (or none).
        let mut contents: [Option<Option<&'a str>>; 2] = [None, None];
        let mut text = None;
        self.record(CHOICE, &mut |r, i| {
            match i {
                0 | 1 => {
                    let content = r.content()?;
                    if let Some(slot) = contents.get_mut(i) {
                        *slot = content;
                    }
                }
                _ => text = r.raw()?,
            }
            Some(())
        })?;
        let [message, delta] = contents;
        Some(message.or(delta).flatten().or(text))
    }

    /// A `message` or `delta`: `Some(content)` when present.
    fn content(&mut self) -> Option<Option<Option<&'a str>>> {
        if self.null()? {
            return Some(None);
        }
        let mut content = None;
        self.record(CONTENT, &mut |r, _| {
            content = r.raw()?;
            Some(())
        })?;
        Some(Some(content))
    }

    /// An array of parts: their texts joined.
    fn parts(&mut self) -> Option<String> {
        self.take(b'[')?;
        let mut joined = String::new();
        let mut first = true;
        while self.more(first)? {
            first = false;
            let mut text = None;
            self.record(PART, &mut |r, _| {
                text = r.opt_string()?;
                Some(())
            })?;
            joined.push_str(text.as_deref().unwrap_or(""));
        }
        Some(joined)
    }
}

pub mod anthropic;
mod reader;
mod value;
pub use value::{anthropic_usage_of_value, usage_of_value};

#[cfg(any(test, feature = "reference-derive"))]
pub mod reference;

#[cfg(test)]
mod tests;
