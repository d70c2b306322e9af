//! The reader the answers' readers share: JSON read by the shape of the struct asked for,
//! over the scan's cursor, taking and refusing what serde_json and serde's derive code do
//! (the rules are in `answer`'s documentation).

use std::borrow::Cow;

use crate::scan::Cursor;

/// The names of a struct's fields in order, each with its aliases.
pub(crate) type Fields = &'static [&'static [&'static str]];

/// The reader: the scan's cursor, and its stack of open containers for skipped values.
pub(crate) struct Reader<'a> {
    c: Cursor<'a>,
    open: Vec<u8>,
}

/// Reads field `i` of a struct.
pub(crate) type Field<'r, 'a> = &'r mut dyn FnMut(&mut Reader<'a>, usize) -> Option<()>;

impl<'a> Reader<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Reader<'a> {
        Reader {
            c: Cursor::new(b),
            open: Vec::new(),
        }
    }

    /// Nothing but whitespace is left.
    pub(crate) fn end(&mut self) -> bool {
        self.look().is_none()
    }

    /// The next byte after whitespace (not taken). Inlined, only the test for a byte that
    /// cannot be whitespace (compact JSON has none): the skip itself, inlined at each of the
    /// many calls, became a jump table over the bytes each time (compile memory).
    #[inline]
    pub(crate) fn look(&mut self) -> Option<u8> {
        match self.c.peek() {
            Some(b) if b > b' ' => Some(b),
            _ => self.past_whitespace(),
        }
    }

    #[inline(never)]
    fn past_whitespace(&mut self) -> Option<u8> {
        self.c.ws();
        self.c.peek()
    }

    /// Takes `byte`, after whitespace, or fails.
    pub(crate) fn take(&mut self, byte: u8) -> Option<()> {
        (self.look()? == byte).then(|| self.c.bump())
    }

    /// The next value is `null` (taken), as `Option` reads it.
    #[inline]
    pub(crate) fn null(&mut self) -> Option<bool> {
        if self.look() == Some(b'n') {
            self.c.word(b"null")?;
            return Some(true);
        }
        Some(false)
    }

    /// `,` between the elements of an array, `]` after the last: whether another follows.
    #[inline]
    pub(crate) fn more(&mut self, first: bool) -> Option<bool> {
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
    pub(crate) fn record(&mut self, fields: Fields, field: Field<'_, 'a>) -> Option<()> {
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
    pub(crate) fn text(&mut self) -> Option<Cow<'a, str>> {
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
    pub(crate) fn string(&mut self) -> Option<String> {
        (self.look()? == b'"').then_some(())?;
        self.text().map(Cow::into_owned)
    }

    pub(crate) fn opt_string(&mut self) -> Option<Option<String>> {
        if self.null()? {
            return Some(None);
        }
        self.string().map(Some)
    }

    /// An `Option<u64>`: digits without a leading zero, within `u64`, not a float's.
    pub(crate) fn count(&mut self) -> Option<Option<u64>> {
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
    pub(crate) fn raw(&mut self) -> Option<Option<&'a str>> {
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
