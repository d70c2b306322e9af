//! The scan's byte tests with `simd128` (the wasm build): where plain string content ends.
//! A block of sixteen bytes is one vector, tested once: the masks of its bytes that end
//! plain content and of its bytes at or above 0x80 (one `bitmask` each), and the first of
//! the former is where the run ends. In text dense in escapes, `escapes` passes over short
//! ones (`\n`, `\"`, ...) a block at a time, so code costs a test per block, not one per
//! escape. After four plain ASCII blocks in a row, a long run is likely, and it is skipped
//! 256 bytes at a time with one test for all of them.

use super::{array, special, BLOCK};
use core::arch::wasm32::{
    i8x16, i8x16_bitmask, i8x16_eq, i8x16_lt, i8x16_min, i8x16_splat, i8x16_swizzle, u8x16_min,
    u8x16_shr, u8x16_splat, v128, v128_and, v128_load, v128_or, v128_xor,
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

/// The vectors `escapes` tests with, made once per call and kept out of the compiler's
/// sight (`black_box`): written as constants in the loop, V8 built each again for every
/// block, a quarter of the time code took to read ("Round 9" in `docs/performance.md`).
#[derive(Clone, Copy)]
struct Consts {
    two: v128,
    bound: v128,
    slash: v128,
    low: v128,
    by_low: v128,
    by_high: v128,
    zero: v128,
}

impl Consts {
    fn new() -> Consts {
        core::hint::black_box(Consts {
            two: i8x16_splat(0x02),
            bound: i8x16_splat(0x21),
            slash: i8x16_splat(b'\\' as i8),
            low: u8x16_splat(0x0f),
            by_low: i8x16(0, 0, 13, 0, 8, 0, 4, 0, 0, 0, 0, 0, 2, 0, 4, 1),
            by_high: i8x16(0, 0, 1, 0, 0, 2, 4, 8, 0, 0, 0, 0, 0, 0, 0, 0),
            zero: i8x16_splat(0),
        })
    }
}

/// Bit k set where byte k is one a backslash escapes alone: `"`, `\\`, `/`, `b`, `f`, `n`,
/// `r` or `t` (`u` takes four hex digits more: the caller reads it). Two table lookups: the
/// low half of each byte gives the high halves it can have among those eight, the high half
/// its own, and the byte is one where they meet (`"` 0x22, `/` 0x2F, `\\` 0x5C, `b` 0x62, `f`
/// 0x66, `n` 0x6E, `r` 0x72, `t` 0x74: high half 2 is bit 0, 5 bit 1, 6 bit 2, 7 bit 3).
fn short_escapes(k: &Consts, block: &[u8; BLOCK]) -> u32 {
    let v = load(block);
    let low = i8x16_swizzle(k.by_low, v128_and(v, k.low));
    let high = i8x16_swizzle(k.by_high, u8x16_shr(v, 4));
    let none = i8x16_eq(v128_and(low, high), k.zero);
    u32::from(!i8x16_bitmask(none))
}

/// From a backslash at `i`, in text dense in escapes (code): passes over short escapes
/// (`\n`, `\"`, ...) and the plain bytes between them a block at a time, each block's escapes
/// found from a second load one byte on. Returns where it stopped (`i` when it passed over
/// nothing), and whether the bytes before are ASCII. It stops at a quote, a control
/// character or any other escape (the caller reads those), after four blocks in a row
/// without any (a long run is likely: the skip takes it), and before the body's last
/// seventeen bytes. Kept out of `skip`, so the long runs' loop there is compiled as it was.
#[inline(never)]
pub(super) fn escapes(b: &[u8], mut i: usize) -> (usize, bool) {
    let mut ascii = true;
    let mut plain = 0u32;
    let k = Consts::new();
    loop {
        let (Some(block), Some(next)) = (
            array::<BLOCK>(b, i),
            i.checked_add(1).and_then(|n| array::<BLOCK>(b, n)),
        ) else {
            return (i, ascii);
        };
        let v = load(block);
        let high = u32::from(i8x16_bitmask(v));
        let slash = i8x16_eq(v, k.slash);
        let coarse = v128_or(i8x16_lt(v128_xor(v, k.two), k.bound), slash);
        let ends = u32::from(i8x16_bitmask(coarse)) & !high;
        if ends == 0 {
            ascii &= high == 0;
            i = i.saturating_add(BLOCK);
            plain = plain.saturating_add(1);
            if plain >= BEFORE_CLEAN {
                // A long run is likely: the skip takes it.
                return (i, ascii);
            }
            continue;
        }
        plain = 0;
        let short = u32::from(i8x16_bitmask(slash)) & short_escapes(&k, next);
        let mut live = ends;
        loop {
            let at = live.trailing_zeros();
            if at >= 16 {
                // The rest of the block is plain, or escapes (ASCII).
                ascii &= high == 0;
                i = i.saturating_add(BLOCK);
                break;
            }
            let bit = 1u32 << at;
            if short & bit == 0 {
                ascii &= high & bit.wrapping_sub(1) == 0;
                return (i.saturating_add(at.try_into().unwrap_or(0)), ascii);
            }
            // The backslash and the byte it escapes are read (a quote or a backslash there
            // no longer ends the run).
            live &= !(bit | bit << 1);
            if at == 15 {
                // The escaped byte is the next block's first.
                ascii &= high == 0;
                i = i.saturating_add(BLOCK + 1);
                break;
            }
        }
    }
}
