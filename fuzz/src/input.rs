//! The layout of a fuzz input and the chunkings read from it.

use std::sync::OnceLock;

use arbitrary::Unstructured;

/// Whether the oracle `name` is relaxed for this run: `FUZZ_RELAX` lists names, comma
/// separated. A long run relaxes the oracles of findings already reported (so that it
/// searches past them instead of finding them again); CI relaxes nothing. The names, and
/// what each lets pass, are in docs/fuzzing.md.
pub fn relaxed(name: &str) -> bool {
    static RELAXED: OnceLock<Vec<String>> = OnceLock::new();
    RELAXED
        .get_or_init(|| {
            std::env::var("FUZZ_RELAX")
                .unwrap_or_default()
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .iter()
        .any(|r| r == name)
}

/// Splits an input into (control bytes, payload): the first byte says how many control
/// bytes follow; everything after them is the payload.
pub fn split(data: &[u8]) -> (&[u8], &[u8]) {
    match data.split_first() {
        None => (&[], &[]),
        Some((&n, rest)) => rest.split_at(usize::from(n).min(rest.len())),
    }
}

/// Builds an input from its parts (the inverse of `split`; for seeds and tests).
pub fn join(control: &[u8], payload: &[u8]) -> Vec<u8> {
    let n = u8::try_from(control.len()).expect("at most 255 control bytes");
    let mut out = vec![n];
    out.extend_from_slice(control);
    out.extend_from_slice(payload);
    out
}

/// At most this many fixed-size pieces: byte-by-byte feeding of a long input costs the
/// framer a rescan of its tail per piece, which, instrumented, would cut the executions
/// per second tenfold; boundaries matter in short inputs, which libFuzzer prefers anyway.
pub const MAX_PIECES: usize = 64;

/// Chunk boundaries for `payload`, read from the control bytes: either fixed-size pieces
/// (1 to 8 bytes each, larger when that would make more than `MAX_PIECES`) or up to 16 cut
/// points anywhere, repeats included (so empty chunks occur too). No control bytes left:
/// the whole payload as one chunk. Relaxed `empty-chunks`: no empty chunks.
pub fn chunks<'a>(u: &mut Unstructured<'_>, payload: &'a [u8]) -> Vec<&'a [u8]> {
    let len = payload.len();
    let mut pieces = match u.int_in_range(0u8..=3).unwrap_or(0) {
        0 => vec![payload],
        1 => {
            let size = usize::from(u.int_in_range(1u8..=8).unwrap_or(1));
            payload.chunks(size.max(len.div_ceil(MAX_PIECES))).collect()
        }
        _ => {
            let n = u.int_in_range(1u8..=16).unwrap_or(1);
            let mut cuts: Vec<usize> = (0..n)
                .map(|_| {
                    let c = u.arbitrary::<u32>().unwrap_or(0);
                    usize::try_from(c).unwrap_or(0) % (len + 1)
                })
                .collect();
            cuts.sort_unstable();
            let mut out = Vec::with_capacity(cuts.len() + 1);
            let mut at = 0;
            for c in cuts {
                out.push(&payload[at..c]);
                at = c;
            }
            out.push(&payload[at..]);
            out
        }
    };
    if relaxed("empty-chunks") {
        pieces.retain(|p| !p.is_empty());
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_join() {
        assert_eq!(split(b""), (&b""[..], &b""[..]));
        assert_eq!(split(b"\x00abc"), (&b""[..], &b"abc"[..]));
        assert_eq!(split(b"\x02abc"), (&b"ab"[..], &b"c"[..]));
        assert_eq!(split(b"\x09abc"), (&b"abc"[..], &b""[..]));
        assert_eq!(split(&join(b"xy", b"z")), (&b"xy"[..], &b"z"[..]));
    }

    #[test]
    fn chunks_cover_the_payload() {
        let payload = b"data: 1\n\ndata: 2\n\n";
        for control in [
            &b""[..],
            b"\x01\x02",
            b"\x02\x05\x01\x00\x00\x00\x09\x00\x00\x00",
        ] {
            let pieces = chunks(&mut Unstructured::new(control), payload);
            assert_eq!(pieces.concat(), payload, "{control:?}");
        }
        let whole = chunks(&mut Unstructured::new(b""), payload);
        assert_eq!(whole, [&payload[..]]);
    }
}
