//! The fast path of reading the client's body: a structural scan that validates a JSON
//! object exactly as serde_json does and locates its top-level members, skipping the
//! contents of strings sixty-four bytes at a time, then sixteen (`simd128` compares in the
//! wasm build, words of eight bytes elsewhere). The same pass notes whether the body is all
//! ASCII, so only a body that is not is checked for UTF-8 afterwards. Bodies are mostly long
//! strings (messages), so this is where a large body's time goes. The wasm path is tested
//! through Envoy (`a_special_byte_anywhere_in_a_long_string_is_read_exactly`).
//!
//! It only answers when it is sure: a body it does not accept (invalid, not UTF-8, or a key
//! with an escape it would have to decode) goes to serde_json (`body::JsonBody::parse`),
//! which then accepts or refuses it with the same error as it always did.

/// A top-level member: its key (as written: it has no escapes) and its value's byte span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member<'a> {
    pub key: &'a str,
    pub start: usize,
    pub end: usize,
}

const BLOCK: usize = 16;
/// Four blocks: long runs of plain string content are skipped this many bytes at a time.
const WIDE: usize = 64;

/// What a run of string content holds, from the least to the most that stops the skip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Run {
    /// ASCII, none of the bytes below.
    Plain,
    /// A byte of a multi-byte character (at or above 0x80), and none of the bytes below.
    NonAscii,
    /// A byte that ends plain string content: a quote, a backslash, a control character.
    Special,
}

/// Whether a byte ends plain string content.
fn special(b: u8) -> bool {
    b == b'"' || b == b'\\' || b < 0x20
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod lanes {
    //! `simd128`: a block is one vector.
    use super::{Run, BLOCK, WIDE};
    use core::arch::wasm32::{
        i8x16_eq, i8x16_lt, i8x16_splat, u8x16_lt, u8x16_splat, v128, v128_any_true, v128_load,
        v128_or, v128_xor,
    };

    fn load(block: &[u8; BLOCK]) -> v128 {
        // SAFETY: `block` is sixteen readable bytes, and wasm loads need no alignment.
        unsafe { v128_load(block.as_ptr().cast::<v128>()) }
    }

    /// The bytes with bit 1 flipped: a quote (0x22) becomes 0x20 and every byte below 0x20
    /// stays below it, while no other byte lands below 0x21. One compare below 0x21 then
    /// takes control characters and quotes at once.
    fn flip(v: v128) -> v128 {
        v128_xor(v, i8x16_splat(0x02))
    }

    fn backslash(v: v128) -> v128 {
        i8x16_eq(v, i8x16_splat(b'\\' as i8))
    }

    /// Control characters, quotes, and (signed) bytes at or above 0x80.
    fn low_quote_or_high(v: v128) -> v128 {
        i8x16_lt(flip(v), i8x16_splat(0x21))
    }

    /// Control characters and quotes alone.
    fn low_or_quote(v: v128) -> v128 {
        u8x16_lt(flip(v), u8x16_splat(0x21))
    }

    /// Four vectors OR-ed.
    fn any4(f: fn(v128) -> v128, [a, b, c, d]: [v128; 4]) -> v128 {
        v128_or(v128_or(f(a), f(b)), v128_or(f(c), f(d)))
    }

    /// One test while the bytes are plain ASCII (the usual case), the exact one only when
    /// that test finds something.
    fn classify(backslash: v128, coarse: v128, exact: impl FnOnce() -> v128) -> Run {
        if !v128_any_true(v128_or(backslash, coarse)) {
            Run::Plain
        } else if v128_any_true(v128_or(backslash, exact())) {
            Run::Special
        } else {
            Run::NonAscii
        }
    }

    pub(super) fn block(block: &[u8; BLOCK]) -> Run {
        let v = load(block);
        classify(backslash(v), low_quote_or_high(v), || low_or_quote(v))
    }

    pub(super) fn wide(wide: &[u8; WIDE]) -> Run {
        let (a, rest) = wide.split_at(BLOCK);
        let (b, rest) = rest.split_at(BLOCK);
        let (c, d) = rest.split_at(BLOCK);
        let [Ok(a), Ok(b), Ok(c), Ok(d)] = [a, b, c, d].map(<&[u8; BLOCK]>::try_from) else {
            return Run::Special;
        };
        let v = [a, b, c, d].map(load);
        classify(any4(backslash, v), any4(low_quote_or_high, v), || {
            any4(low_or_quote, v)
        })
    }
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
mod lanes {
    //! Elsewhere: words of eight bytes (serde_json's own test, on 64 bits).
    use super::{Run, BLOCK, WIDE};

    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES << 7;

    pub(super) fn block(block: &[u8; BLOCK]) -> Run {
        let mut run = Run::Plain;
        for word in block.chunks_exact(8) {
            let Ok(word) = <[u8; 8]>::try_from(word) else {
                return Run::Special;
            };
            let x = u64::from_le_bytes(word);
            let control = x.wrapping_sub(ONES.wrapping_mul(0x20)) & !x;
            let q = x ^ ONES.wrapping_mul(u64::from(b'"'));
            let quote = q.wrapping_sub(ONES) & !q;
            let b = x ^ ONES.wrapping_mul(u64::from(b'\\'));
            let backslash = b.wrapping_sub(ONES) & !b;
            if (control | quote | backslash) & HIGH != 0 {
                return Run::Special;
            }
            if x & HIGH != 0 {
                run = Run::NonAscii;
            }
        }
        run
    }

    pub(super) fn wide(wide: &[u8; WIDE]) -> Run {
        let mut run = Run::Plain;
        for b in wide.chunks_exact(BLOCK) {
            run = run.max(<&[u8; BLOCK]>::try_from(b).map_or(Run::Special, block));
            if run == Run::Special {
                break;
            }
        }
        run
    }
}

/// A cursor over the body's bytes.
struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
    /// Whether every byte of string content so far was ASCII.
    ascii: bool,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn bump(&mut self) {
        self.i = self.i.saturating_add(1);
    }

    /// Takes `c` or fails.
    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.bump())
    }

    /// Takes `word` (a literal's rest) or fails.
    fn word(&mut self, word: &[u8]) -> Option<()> {
        let end = self.i.checked_add(word.len())?;
        (self.b.get(self.i..end)? == word).then(|| self.i = end)
    }

    /// JSON whitespace (space, tab, line feed, carriage return), as serde_json skips it.
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\t' | b'\r')) {
            self.bump();
        }
    }

    /// Moves to the next byte that ends plain string content (or to the end): four blocks
    /// at a time while none holds one, then a block at a time, then byte by byte.
    fn skip_plain(&mut self) {
        let rest = self.b.get(self.i..).unwrap_or(&[]);
        let mut run = Run::Plain;
        let plain = rest
            .chunks_exact(WIDE)
            .map(|w| <&[u8; WIDE]>::try_from(w).map_or(Run::Special, lanes::wide))
            .take_while(|&r| {
                if r == Run::Special {
                    return false;
                }
                run = run.max(r);
                true
            })
            .count();
        self.i = self.i.saturating_add(plain.saturating_mul(WIDE));
        while let Some(block) = self
            .i
            .checked_add(BLOCK)
            .and_then(|end| self.b.get(self.i..end))
            .and_then(|s| <&[u8; BLOCK]>::try_from(s).ok())
        {
            let r = lanes::block(block);
            if r == Run::Special {
                break;
            }
            run = run.max(r);
            self.i = self.i.saturating_add(BLOCK);
        }
        while let Some(c) = self.peek().filter(|&c| !special(c)) {
            if !c.is_ascii() {
                run = Run::NonAscii;
            }
            self.bump();
        }
        if run != Run::Plain {
            self.ascii = false;
        }
    }

    /// A string, from its opening quote; returns whether it had an escape.
    fn string(&mut self) -> Option<bool> {
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
                    self.bump();
                    match self.peek()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.bump(),
                        b'u' => {
                            self.bump();
                            for _ in 0..4 {
                                if !self.peek()?.is_ascii_hexdigit() {
                                    return None;
                                }
                                self.bump();
                            }
                        }
                        _ => return None,
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
    fn key_colon(&mut self) -> Option<()> {
        self.string()?;
        self.ws();
        self.eat(b':')
    }

    /// Any value, at any depth (as serde_json skips a raw value: no depth limit). `open` is
    /// the stack of the containers the scan is inside of.
    fn value(&mut self, open: &mut Vec<u8>) -> Option<()> {
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
    let mut c = Cursor {
        b: bytes,
        i: 0,
        ascii: true,
    };
    // Spans first (key, value): keys become text once the whole body is known to be UTF-8.
    let mut spans: Vec<(usize, usize, usize, usize)> = Vec::new();
    let mut open = Vec::new();
    c.ws();
    c.eat(b'{')?;
    c.ws();
    if c.peek()? != b'}' {
        loop {
            let key_start = c.i.saturating_add(1);
            if c.string()? {
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
    if c.i != bytes.len() {
        return None;
    }
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

#[cfg(test)]
mod tests;
