//! The layout of a fuzz input and the chunkings read from it.

use arbitrary::Unstructured;

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

/// Chunk boundaries for `payload`, read from the control bytes: either fixed-size pieces
/// (1 to 8 bytes each) or up to 16 cut points anywhere, repeats included (so empty chunks
/// occur too). No control bytes left: the whole payload as one chunk.
pub fn chunks<'a>(u: &mut Unstructured<'_>, payload: &'a [u8]) -> Vec<&'a [u8]> {
    let len = payload.len();
    match u.int_in_range(0u8..=3).unwrap_or(0) {
        0 => vec![payload],
        1 => {
            let size = usize::from(u.int_in_range(1u8..=8).unwrap_or(1));
            payload.chunks(size).collect()
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
    }
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
