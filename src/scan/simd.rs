//! The scan's byte tests with `simd128` (the wasm build): where plain string content ends.
//! A block of sixteen bytes is one vector, tested once: the masks of its bytes that end
//! plain content and of its bytes at or above 0x80 (one `bitmask` each), and the first of
//! the former is where the run ends. After four plain ASCII blocks in a row, a long run is
//! likely, and it is skipped 256 bytes at a time with one test for all of them.

use super::{array, special, BLOCK};
use core::arch::wasm32::{
    i8x16_bitmask, i8x16_eq, i8x16_lt, i8x16_min, i8x16_splat, u8x16_min, u8x16_splat, v128,
    v128_load, v128_or, v128_xor,
};

/// Sixteen blocks: a long run of plain ASCII is skipped this many bytes at a time.
const CLEAN: usize = 256;
/// Plain ASCII blocks in a row before the long skip is tried: text with a line break or a
/// quote every few dozen bytes (code) never pays for it.
const BEFORE_CLEAN: u32 = 4;

fn load(block: &[u8; BLOCK]) -> v128 {
    // SAFETY: `block` is sixteen readable bytes, and wasm loads need no alignment.
    unsafe { v128_load(block.as_ptr().cast::<v128>()) }
}

/// The bytes with bit 1 flipped: a quote (0x22) becomes 0x20 and every byte below 0x20
/// stays below it, while no other byte lands below 0x21. One signed compare below 0x21
/// then takes control characters, quotes and the bytes at or above 0x80 (negative) at once.
fn flip(v: v128) -> v128 {
    v128_xor(v, i8x16_splat(0x02))
}

fn backslash(v: v128) -> v128 {
    i8x16_eq(v, i8x16_splat(b'\\' as i8))
}

/// Bit k set where byte k ends plain string content, and where it is at or above 0x80.
fn masks(block: &[u8; BLOCK]) -> (u32, u32) {
    let v = load(block);
    let high = u32::from(i8x16_bitmask(v));
    let coarse = i8x16_bitmask(v128_or(i8x16_lt(flip(v), i8x16_splat(0x21)), backslash(v)));
    (u32::from(coarse) & !high, high)
}

/// Whether all 256 bytes are plain ASCII. Two running minimums, of the flipped bytes
/// (signed: one below 0x21 is a control character, a quote or a byte at or above 0x80) and
/// of the bytes XOR a backslash (unsigned: zero where one was), and one test at the end.
fn clean(bytes: &[u8; CLEAN]) -> bool {
    let (mut low, mut slash) = (i8x16_splat(0x7f), u8x16_splat(0xff));
    for block in bytes.chunks_exact(BLOCK) {
        let Ok(block) = <&[u8; BLOCK]>::try_from(block) else {
            return false;
        };
        let v = load(block);
        low = i8x16_min(low, flip(v));
        slash = u8x16_min(slash, v128_xor(v, u8x16_splat(b'\\')));
    }
    let special = v128_or(
        i8x16_lt(low, i8x16_splat(0x21)),
        i8x16_eq(slash, u8x16_splat(0)),
    );
    i8x16_bitmask(special) == 0
}

/// From `i`: the index of the first byte of `b` that ends plain string content (`b.len()`
/// when none does), and whether the bytes before it are ASCII.
pub(super) fn skip(b: &[u8], mut i: usize) -> (usize, bool) {
    let mut ascii = true;
    let mut plain = 0u32;
    loop {
        if plain >= BEFORE_CLEAN {
            plain = 0;
            while array::<CLEAN>(b, i).is_some_and(clean) {
                i = i.saturating_add(CLEAN);
            }
        }
        let Some(block) = array::<BLOCK>(b, i) else {
            break;
        };
        let (ends, high) = masks(block);
        if ends != 0 {
            let at = ends.trailing_zeros();
            if high.trailing_zeros() < at {
                ascii = false;
            }
            return (i.saturating_add(at.try_into().unwrap_or(BLOCK)), ascii);
        }
        if high == 0 {
            plain = plain.saturating_add(1);
        } else {
            ascii = false;
            plain = 0;
        }
        i = i.saturating_add(BLOCK);
    }
    while let Some(&c) = b.get(i).filter(|&&c| !special(c)) {
        ascii &= c.is_ascii();
        i = i.saturating_add(1);
    }
    (i, ascii)
}
