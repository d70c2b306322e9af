//! Short strings built without `core::fmt`: the keys, stat names, header names and numbers
//! that every request spells. In the wasm build, `format!` goes through the formatter's
//! dynamic calls and padding for each piece; joining the pieces is a copy. And a plain
//! substring search, for the few short texts the filter searches.

/// The pieces, one after the other, in a string of exactly their length.
pub fn join(parts: &[&str]) -> String {
    let len = parts.iter().fold(0usize, |n, p| n.saturating_add(p.len()));
    let mut s = String::with_capacity(len);
    for p in parts {
        s.push_str(p);
    }
    s
}

/// Where `needle` first occurs in `hay`, as `hay.find(needle)` says. A plain search of
/// short texts: `str::find` with a `&str` brings core's two-way searcher into the module,
/// some 0.6 MB of V8's compile memory ("Round 14" in docs/performance.md).
#[inline(never)]
pub fn find(hay: &str, needle: &str) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.as_bytes()
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
}

/// Where `needle` last occurs in `hay`, as `hay.rfind(needle)` says.
#[inline(never)]
pub fn rfind(hay: &str, needle: &str) -> Option<usize> {
    if needle.is_empty() {
        return Some(hay.len());
    }
    hay.as_bytes()
        .windows(needle.len())
        .rposition(|w| w == needle.as_bytes())
}

/// A number in decimal, as `n.to_string()` spells it.
pub fn num(n: u64) -> String {
    let mut buf = [0u8; 20];
    std::str::from_utf8(digits(n, &mut buf))
        .unwrap_or("0")
        .to_string()
}

/// Appends a number in decimal, as `n.to_string()` spells it.
#[inline(never)] // one copy of the digits' loop for the counters' writes ("Round 10")
pub fn push_num(out: &mut Vec<u8>, n: u64) {
    let mut buf = [0u8; 20];
    out.extend_from_slice(digits(n, &mut buf));
}

/// The decimal digits of `n`, written at the end of `buf`.
fn digits(n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    let mut n = n;
    loop {
        at = at.saturating_sub(1);
        if let Some(d) = buf.get_mut(at) {
            // `n % 10` is below ten: the cast keeps it whole.
            *d = b'0'.saturating_add((n % 10) as u8);
        }
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.get(at..).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn searches_as_str_find_and_rfind_do() {
        let hays = [
            "",
            "a",
            "$env://X",
            "x$env://A and $env://B",
            "é$env:/é",
            "aaa",
            "at line 3 at line 4",
        ];
        let needles = ["", "a", "aa", "$env://", " at line ", ";base64,", "é"];
        for h in hays {
            for n in needles {
                assert_eq!(find(h, n), h.find(n), "find {h:?} {n:?}");
                assert_eq!(rfind(h, n), h.rfind(n), "rfind {h:?} {n:?}");
            }
        }
    }

    #[test]
    fn numbers_as_to_string_spells_them() {
        let mut cases = vec![0, 1, 9, 10, 11, 99, 100, 12_345, u64::MAX, u64::MAX - 1];
        cases.extend((0..64).map(|b| 1u64 << b));
        cases.extend((0..20).map(|e| 10u64.pow(e)));
        cases.extend((1..20).map(|e| 10u64.pow(e) - 1));
        for n in cases {
            assert_eq!(num(n), n.to_string());
            let mut out = b"x".to_vec();
            push_num(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
    }

    #[test]
    fn pieces_are_joined_in_order() {
        assert_eq!(join(&[]), "");
        assert_eq!(join(&["a", "", "bc", "é"]), "abcé");
        let s = join(&["aiproxy.instance.", "x", ".healthy"]);
        assert_eq!(
            (s.as_str(), s.capacity()),
            ("aiproxy.instance.x.healthy", 26)
        );
    }
}
