//! The scan against serde_json: whatever the scan accepts, serde_json accepts with the same
//! members and spans; whatever serde_json refuses, the scan refuses too (and then serde_json
//! gives its error, as before).

use super::*;
use crate::body::{BodyError, JsonBody};
use crate::testing::Rng;
use serde::de::{MapAccess, Visitor};
use serde_json::value::RawValue;

/// The same answer both ways (`Err` compared by message), and whether the scan answered.
/// Both are also held to serde_json's own spans (`reference`).
fn same(input: &[u8]) -> bool {
    let fast = JsonBody::parse(input).map(|b| b.spans());
    let slow = JsonBody::without_scan(input).map(|b| b.spans());
    assert_eq!(fast, slow, "{:?}", String::from_utf8_lossy(input));
    let shown = String::from_utf8_lossy(input);
    match (&slow, reference(input)) {
        (Ok((members, _)), Some(Ok(r))) => assert_eq!(members, &r, "{shown:?}"),
        (Err(BodyError::Invalid(e)), Some(Err(r))) => assert_eq!(e, &r, "{shown:?}"),
        (Err(BodyError::DuplicateKey(_)), Some(Ok(_)))
        | (Err(BodyError::Empty), Some(Err(_)))
        | (Err(BodyError::NotUtf8), None) => {}
        (s, r) => panic!("{s:?} against serde_json's {r:?} for {shown:?}"),
    }
    object(input).is_some()
}

/// Each member's key and value span.
type Spans = Vec<(String, usize, usize)>;

/// The members and spans serde_json gives itself with its `raw_value` feature (test builds
/// only: the shipped module goes without it), or its error; `None` when not UTF-8.
fn reference(input: &[u8]) -> Option<Result<Spans, String>> {
    struct Raw;
    impl<'de> Visitor<'de> for Raw {
        type Value = Vec<(String, &'de RawValue)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(kv) = map.next_entry()? {
                out.push(kv);
            }
            Ok(out)
        }
    }
    let text = std::str::from_utf8(input).ok()?;
    let mut de = serde_json::Deserializer::from_str(text);
    let members = serde::Deserializer::deserialize_map(&mut de, Raw)
        .and_then(|m| de.end().map(|()| m))
        .map_err(|e| e.to_string());
    let base = text.as_ptr() as usize;
    Some(members.map(|m| {
        m.into_iter()
            .map(|(k, v)| {
                let start = v.get().as_ptr() as usize - base;
                (k, start, start + v.get().len())
            })
            .collect()
    }))
}

#[test]
fn valid_bodies_take_the_fast_path_with_the_same_members() {
    let long = "x".repeat(100_000);
    let cases: Vec<String> = vec![
        "{}".into(),
        " \n{ }\t\r\n".into(),
        r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#.into(),
        format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{long}"}}]}}"#),
        r#"{"a":null,"b":true,"c":false,"d":-0,"e":0.5,"f":1e10,"g":-1.25E-3,"h":123456789012345678901234567890}"#.into(),
        r#"{"s":"esc \" \\ \/ \b \f \n \r \t \u00e9 \uD83D\uDE00 \uDEAD","t":"caf\u00e9 ✓ 😀"}"#.into(),
        format!(r#"{{"deep":{}{}}}"#, "[".repeat(300), "]".repeat(300)),
        r#"{ "x" : { "y" : [ 1 , { } , [ ] , "" , { "z" : null } ] } , "w" : [ ] }"#.into(),
        r#"{"model":"a","model":"b"}"#.into(),
        "{\"ключ\":\"значение\",\"k\":\"\u{7f}\"}".into(),
    ];
    for c in &cases {
        assert!(same(c.as_bytes()), "the scan should answer: {c:.80}");
    }
}

#[test]
fn invalid_bodies_are_refused_the_same_way() {
    let cases: &[&[u8]] = &[
        b"",
        b"   ",
        b"[]",
        b"\"s\"",
        b"1",
        b"{",
        b"{\"a\"",
        b"{\"a\":",
        b"{\"a\":1",
        b"{\"a\":1,}",
        b"{\"a\":1 \"b\":2}",
        b"{a:1}",
        b"{\"a\" 1}",
        b"{\"a\":01}",
        b"{\"a\":-}",
        b"{\"a\":1.}",
        b"{\"a\":.5}",
        b"{\"a\":1e}",
        b"{\"a\":1e+}",
        b"{\"a\":+1}",
        b"{\"a\":1.5.3}",
        b"{\"a\":tru}",
        b"{\"a\":truex}",
        b"{\"a\":nul}",
        b"{\"a\":NaN}",
        b"{\"a\":[1,]}",
        b"{\"a\":[1 2]}",
        b"{\"a\":{\"b\"}}",
        b"{\"a\":{\"b\":1,}}",
        b"{\"a\":{1:2}}",
        b"{\"a\":[}",
        b"{\"a\":{]}",
        b"{\"a\":\"\\x\"}",
        b"{\"a\":\"\\u12G4\"}",
        b"{\"a\":\"\\u12\"}",
        b"{\"a\":\"tab\there\"}",
        b"{\"a\":\"nl\nhere\"}",
        b"{\"a\":\"unterminated}",
        b"{\"a\":1}}",
        b"{\"a\":1} x",
        b"{\"a\":1}\x0c",
        b"{\"a\":\"\xff\"}",
        b"{\"a\":\"\xc3\"}",
        b"{\"k\\u0065y\":1}",
        b"{\"mod\\u0065l\":\"a\",\"model\":\"b\"}",
        b"{\"a\":1,\"a\\\"\":2}",
        b"\x0c{}",
    ];
    for c in cases {
        same(c);
    }
}

#[test]
fn mutated_bodies_never_disagree() {
    let seeds: Vec<Vec<u8>> = vec![
        include_bytes!("../../fixtures/openai/chat.json").to_vec(),
        include_bytes!("../../fixtures/openai/responses.json").to_vec(),
        include_bytes!("../../fixtures/openai/chat_tool_call.json").to_vec(),
        include_bytes!("../../fixtures/anthropic/message.json").to_vec(),
        br#"{"model":"m","stream":true,"stream_options":{"include_usage":false},"messages":[{"role":"user","content":"a \"b\" \\ c \u00e9"}],"n":-1.5e+3,"x":[true,false,null,{}]}"#.to_vec(),
    ];
    let alphabet = b"{}[]:,\"\\ \t\n\r0123456789-+.eEtrufalsn\x00\x1f\x7f\xc3\xa9u";
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut fast = 0;
    for seed in &seeds {
        same(seed);
        for _ in 0..3000 {
            let mut b = seed.clone();
            for _ in 0..1 + rng.below(3) {
                rng.mutate(&mut b, alphabet);
            }
            if same(&b) {
                fast += 1;
            }
        }
    }
    // Many mutations stay valid: the fast path was exercised, not only the fallback.
    assert!(fast > 500, "{fast}");
}

#[test]
fn non_ascii_and_invalid_utf8_anywhere_in_a_string() {
    // Offsets that fall in the 64-byte skip, the 16-byte one and the byte loop.
    for at in [
        0, 1, 15, 16, 17, 31, 63, 64, 65, 100, 127, 128, 129, 150, 160,
    ] {
        for ch in ["é", "✓", "😀", "\u{7f}"] {
            let mut s = "x".repeat(160);
            s.insert_str(at, ch);
            let body = format!(r#"{{"k":"{s}","é":1}}"#);
            let (text, members) = object(body.as_bytes()).expect("valid UTF-8 is scanned");
            assert_eq!(text, body);
            let keys: Vec<_> = members.iter().map(|m| m.key).collect();
            assert_eq!(keys, ["k", "é"]);
            assert!(same(body.as_bytes()));
        }
        for bad in [&b"\xff"[..], b"\xc3", b"\xed\xa0\x80", b"\xf0\x9f\x98"] {
            let mut body = br#"{"k":""#.to_vec();
            body.extend("x".repeat(at).as_bytes());
            body.extend(bad);
            body.extend("x".repeat(160 - at).as_bytes());
            body.extend(br#""}"#);
            assert!(object(&body).is_none(), "not UTF-8 at {at}");
            assert!(!same(&body));
            assert!(matches!(
                JsonBody::parse(&body),
                Err(crate::body::BodyError::NotUtf8)
            ));
        }
    }
    // An ASCII body is taken as it is.
    let body = format!(r#"{{"k":"{}"}}"#, "x".repeat(1000));
    assert_eq!(object(body.as_bytes()).map(|(t, _)| t), Some(body.as_str()));
}

#[test]
fn an_ascii_body_is_known_to_be_ascii_without_a_second_pass() {
    // Long and short strings, so the special byte that ends each falls in every part of the
    // skip; an ASCII body must never be sent to the UTF-8 check.
    for n in [0, 1, 15, 16, 17, 63, 64, 65, 1000, 100_000] {
        let filler = "x".repeat(n);
        let body =
            format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{filler}"}}],"n":1}}"#);
        let mut c = Cursor {
            b: body.as_bytes(),
            i: 0,
            ascii: true,
        };
        c.value(&mut Vec::new()).unwrap();
        assert_eq!(c.i, body.len());
        assert!(c.ascii, "{n}");
        let body = format!(r#""{filler}é{filler}""#);
        let mut c = Cursor {
            b: body.as_bytes(),
            i: 0,
            ascii: true,
        };
        c.string().unwrap();
        assert!(!c.ascii, "{n}");
    }
}

#[test]
fn every_byte_at_every_lane_ends_the_skip_exactly() {
    // The same for the wasm build's simd128 blocks and long skips (the unit tests also run
    // there, under Node's V8) and the native words, in a run longer than two long skips,
    // after plain ASCII and after non-ASCII, from four alignments of a block: every byte
    // value at each offset of a block and around the long skips' edges, and the bytes at
    // the edges of each class (controls, quote, backslash, ASCII, high) at every offset.
    let edges = [63, 64, 65, 100, 319, 320, 321, 575, 576, 599];
    let mut cases: Vec<(u8, usize)> = (0..=255u8)
        .flat_map(|b| (0..16).chain(edges).map(move |at| (b, at)))
        .collect();
    let near = [
        0x00, 0x1f, 0x20, 0x21, 0x22, 0x23, 0x5b, 0x5c, 0x5d, 0x7f, 0x80, 0xff,
    ];
    cases.extend(near.iter().flat_map(|&b| (0..600).map(move |at| (b, at))));
    for lead in [b'x', 0xC3] {
        for &(b, at) in &cases {
            let mut run = vec![lead; 700];
            run[at] = b;
            for from in [0, 1, 7, 15] {
                if from > at {
                    continue;
                }
                let (end, ascii) = lanes::skip(&run, from);
                let plain_lead = lead.is_ascii();
                if special(b) {
                    assert_eq!(end, at, "byte {b:#04x} at {at} from {from}");
                    let before = at > from;
                    assert_eq!(ascii, plain_lead || !before, "byte {b:#04x} at {at}");
                } else {
                    assert_eq!(end, run.len(), "byte {b:#04x} at {at} from {from}");
                    assert_eq!(ascii, plain_lead && b.is_ascii(), "byte {b:#04x} at {at}");
                }
            }
        }
    }
    // A byte at or above 0x80 after the one that ends the run is not the run's.
    let mut run = vec![b'x'; 700];
    for at in [0, 5, 15, 16, 300, 400] {
        run[at] = b'"';
        run[at + 1] = 0xC3;
        assert_eq!(lanes::skip(&run, 0), (at, true), "{at}");
        run[at] = b'x';
        run[at + 1] = b'x';
    }
}

#[test]
fn code_takes_the_fast_path_with_the_same_members() {
    // An escaped line break every line and escaped quotes: the long skip never applies.
    let line = "    let name = format!(\"{}-{}\", key, value);\n\tdone();\r\n";
    for n in [1, 3, 100, 3000] {
        let code = line.repeat(n);
        let body =
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": code}]})
                .to_string();
        assert!(same(body.as_bytes()), "{n} lines");
    }
}

/// A string read a byte at a time from its opening quote at `i`, as the scan read it before
/// escapes were passed over in blocks: the index after its closing quote, whether it had an
/// escape, and whether its content is ASCII; `None` where the scan must refuse it.
fn string_by_bytes(b: &[u8], i: usize) -> Option<(usize, bool, bool)> {
    let (mut i, mut escaped, mut ascii) = (i + 1, false, true);
    (*b.get(i - 1)? == b'"').then_some(())?;
    loop {
        let c = *b.get(i)?;
        i += 1;
        match c {
            b'"' => return Some((i, escaped, ascii)),
            b'\\' => {
                escaped = true;
                match *b.get(i)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 1,
                    b'u' => {
                        let hex = b.get(i + 1..i + 5)?;
                        hex.iter().all(u8::is_ascii_hexdigit).then_some(())?;
                        i += 5;
                    }
                    _ => return None,
                }
            }
            0..=0x1f => return None,
            _ => ascii &= c.is_ascii(),
        }
    }
}

/// The cursor's reading of the string at `i`, in the same terms.
fn string_by_cursor(b: &[u8], i: usize) -> Option<(usize, bool, bool)> {
    let mut c = Cursor { b, i, ascii: true };
    let escaped = c.string()?;
    Some((c.i, escaped, c.ascii))
}

#[test]
fn escapes_at_every_offset_are_read_as_byte_by_byte() {
    // One escape (valid, invalid, or cut by the body's end) at every offset of a long
    // string, after ASCII and after non-ASCII content, from every alignment of a block: the
    // wasm build passes over escapes inside its blocks, and where one crosses a block's
    // edge it goes on after it.
    // (The last two: escapes of text that is not ASCII back to back, then bytes that only
    // look like the start of another.)
    let pieces: [&[u8]; 18] = [
        b"\\n",
        b"\\\"",
        b"\\\\",
        b"\\/",
        b"\\b",
        b"\\f",
        b"\\r",
        b"\\t",
        b"\\u00e9",
        b"\\uD83D",
        b"\\uABCDx",
        b"\\\\\"",
        b"\\x",
        b"\\u12G4",
        b"\\u12",
        b"\\\n",
        b"\\u00e9\\u4F60xuz",
        b"\\uD83D\\uDE00u12G",
    ];
    for lead in [&b"x"[..], "é".as_bytes()] {
        let content: Vec<u8> = lead.iter().copied().cycle().take(80).collect();
        for piece in pieces {
            for at in (0..=80).step_by(lead.len()) {
                for pad in 0..16 {
                    let mut s = vec![b' '; pad];
                    s.push(b'"');
                    s.extend(&content[..at]);
                    s.extend(piece);
                    s.extend(&content[at..]);
                    let whole = [&s[..], b"\"}"].concat();
                    assert_eq!(
                        string_by_cursor(&whole, pad),
                        string_by_bytes(&whole, pad),
                        "{:?}",
                        String::from_utf8_lossy(&whole)
                    );
                    // Cut right after the piece: an escape at the body's end.
                    let cut = &s[..pad + 1 + at + piece.len()];
                    assert_eq!(string_by_cursor(cut, pad), string_by_bytes(cut, pad));
                }
            }
        }
    }
}

#[test]
fn strings_dense_in_escapes_are_read_as_byte_by_byte() {
    // Random strings of plain runs, non-ASCII, and escapes back to back (valid mostly,
    // sometimes invalid or a control character), long enough for many blocks.
    let parts: [&[u8]; 14] = [
        b"x",
        b"abc",
        b"0123456789abcdef",
        b"\xc3\xa9",
        b"\\n",
        b"\\\"",
        b"\\\\",
        b"\\t",
        b"\\u00e9",
        b"\\uFFFF",
        b"\\u0G00",
        b"\\q",
        b"\n",
        b"\\",
    ];
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut whole_strings = 0;
    for _ in 0..20_000 {
        let mut s = vec![b' '; rng.below(16)];
        let pad = s.len();
        s.push(b'"');
        let n = rng.below(60);
        for _ in 0..n {
            // The invalid parts (the last four) rarely, so most strings are whole.
            let k = if rng.below(40) == 0 {
                rng.below(14)
            } else {
                rng.below(10)
            };
            s.extend(parts[k]);
        }
        s.extend(b"\" }");
        let got = string_by_cursor(&s, pad);
        assert_eq!(
            got,
            string_by_bytes(&s, pad),
            "{:?}",
            String::from_utf8_lossy(&s)
        );
        whole_strings += usize::from(got.is_some());
    }
    assert!(whole_strings > 5_000, "{whole_strings}");
}

#[test]
fn a_backslash_before_every_byte_is_read_as_byte_by_byte() {
    // Only JSON's escapes may be passed over: every byte after a backslash, at the offsets
    // around a block's edges, from four alignments.
    for c in 0..=255u8 {
        for at in 0..34 {
            for pad in [0, 1, 7, 15] {
                let mut s = vec![b' '; pad];
                s.push(b'"');
                s.extend(std::iter::repeat_n(b'x', at));
                s.extend([b'\\', c]);
                s.extend(b"0123456789abcdef0123456789\"}");
                assert_eq!(
                    string_by_cursor(&s, pad),
                    string_by_bytes(&s, pad),
                    "{c:#04x} at {at}"
                );
            }
        }
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[test]
fn the_short_escapes_and_only_they_are_passed_over_in_blocks() {
    // The wasm build's `escapes` passes over `\"`, `\\`, `\/`, `\b`, `\f`, `\n`, `\r`,
    // `\t` itself, and leaves every other byte after a backslash to the caller.
    for c in 0..=255u8 {
        let mut s = vec![b'\\', c];
        s.extend([b'x'; 40]);
        let (i, ascii) = lanes::escapes(&s, 0);
        if b"\"\\/bfnrt".contains(&c) {
            assert!(i > 2 && ascii, "{c:#04x}: {i}");
        } else {
            assert_eq!(i, 0, "{c:#04x}");
        }
    }
}
