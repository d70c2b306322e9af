//! The fields of an OpenAI answer or stream event that the meter counts (the model, the
//! usage, each choice's text, a Responses event's `response`), read by hand over the scan's
//! cursor (`scan::Cursor`): one small reader instead of serde's derive code for seven types.
//! It accepts and refuses exactly what serde_json's reading of those types did: field names
//! with their aliases and escapes, a struct written as an array of its fields in order, a
//! repeated field, what a `u64` takes, which strings are checked for UTF-8. The derive code
//! is kept as the tests' oracle (`answer/reference.rs`), and the `usage` fuzz target holds
//! the two equal.

use std::borrow::Cow;

use crate::scan::Cursor;

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

/// The names of a struct's fields in order, each with its aliases.
pub(crate) type Fields = &'static [&'static [&'static str]];

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

/// The reader: the scan's cursor, and its stack of open containers for skipped values.
struct Reader<'a> {
    c: Cursor<'a>,
    open: Vec<u8>,
}

/// Reads field `i` of a struct.
type Field<'r, 'a> = &'r mut dyn FnMut(&mut Reader<'a>, usize) -> Option<()>;

impl<'a> Reader<'a> {
    fn new(b: &'a [u8]) -> Reader<'a> {
        Reader {
            c: Cursor::new(b),
            open: Vec::new(),
        }
    }

    /// Nothing but whitespace is left.
    fn end(&mut self) -> bool {
        self.look().is_none()
    }

    /// The next byte after whitespace (not taken). Out of line: inlined, each of the many
    /// calls is a jump table over the bytes (compile memory).
    #[inline(never)]
    fn look(&mut self) -> Option<u8> {
        self.c.ws();
        self.c.peek()
    }

    /// The next value is `null` (taken), as `Option` reads it.
    fn null(&mut self) -> Option<bool> {
        if self.look() == Some(b'n') {
            self.c.word(b"null")?;
            return Some(true);
        }
        Some(false)
    }

    /// `,` between the elements of an array, `]` after the last: whether another follows.
    fn more(&mut self, first: bool) -> Option<bool> {
        match self.look()? {
            b']' => {
                self.c.bump();
                Some(false)
            }
            b',' if !first => {
                self.c.bump();
                (self.look()? != b']').then_some(true)
            }
            _ => first.then_some(true),
        }
    }

    /// A struct: an object (fields by name, unknown ones skipped, none twice) or an array of
    /// exactly its fields in order. `field` reads the value of field `i`.
    fn record(&mut self, fields: Fields, field: Field<'_, 'a>) -> Option<()> {
        match self.look()? {
            b'[' => {
                self.c.bump();
                for i in 0..fields.len() {
                    self.more(i == 0)?.then_some(())?;
                    field(self, i)?;
                }
                (!self.more(false)?).then_some(())
            }
            b'{' => {
                self.c.bump();
                let mut seen = 0u32;
                if self.look()? == b'}' {
                    self.c.bump();
                    return Some(());
                }
                loop {
                    (self.look()? == b'"').then_some(())?;
                    let key = self.text()?;
                    (self.look()? == b':').then_some(())?;
                    self.c.bump();
                    match find(fields, &key) {
                        Some(i) => {
                            let bit = 1u32.checked_shl(u32::try_from(i).ok()?)?;
                            (seen & bit == 0).then_some(())?;
                            seen |= bit;
                            field(self, i)?;
                        }
                        None => {
                            self.c.value(&mut self.open)?;
                        }
                    }
                    match self.look()? {
                        b'}' => {
                            self.c.bump();
                            return Some(());
                        }
                        b',' => self.c.bump(),
                        _ => return None,
                    }
                }
            }
            _ => None,
        }
    }

    /// A string (from its opening quote), its escapes decoded; checked for UTF-8 and for
    /// surrogates that do not pair, as serde_json checks a string it reads (not one it skips).
    #[inline(never)] // compile memory: out of `record`
    fn text(&mut self) -> Option<Cow<'a, str>> {
        let start = self.c.i.checked_add(1)?;
        let escaped = self.c.string()?;
        let raw = self.c.b.get(start..self.c.i.checked_sub(1)?)?;
        if escaped {
            String::from_utf8(unescape(raw)?).ok().map(Cow::Owned)
        } else {
            std::str::from_utf8(raw).ok().map(Cow::Borrowed)
        }
    }

    /// A `String` value.
    fn string(&mut self) -> Option<String> {
        (self.look()? == b'"').then_some(())?;
        self.text().map(Cow::into_owned)
    }

    fn opt_string(&mut self) -> Option<Option<String>> {
        if self.null()? {
            return Some(None);
        }
        self.string().map(Some)
    }

    /// An `Option<u64>`: digits without a leading zero, within `u64`, not a float's.
    fn count(&mut self) -> Option<Option<u64>> {
        if self.null()? {
            return Some(None);
        }
        let mut n = 0u64;
        match self.c.peek()? {
            b'0' => self.c.bump(),
            b'1'..=b'9' => {
                while let Some(d @ b'0'..=b'9') = self.c.peek() {
                    n = n
                        .checked_mul(10)?
                        .checked_add(u64::from(d.wrapping_sub(b'0')))?;
                    self.c.bump();
                }
            }
            _ => return None,
        }
        match self.c.peek() {
            Some(b'0'..=b'9' | b'.' | b'e' | b'E') => None,
            _ => Some(Some(n)),
        }
    }

    /// An `Option<&RawValue>`: any JSON value but null, as written; checked for UTF-8.
    fn raw(&mut self) -> Option<Option<&'a str>> {
        if self.null()? {
            return Some(None);
        }
        let start = self.c.i;
        self.c.ascii = true;
        self.c.value(&mut self.open)?;
        let raw = self.c.b.get(start..self.c.i)?;
        if self.c.ascii {
            // SAFETY: as in `scan::object`: the scan took every byte outside strings as one
            // of JSON's ASCII characters, and saw that every byte inside them was ASCII too.
            return Some(Some(unsafe { std::str::from_utf8_unchecked(raw) }));
        }
        std::str::from_utf8(raw).ok().map(Some)
    }

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
        self.c.eat(b'[')?;
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
        (self.look()? == b'[').then_some(())?;
        self.c.bump();
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

/// The field `key` names, by any of its names.
#[inline(never)] // compile memory: out of `record`
pub(crate) fn find(fields: Fields, key: &str) -> Option<usize> {
    fields.iter().position(|names| names.contains(&key))
}

/// The content of a string with escapes (quotes off, its syntax already checked by the
/// scan), decoded; `None` for a surrogate that does not pair.
fn unescape(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        i = i.saturating_add(1);
        if b != b'\\' {
            out.push(b);
            continue;
        }
        let e = *raw.get(i)?;
        i = i.saturating_add(1);
        let byte = match e {
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let n = hex4(raw, &mut i)?;
                let code = match n {
                    0xD800..=0xDBFF => {
                        // A leading surrogate: a trailing one must follow, as `\uXXXX`.
                        (raw.get(i..i.checked_add(2)?)? == b"\\u").then_some(())?;
                        i = i.saturating_add(2);
                        let low = hex4(raw, &mut i)?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return None;
                        }
                        let high = u32::from(n.wrapping_sub(0xD800)) << 10;
                        (high | u32::from(low.wrapping_sub(0xDC00))).checked_add(0x1_0000)?
                    }
                    0xDC00..=0xDFFF => return None,
                    _ => u32::from(n),
                };
                let mut buf = [0u8; 4];
                out.extend_from_slice(char::from_u32(code)?.encode_utf8(&mut buf).as_bytes());
                continue;
            }
            other => other, // `"`, `\`, `/`
        };
        out.push(byte);
    }
    Some(out)
}

/// Four hex digits at `*i`, moved past.
fn hex4(raw: &[u8], i: &mut usize) -> Option<u16> {
    let end = i.checked_add(4)?;
    let digits = raw.get(*i..end)?;
    *i = end;
    digits.iter().try_fold(0u16, |n, &d| {
        let v = char::from(d).to_digit(16)?;
        n.checked_mul(16)?.checked_add(u16::try_from(v).ok()?)
    })
}

mod value;
pub use value::usage_of_value;

#[cfg(any(test, feature = "reference-derive"))]
pub mod reference;

#[cfg(test)]
mod tests;
