//! The fast path of reading the client's body: a structural scan that validates a JSON
//! object exactly as serde_json does and locates its top-level members, skipping the
//! contents of strings many bytes at a time (`scan/simd.rs` in the wasm build: sixteen bytes
//! a test, the first that ends the run found from the test's bit mask, long ASCII runs 256
//! bytes a test, and in text dense in escapes (code) the short escapes passed over a block
//! at a time; `scan/words.rs` elsewhere). The same pass notes whether the body is all
//! ASCII, so only a body that is not is checked for UTF-8 afterwards. Bodies are mostly long
//! strings (messages), so this is where a large body's time goes. The unit tests run in the
//! wasm build too, and the wasm path is tested through Envoy
//! (`a_special_byte_anywhere_in_a_long_string_is_read_exactly`).
//!
//! It only answers when it is sure: a body it does not accept (invalid, not UTF-8, or a key
//! with an escape it would have to decode) goes to serde_json (`body::JsonBody::parse`),
//! which then accepts or refuses it with the same error as it always did, and takes the
//! keys it has decoded; the values' spans in a body serde_json accepts come from this scan
//! again (`value_spans`), which takes escaped keys there.
//!
//! Its cursor also carries the answers' reader (`answer::reader`), which skips values as
//! this scan does.
//!
//! The benchmark's `contract+scan` floor (`bench/floor-filter`) compiles this file as it is,
//! so it must keep building on its own: no `crate::` paths outside the tests
//! (`scripts/test.sh` builds the floor filter to hold it to that).

/// A top-level member: its key (as written: it has no escapes) and its value's byte span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member<'a> {
    pub key: &'a str,
    pub start: usize,
    pub end: usize,
}

/// Sixteen bytes: one `simd128` vector, two words.
const BLOCK: usize = 16;

/// Whether a byte ends plain string content.
fn special(b: u8) -> bool {
    b == b'"' || b == b'\\' || b < 0x20
}

/// The length of the escape whose backslash is at `i` (2, or 6 for `\uXXXX`), when it is
/// one of JSON's, whole in `b`. serde_json takes any four hex digits after `\u` (a lone
/// surrogate too) when it only validates.
#[inline(always)]
fn escape_len(b: &[u8], i: usize) -> Option<u8> {
    match *b.get(i.checked_add(1)?)? {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(2),
        b'u' => {
            let hex = b.get(i.checked_add(2)?..i.checked_add(6)?)?;
            hex.iter().all(u8::is_ascii_hexdigit).then_some(6)
        }
        _ => None,
    }
}

/// The `&[u8; N]` at `i` in `b`, when `b` holds one there.
fn array<const N: usize>(b: &[u8], i: usize) -> Option<&[u8; N]> {
    b.get(i..i.checked_add(N)?)?.try_into().ok()
}

// `lanes::skip(b, i)`: from `i`, the index of the first byte that ends plain string content
// (or `b.len()`), and whether the bytes before it are ASCII. `lanes::escapes(b, i)`: from a
// backslash at `i`, where the escapes and plain bytes it could pass over end (`i` when it
// passed over none), and whether those bytes are ASCII.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[path = "scan/simd.rs"]
mod lanes;
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[path = "scan/words.rs"]
mod lanes;

/// A cursor over the body's bytes (also the reader of answers, `answer`).
pub(crate) struct Cursor<'a> {
    pub(crate) b: &'a [u8],
    pub(crate) i: usize,
    /// Whether every byte of string content so far was ASCII.
    pub(crate) ascii: bool,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Cursor<'a> {
        Cursor {
            b,
            i: 0,
            ascii: true,
        }
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    pub(crate) fn bump(&mut self) {
        self.i = self.i.saturating_add(1);
    }

    /// Takes `c` or fails.
    pub(crate) fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.bump())
    }

    /// Takes `word` (a literal's rest) or fails.
    pub(crate) fn word(&mut self, word: &[u8]) -> Option<()> {
        let end = self.i.checked_add(word.len())?;
        (self.b.get(self.i..end)? == word).then(|| self.i = end)
    }

    /// JSON whitespace (space, tab, line feed, carriage return), as serde_json skips it.
    pub(crate) fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\t' | b'\r')) {
            self.bump();
        }
    }

    /// Moves to the next byte that ends plain string content (or to the end), noting
    /// whether the bytes it passes are ASCII.
    fn skip_plain(&mut self) {
        let (i, ascii) = lanes::skip(self.b, self.i);
        self.i = i;
        self.ascii &= ascii;
    }

    /// From a backslash that is not `\u`: its escape, and (in the wasm build) the escapes
    /// and plain bytes after it a block at a time: where one is, more are likely (code). Out
    /// of `string`, so the loop over long runs there is compiled as it was.
    #[inline(never)]
    fn escapes(&mut self) -> Option<()> {
        let (i, ascii) = lanes::escapes(self.b, self.i);
        if i == self.i {
            let len = escape_len(self.b, self.i)?;
            self.i = self.i.saturating_add(usize::from(len));
        } else {
            self.i = i;
            self.ascii &= ascii;
        }
        Some(())
    }

    /// A string, from its opening quote; returns whether it had an escape.
    pub(crate) fn string(&mut self) -> Option<bool> {
        self.eat(b'"')?;
        let mut escaped = false;
        loop {
            self.skip_plain();
            match self.peek()? {
                b'"' => {
                    self.bump();
                    return Some(escaped);
                }
                b'\\' => {
                    escaped = true;
                    if self.b.get(self.i.saturating_add(1)) == Some(&b'u') {
                        // `\uXXXX`: text that is not ASCII, as some encoders spell it (one
                        // every six bytes, which the blocks would not pass over; the next
                        // one is read without a skip).
                        loop {
                            let len = escape_len(self.b, self.i)?;
                            self.i = self.i.saturating_add(usize::from(len));
                            if self.peek() != Some(b'\\')
                                || self.b.get(self.i.saturating_add(1)) != Some(&b'u')
                            {
                                break;
                            }
                        }
                    } else {
                        self.escapes()?;
                    }
                }
                // A control character.
                _ => return None,
            }
        }
    }

    fn digits(&mut self) -> usize {
        let from = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
        }
        self.i.saturating_sub(from)
    }

    /// A number: `-`? (`0` | [1-9][0-9]*) (`.` [0-9]+)? ([eE] [+-]? [0-9]+)?
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.bump();
        }
        match self.peek()? {
            b'0' => {
                self.bump();
                if self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    return None;
                }
            }
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.bump();
            (self.digits() > 0).then_some(())?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.bump();
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.bump();
            }
            (self.digits() > 0).then_some(())?;
        }
        Some(())
    }

    /// A key and its colon, inside an object.
    #[inline]
    fn key_colon(&mut self) -> Option<()> {
        self.string()?;
        self.ws();
        self.eat(b':')
    }

    /// Any value, at any depth (as serde_json skips a raw value: no depth limit). `open` is
    /// the stack of the containers the scan is inside of.
    #[inline(never)] // compiled on its own: see "Round 5" in docs/performance.md
    pub(crate) fn value(&mut self, open: &mut Vec<u8>) -> Option<()> {
        open.clear();
        loop {
            // A value starts here.
            self.ws();
            match self.peek()? {
                b'n' => self.word(b"null")?,
                b't' => self.word(b"true")?,
                b'f' => self.word(b"false")?,
                b'-' | b'0'..=b'9' => self.number()?,
                b'"' => {
                    self.string()?;
                }
                c @ (b'[' | b'{') => {
                    self.bump();
                    self.ws();
                    let close = if c == b'[' { b']' } else { b'}' };
                    if self.peek()? == close {
                        // Empty: a complete value.
                        self.bump();
                    } else {
                        open.push(c);
                        if c == b'{' {
                            self.key_colon()?;
                        }
                        continue;
                    }
                }
                _ => return None,
            }
            // A value ended: close what ends here, or go on after a comma.
            loop {
                let Some(&frame) = open.last() else {
                    return Some(());
                };
                self.ws();
                match (self.peek()?, frame) {
                    (b',', _) => {
                        self.bump();
                        if frame == b'{' {
                            self.ws();
                            self.key_colon()?;
                        }
                        break;
                    }
                    (b']', b'[') | (b'}', b'{') => {
                        self.bump();
                        open.pop();
                    }
                    _ => return None,
                }
            }
        }
    }
}

/// The body as text and its top-level members, when it is one JSON object (and nothing but
/// whitespace after it) in UTF-8; `None` when the scan is not sure (then serde_json decides).
pub fn object(bytes: &[u8]) -> Option<(&str, Vec<Member<'_>>)> {
    let mut c = Cursor::new(bytes);
    // Spans first (key, value): keys become text once the whole body is known to be UTF-8.
    let spans = walk(&mut c, false)?;
    let text = if c.ascii {
        // SAFETY: the scan took every byte outside strings as one of JSON's ASCII
        // characters, and saw that every byte inside them was ASCII too; ASCII is UTF-8.
        unsafe { std::str::from_utf8_unchecked(bytes) }
    } else {
        std::str::from_utf8(bytes).ok()?
    };
    let members = spans
        .into_iter()
        .map(|(ks, ke, start, end)| {
            Some(Member {
                key: text.get(ks..ke)?,
                start,
                end,
            })
        })
        .collect::<Option<_>>()?;
    Some((text, members))
}

/// The byte spans of the top-level values of a body serde_json has read as one object
/// (`body`'s fallback, which takes the keys from serde_json, escaped ones decoded), in order;
/// `None` if the scan would refuse it.
#[inline(never)] // compiled on its own: the fallback, not the hot path
pub fn value_spans(text: &str) -> Option<Vec<(usize, usize)>> {
    let spans = walk(&mut Cursor::new(text.as_bytes()), true)?;
    Some(spans.into_iter().map(|(_, _, s, e)| (s, e)).collect())
}

/// One JSON object and nothing but whitespace after it: each member's key span (inside its
/// quotes) and value span. `escaped_keys`: whether a key with an escape is taken (only its
/// span is known then, not its text).
#[inline(always)] // `object`'s is the hot path, compiled as it was before `value_spans`
fn walk(c: &mut Cursor<'_>, escaped_keys: bool) -> Option<Vec<(usize, usize, usize, usize)>> {
    let mut spans: Vec<(usize, usize, usize, usize)> = Vec::new();
    let mut open = Vec::new();
    c.ws();
    c.eat(b'{')?;
    c.ws();
    if c.peek()? != b'}' {
        loop {
            let key_start = c.i.saturating_add(1);
            if c.string()? && !escaped_keys {
                // An escaped key must be decoded: serde_json's job.
                return None;
            }
            let key_end = c.i.saturating_sub(1);
            c.ws();
            c.eat(b':')?;
            c.ws();
            let start = c.i;
            c.value(&mut open)?;
            spans.push((key_start, key_end, start, c.i));
            c.ws();
            match c.peek()? {
                b',' => {
                    c.bump();
                    c.ws();
                }
                b'}' => break,
                _ => return None,
            }
        }
    }
    c.bump();
    c.ws();
    (c.i == c.b.len()).then_some(spans)
}

#[cfg(test)]
mod tests;
