//! A header map kept in the ABI's own encoding (`wire::serialize_map`): read from Envoy as
//! one buffer, checked once, looked up and edited in place of a string per name and value,
//! and written back as it is. Names are lower case, as Envoy hands them.

use std::fmt;

use crate::wire::serialize_map;

/// A header map: pairs in order, in the ABI's encoding. Always well formed (count, sizes,
/// each name and value followed by a NUL, nothing after) and valid UTF-8 in every name and
/// value, so reading it needs no checks that can fail; or no bytes at all for no pairs (so
/// an empty map costs no allocation).
#[derive(Clone, Default)]
pub struct Headers {
    wire: Vec<u8>,
}

/// One edit, as Envoy applies it: a set replaces every value of the name with one, last; a
/// remove drops every value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edit<'a> {
    Set(&'a str, &'a str),
    Remove(&'a str),
}

/// The encoding of no pairs.
const NO_PAIRS: &[u8] = &[0; 4];

impl PartialEq for Headers {
    fn eq(&self, other: &Headers) -> bool {
        self.wire() == other.wire()
    }
}

impl Eq for Headers {}

impl Headers {
    /// The map Envoy handed over. A malformed map, or one with a name or value that is not
    /// UTF-8, is read as before this type existed: the pairs up to the fault, each made
    /// valid (`from_utf8_lossy`).
    pub fn from_wire(wire: Vec<u8>) -> Headers {
        if well_formed(&wire) {
            return Headers { wire };
        }
        let pairs: Vec<_> = Pairs::over(&wire)
            .map(|(n, v)| (String::from_utf8_lossy(n), String::from_utf8_lossy(v)))
            .collect();
        Headers::from_pairs(&pairs)
    }

    /// A map of these pairs, in order.
    pub fn from_pairs<N: AsRef<str>, V: AsRef<str>>(pairs: &[(N, V)]) -> Headers {
        let bytes: Vec<(&[u8], &[u8])> = pairs
            .iter()
            .map(|(n, v)| (n.as_ref().as_bytes(), v.as_ref().as_bytes()))
            .collect();
        Headers {
            wire: serialize_map(&bytes),
        }
    }

    /// The ABI's encoding, to hand to Envoy.
    pub fn wire(&self) -> &[u8] {
        if self.wire.is_empty() {
            NO_PAIRS
        } else {
            &self.wire
        }
    }

    /// The number of pairs.
    pub fn len(&self) -> usize {
        u32_at(&self.wire, 0).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first value of `name` (exact, names are lower case).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.raw()
            .find(|(n, _)| *n == name.as_bytes())
            .map(|(_, v)| text(v))
    }

    /// An answer's `:status`, 0 when there is none that reads as a number.
    pub fn status(&self) -> u32 {
        self.get(":status")
            .and_then(|s| s.parse::<u32>().ok())
            .unwrap_or(0)
    }

    /// Every pair, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.raw().map(|(n, v)| (text(n), text(v)))
    }

    /// Every pair as owned strings (for tests' comparisons).
    #[cfg(test)]
    pub fn to_pairs(&self) -> Vec<(String, String)> {
        self.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    /// The map these edits make of this one, applied in order.
    pub fn edited<'e>(&self, edits: impl IntoIterator<Item = Edit<'e>>) -> Headers {
        let mut pairs: Vec<(&[u8], &[u8])> = self.raw().collect();
        for edit in edits {
            match edit {
                Edit::Set(name, value) => {
                    pairs.retain(|(n, _)| *n != name.as_bytes());
                    pairs.push((name.as_bytes(), value.as_bytes()));
                }
                Edit::Remove(name) => pairs.retain(|(n, _)| *n != name.as_bytes()),
            }
        }
        Headers {
            wire: serialize_map(&pairs),
        }
    }

    /// Every pair as bytes, read by the sizes at the front.
    fn raw(&self) -> Pairs<'_> {
        Pairs::over(&self.wire)
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// A name or value of a checked map (always UTF-8 there).
fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default()
}

fn u32_at(bytes: &[u8], at: usize) -> Option<usize> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    let arr: [u8; 4] = b.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(arr)).ok()
}

/// The pairs of a map, as bytes; stops at the first fault (there is none in a checked map).
struct Pairs<'w> {
    wire: &'w [u8],
    next: usize,
    count: usize,
    /// Where the next name starts.
    data: usize,
    /// Whether every name and value read so far was followed by a NUL.
    nul: bool,
}

impl<'w> Pairs<'w> {
    fn over(wire: &'w [u8]) -> Pairs<'w> {
        let count = u32_at(wire, 0).unwrap_or(0);
        Pairs {
            wire,
            next: 0,
            count,
            data: count.saturating_mul(8).saturating_add(4),
            nul: true,
        }
    }
}

impl<'w> Iterator for Pairs<'w> {
    type Item = (&'w [u8], &'w [u8]);

    #[inline] // every header lookup; out of line under the wasm build's inline threshold
    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.count {
            return None;
        }
        let sizes = self.next.checked_mul(8)?.checked_add(4)?;
        let name_len = u32_at(self.wire, sizes)?;
        let value_len = u32_at(self.wire, sizes.checked_add(4)?)?;
        let name_end = self.data.checked_add(name_len)?;
        let value_start = name_end.checked_add(1)?;
        let value_end = value_start.checked_add(value_len)?;
        let name = self.wire.get(self.data..name_end)?;
        let value = self.wire.get(value_start..value_end)?;
        self.nul &= self.wire.get(name_end) == Some(&0) && self.wire.get(value_end) == Some(&0);
        self.data = value_end.checked_add(1)?;
        self.next = self.next.checked_add(1)?;
        Some((name, value))
    }
}

/// Whether Envoy's map can be kept as it came: every size within the data, a NUL after each
/// name and value, nothing after the last, and the data valid UTF-8 (each NUL is one byte
/// of its own, so then every name and value is valid UTF-8 too).
fn well_formed(wire: &[u8]) -> bool {
    let Some(count) = u32_at(wire, 0) else {
        return false;
    };
    let mut pairs = Pairs::over(wire);
    let read = pairs.by_ref().count();
    read == count
        && pairs.nul
        && pairs.data == wire.len()
        && wire
            .get(count.saturating_mul(8).saturating_add(4)..)
            .is_some_and(|d| std::str::from_utf8(d).is_ok())
}

#[cfg(test)]
mod tests;
