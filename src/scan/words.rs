//! The scan's byte tests outside the wasm build: words of eight bytes (serde_json's own
//! test, on 64 bits), four blocks at a time, then a block, then byte by byte; escapes are
//! read one by one by the caller.

use super::{array, special, BLOCK};

/// Four blocks: long runs of plain string content are skipped this many bytes at a time.
const WIDE: usize = 64;

const ONES: u64 = u64::MAX / 255;
const HIGH: u64 = ONES << 7;

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

fn block(block: &[u8; BLOCK]) -> Run {
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

fn wide(wide: &[u8; WIDE]) -> Run {
    let mut run = Run::Plain;
    for b in wide.chunks_exact(BLOCK) {
        run = run.max(<&[u8; BLOCK]>::try_from(b).map_or(Run::Special, block));
        if run == Run::Special {
            break;
        }
    }
    run
}

/// From `i`: the index of the first byte of `b` that ends plain string content (`b.len()`
/// when none does), and whether the bytes before it are ASCII.
pub(super) fn skip(b: &[u8], mut i: usize) -> (usize, bool) {
    let mut run = Run::Plain;
    while let Some(r) = array::<WIDE>(b, i).map(wide).filter(|&r| r != Run::Special) {
        run = run.max(r);
        i = i.saturating_add(WIDE);
    }
    while let Some(r) = array::<BLOCK>(b, i)
        .map(block)
        .filter(|&r| r != Run::Special)
    {
        run = run.max(r);
        i = i.saturating_add(BLOCK);
    }
    while let Some(&c) = b.get(i).filter(|&&c| !special(c)) {
        if !c.is_ascii() {
            run = Run::NonAscii;
        }
        i = i.saturating_add(1);
    }
    (i, run == Run::Plain)
}

/// Escapes are passed over in blocks in the wasm build only (`scan/simd.rs`); here the
/// caller reads each: nothing passed over.
pub(super) fn escapes(_: &[u8], i: usize) -> (usize, bool) {
    (i, true)
}
