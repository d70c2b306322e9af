//! The fast path of reading the client's body: a structural scan that validates a JSON
//! object exactly as serde_json does and locates its top-level members, skipping the
//! contents of strings sixty-four bytes at a time, then sixteen (`simd128` compares in the
//! wasm build, words of eight bytes elsewhere), and checking for ASCII the same way. Bodies
//! are mostly long strings (messages), so this is where a large body's time goes. The wasm
//! path is tested through Envoy (`a_special_byte_anywhere_in_a_long_string_is_read_exactly`).
//!
//! It only answers when it is sure: a body it does not accept (invalid, or a key with an
//! escape it would have to decode) goes to serde_json (`body::JsonBody::parse`), which then
//! accepts or refuses it with the same error as it always did.

/// A top-level member: its key (as written: it has no escapes) and its value's byte span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member<'a> {
    pub key: &'a str,
    pub start: usize,
    pub end: usize,
}

/// The body as UTF-8: an ASCII body (the usual case) is checked sixteen bytes at a time,
/// anything else by the standard library.
pub fn utf8(bytes: &[u8]) -> Option<&str> {
    if is_ascii(bytes) {
        // SAFETY: every byte is below 0x80, and ASCII is valid UTF-8.
        return Some(unsafe { std::str::from_utf8_unchecked(bytes) });
    }
    std::str::from_utf8(bytes).ok()
}

const BLOCK: usize = 16;
/// Four blocks: long runs of plain string content are skipped this many bytes at a time.
const WIDE: usize = 64;

/// Whether every byte is ASCII: the bytes of each block OR-ed together, the high bits
/// checked once at the end.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
fn is_ascii(bytes: &[u8]) -> bool {
    const HIGH: u128 = u128::from_ne_bytes([0x80; BLOCK]);
    let mut blocks = bytes.chunks_exact(BLOCK);
    let mut acc = 0u128;
    for block in &mut blocks {
        if let Ok(block) = <[u8; BLOCK]>::try_from(block) {
            acc |= u128::from_ne_bytes(block);
        }
    }
    acc & HIGH == 0 && blocks.remainder().is_ascii()
}

/// The same with `simd128`, four blocks at a time (wasm has no 128-bit integers: `u128`
/// would be two 64-bit halves).
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn is_ascii(bytes: &[u8]) -> bool {
    use core::arch::wasm32::{u8x16_bitmask, u8x16_splat, v128, v128_load, v128_or};
    // SAFETY: only ever given the sixteen-byte quarters of a 64-byte chunk of `bytes`, and
    // wasm loads need no alignment.
    let load = |b: &[u8]| unsafe { v128_load(b.as_ptr().cast::<v128>()) };
    let mut wide = bytes.chunks_exact(WIDE);
    let mut acc = u8x16_splat(0);
    for w in &mut wide {
        if let (Some(a), Some(b), Some(c), Some(d)) = (
            w.get(..BLOCK),
            w.get(BLOCK..2 * BLOCK),
            w.get(2 * BLOCK..3 * BLOCK),
            w.get(3 * BLOCK..),
        ) {
            acc = v128_or(
                acc,
                v128_or(v128_or(load(a), load(b)), v128_or(load(c), load(d))),
            );
        }
    }
    u8x16_bitmask(acc) == 0 && wide.remainder().is_ascii()
}

/// Whether a byte ends plain string content: a quote, a backslash, a control character.
fn special(b: u8) -> bool {
    b == b'"' || b == b'\\' || b < 0x20
}

/// The bytes of a block that end plain string content, as a SIMD mask: three compares.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn special_mask(block: &[u8]) -> core::arch::wasm32::v128 {
    use core::arch::wasm32::{
        i8x16_eq, i8x16_splat, u8x16_lt, u8x16_splat, v128, v128_load, v128_or,
    };
    // Never shorter than a block (the callers split exact blocks); the fallback is only
    // there so that a slice is never read past its end.
    let Some(block) = block.get(..BLOCK) else {
        return i8x16_splat(-1);
    };
    // SAFETY: `block` is sixteen readable bytes, and wasm loads need no alignment.
    let v = unsafe { v128_load(block.as_ptr().cast::<v128>()) };
    let quote = i8x16_eq(v, i8x16_splat(b'"' as i8));
    let backslash = i8x16_eq(v, i8x16_splat(b'\\' as i8));
    let control = u8x16_lt(v, u8x16_splat(0x20));
    v128_or(v128_or(quote, backslash), control)
}

/// Whether a block holds a byte that ends plain string content.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn any_special(block: &[u8; BLOCK]) -> bool {
    core::arch::wasm32::v128_any_true(special_mask(block))
}

/// Whether four blocks hold one: their masks OR-ed, one test.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn any_special_wide(wide: &[u8; WIDE]) -> bool {
    use core::arch::wasm32::{v128_any_true, v128_or};
    let (a, rest) = wide.split_at(BLOCK);
    let (b, rest) = rest.split_at(BLOCK);
    let (c, d) = rest.split_at(BLOCK);
    v128_any_true(v128_or(
        v128_or(special_mask(a), special_mask(b)),
        v128_or(special_mask(c), special_mask(d)),
    ))
}

/// The same, eight bytes at a time in a word (serde_json's own test, on 64 bits).
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
fn any_special(block: &[u8; BLOCK]) -> bool {
    const ONES: u64 = u64::MAX / 255;
    block.chunks_exact(8).any(|word| {
        let Ok(word) = <[u8; 8]>::try_from(word) else {
            return true;
        };
        let x = u64::from_le_bytes(word);
        let control = x.wrapping_sub(ONES.wrapping_mul(0x20)) & !x;
        let q = x ^ ONES.wrapping_mul(u64::from(b'"'));
        let quote = q.wrapping_sub(ONES) & !q;
        let b = x ^ ONES.wrapping_mul(u64::from(b'\\'));
        let backslash = b.wrapping_sub(ONES) & !b;
        (control | quote | backslash) & (ONES << 7) != 0
    })
}

/// Whether four blocks hold one.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
fn any_special_wide(wide: &[u8; WIDE]) -> bool {
    wide.chunks_exact(BLOCK)
        .any(|b| <&[u8; BLOCK]>::try_from(b).map_or(true, any_special))
}

/// A cursor over the body's bytes.
struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
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
        let plain = rest
            .chunks_exact(WIDE)
            .take_while(|w| <&[u8; WIDE]>::try_from(*w).is_ok_and(|w| !any_special_wide(w)))
            .count();
        self.i = self.i.saturating_add(plain.saturating_mul(WIDE));
        while let Some(block) = self
            .i
            .checked_add(BLOCK)
            .and_then(|end| self.b.get(self.i..end))
            .and_then(|s| <&[u8; BLOCK]>::try_from(s).ok())
        {
            if any_special(block) {
                break;
            }
            self.i = self.i.saturating_add(BLOCK);
        }
        while self.peek().is_some_and(|c| !special(c)) {
            self.bump();
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

/// The top-level members of a body that is one JSON object (and nothing but whitespace
/// after it); `None` when the scan is not sure (then serde_json decides).
pub fn object(text: &str) -> Option<Vec<Member<'_>>> {
    let mut c = Cursor {
        b: text.as_bytes(),
        i: 0,
    };
    let mut members = Vec::new();
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
            let key = text.get(key_start..c.i.saturating_sub(1))?;
            c.ws();
            c.eat(b':')?;
            c.ws();
            let start = c.i;
            c.value(&mut open)?;
            members.push(Member {
                key,
                start,
                end: c.i,
            });
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
    (c.i == text.len()).then_some(members)
}

#[cfg(test)]
mod tests;
