use super::*;

fn d(entries: &[(&str, &str)], hits: Option<u64>) -> Descriptor {
    Descriptor {
        entries: entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        hits,
    }
}

#[test]
fn requests_encode_as_protobuf_does() {
    // domain "ai" (0a 02 61 69), one descriptor with entry (instance, a) and hits 300
    // (UInt64Value: 1a 03 08 ac 02), request hits 1 (18 01).
    let got = rate_limit_request("ai", &[d(&[("instance", "a")], Some(300))], 1);
    let want: Vec<u8> = [
        &[0x0a, 0x02][..],
        b"ai",
        &[0x12, 0x14, 0x0a, 0x0d, 0x0a, 0x08],
        b"instance",
        &[0x12, 0x01],
        b"a",
        &[0x1a, 0x03, 0x08, 0xac, 0x02],
        &[0x18, 0x01],
    ]
    .concat();
    assert_eq!(got, want);
    // No hits: the field is left out (0 is protobuf's default).
    assert_eq!(rate_limit_request("ai", &[], 0), [0x0a, 0x02, b'a', b'i']);
    let r = reserve_request("ai", &[], 100, 30);
    assert_eq!(
        r,
        [0x0a, 0x02, b'a', b'i', 0x18, 0x64, 0x22, 0x02, 0x08, 0x1e]
    );
    let c = commit_request("ai", &[], "r1", 5);
    assert_eq!(
        c,
        [0x0a, 0x02, b'a', b'i', 0x1a, 0x02, b'r', b'1', 0x20, 0x05]
    );
}

#[test]
fn responses_decode() {
    // overall OVER_LIMIT; one status: OVER_LIMIT, limit 30 (unit 1 skipped), remaining 0,
    // reset in 42 s; an unknown fixed64 field is skipped.
    let status = [
        0x08, 0x02, 0x12, 0x04, 0x08, 0x1e, 0x10, 0x01, 0x18, 0x00, 0x22, 0x02, 0x08, 0x2a,
    ];
    let mut buf = vec![0x08, 0x02, 0x12, status.len() as u8];
    buf.extend_from_slice(&status);
    buf.extend_from_slice(&[0x29, 1, 2, 3, 4, 5, 6, 7, 8]);
    let r = response(&buf).unwrap();
    assert_eq!(r.code, Code::OverLimit);
    assert_eq!(
        r.statuses,
        vec![Status {
            code: Code::OverLimit,
            limit: Some(30),
            remaining: 0,
            reset_secs: Some(42),
        }]
    );
    assert_eq!(response(&[0x08, 0x01]).unwrap().code, Code::Ok);
    assert_eq!(response(&[]).unwrap().code, Code::Unknown);
    // Truncated: refused, never a panic.
    assert_eq!(response(&[0x12, 0x05, 0x08]), None);
    assert_eq!(response(&[0xff; 12]), None);
    let r = reserved(&[0x08, 0x01, 0x12, 0x02, b'i', b'd']).unwrap();
    assert_eq!((r.code, r.id.as_str()), (Code::Ok, "id"));
}

#[test]
fn decoding_random_bytes_never_panics() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for len in 0..200 {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let _ = response(&bytes);
        let _ = reserved(&bytes);
    }
}
