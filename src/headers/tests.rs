use super::*;
use crate::testing::pairs;
use crate::wire::deserialize_map;

/// The edits applied one by one to owned pairs, as the filter did before this type.
fn edited_by_hand(map: &[(String, String)], edits: &[Edit<'_>]) -> Vec<(String, String)> {
    let mut out = map.to_vec();
    for e in edits {
        match *e {
            Edit::Set(n, v) => {
                out.retain(|(k, _)| k != n);
                out.push((n.to_string(), v.to_string()));
            }
            Edit::Remove(n) => out.retain(|(k, _)| k != n),
        }
    }
    out
}

#[test]
fn pairs_come_back_in_order_and_the_first_value_is_found() {
    let map = [
        (":status", "200"),
        ("x-tag", "1"),
        ("empty", ""),
        ("x-tag", "2"),
        ("é", "ünï"),
    ];
    let h = Headers::from_pairs(&map);
    assert_eq!(h.iter().collect::<Vec<_>>(), map);
    assert_eq!(h.to_pairs(), pairs(&map));
    assert_eq!((h.len(), h.is_empty()), (5, false));
    assert_eq!(h.get("x-tag"), Some("1"));
    assert_eq!(h.get("empty"), Some(""));
    assert_eq!(h.get("X-Tag"), None, "names are compared as they are");
    assert_eq!(h.get("x-ta"), None);
    assert_eq!(h.wire(), serialize_map(&map));
    assert_eq!(format!("{h:?}"), format!("{map:?}"));
    let empty = Headers::default();
    assert_eq!((empty.len(), empty.iter().count()), (0, 0));
    assert_eq!(empty.wire(), [0, 0, 0, 0]);
}

#[test]
fn a_map_from_envoy_is_kept_as_it_came() {
    let wire = serialize_map(&[(":path", "/v1/chat/completions"), ("a", "")]);
    let h = Headers::from_wire(wire.clone());
    assert_eq!(h.wire(), wire);
    assert_eq!(h.get(":path"), Some("/v1/chat/completions"));
    // A value holding a NUL byte of its own is still read by its size.
    let nul = serialize_map(&[("a", "x\0y"), ("b", "2")]);
    let h = Headers::from_wire(nul.clone());
    assert_eq!(
        (h.wire(), h.get("a"), h.get("b")),
        (&nul[..], Some("x\0y"), Some("2"))
    );
}

/// Every cut, every byte changed and bytes added: the same pairs as `deserialize_map` reads
/// (the reading before this type), and a map that is well formed again.
#[test]
fn any_bytes_read_as_the_map_reader_reads_them() {
    let good = serialize_map(&[("a", "1"), ("bb", "22"), ("ccc", "é")]);
    let mut inputs: Vec<Vec<u8>> = (0..=good.len()).map(|cut| good[..cut].to_vec()).collect();
    for at in 0..good.len() {
        for byte in [0x00, 0x01, 0x02, 0x08, 0x30, 0x7f, 0x80, 0xc3, 0xff] {
            let mut b = good.clone();
            b[at] = byte;
            inputs.push(b);
        }
    }
    let mut longer = good.clone();
    longer.push(0);
    inputs.push(longer);
    inputs.push(vec![0xff, 0xff, 0xff, 0xff, 0, 0]);
    inputs.push(vec![0, 0, 0, 0]);
    inputs.push(Vec::new());
    let mut kept = 0;
    for b in inputs {
        let h = Headers::from_wire(b.clone());
        let want = deserialize_map(&b);
        assert_eq!(h.to_pairs(), want, "{b:?}");
        assert_eq!(h.len(), want.len(), "{b:?}");
        assert_eq!(h.wire(), serialize_map(&want), "{b:?}");
        if h.wire() == b {
            kept += 1;
        }
    }
    // The good map, and changes that keep it well formed (a byte of a name or value).
    assert!(kept > 10, "{kept}");
}

#[test]
fn edits_make_the_map_envoy_would_have() {
    let map = pairs(&[
        (":path", "/v1/chat/completions"),
        (":authority", "gw"),
        ("accept-encoding", "gzip"),
        ("x-tag", "1"),
        ("x-tag", "2"),
        ("authorization", "Bearer client"),
    ]);
    let names = [
        ":path",
        ":authority",
        "x-tag",
        "accept-encoding",
        "new",
        "authorization",
    ];
    let values = ["", "v", "Bearer sk"];
    // Every sequence of up to three edits over these names and values.
    let mut all: Vec<Edit<'_>> = names.iter().map(|n| Edit::Remove(n)).collect();
    for n in names {
        for v in values {
            all.push(Edit::Set(n, v));
        }
    }
    let h = Headers::from_pairs(&map);
    let mut checked = 0;
    for a in &all {
        for b in &all {
            for c in all.iter().step_by(5) {
                let edits = [*a, *b, *c];
                let got = h.edited(edits);
                assert_eq!(got.to_pairs(), edited_by_hand(&map, &edits), "{edits:?}");
                checked += 1;
            }
        }
    }
    assert!(checked > 1000);
    assert_eq!(h.edited([]), h);
}
