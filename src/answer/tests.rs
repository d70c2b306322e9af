//! The hand-written reader against serde's derive code (`reference`): the same answer, texts
//! and usage, or the same refusal, for the recorded answers, for tricky cases written out,
//! and for many generated and mutated answers.

use serde_json::Value;

use super::*;
use crate::testing::Rng;

/// Reads `data` both ways and holds them equal; whether it was read.
fn same(data: &[u8]) -> bool {
    let shown = String::from_utf8_lossy(data);
    let mine = read(data);
    assert_eq!(mine, reference::read(data), "{shown}");
    if let Some(a) = &mine {
        let raws = a.choices.iter().flatten().chain([&a.delta]).flatten();
        for raw in raws {
            assert_eq!(text_of(raw), reference::text_of(raw), "{raw} in {shown}");
        }
    }
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        if let Some(u) = v.get("usage") {
            assert_eq!(
                usage_of_value(u),
                reference::usage_of_value(u),
                "usage of {shown}"
            );
        }
    }
    mine.is_some()
}

fn usage(p: u64, c: u64, t: u64) -> RawUsage {
    RawUsage {
        prompt_tokens: Some(p),
        completion_tokens: Some(c),
        total_tokens: Some(t),
        ..RawUsage::default()
    }
}

#[test]
fn recorded_answers_and_events_read_alike() {
    let jsons = [
        include_str!("../../fixtures/openai/chat.json"),
        include_str!("../../fixtures/openai/chat_tool_call.json"),
        include_str!("../../fixtures/openai/completions.json"),
        include_str!("../../fixtures/openai/responses.json"),
        include_str!("../../fixtures/openai/responses_function_call.json"),
        include_str!("../../fixtures/anthropic/message.json"),
        include_str!("../../fixtures/anthropic/error.json"),
    ];
    for j in jsons {
        assert!(same(j.as_bytes()), "{j}");
    }
    let streams = [
        include_str!("../../fixtures/openai/chat_stream_usage.sse"),
        include_str!("../../fixtures/openai/chat_tool_call_stream.sse"),
        include_str!("../../fixtures/openai/completions_stream.sse"),
        include_str!("../../fixtures/openai/responses_stream.sse"),
        include_str!("../../fixtures/anthropic/stream_text.sse"),
    ];
    let mut events = 0;
    for s in streams {
        for data in s.lines().filter_map(|l| l.strip_prefix("data:")) {
            let data = data.trim_start();
            if data.starts_with('{') {
                assert!(same(data.as_bytes()), "{data}");
                events += 1;
            }
        }
    }
    assert!(events > 20, "{events}");
}

#[test]
fn what_serde_took_and_refused_is_taken_and_refused() {
    let chat = r#"{"model":"m","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#;
    let a = read(chat.as_bytes()).unwrap();
    assert_eq!(a.model.as_deref(), Some("m"));
    assert_eq!(a.usage, Some(usage(1, 2, 3)));
    assert_eq!(a.choices, Some(vec![Some("\"hi\"")]));
    // Accepted, as serde read them.
    let taken: &[(&str, Option<u64>)] = &[
        // The Responses names, and a key spelt with an escape.
        (r#"{"usage":{"input_tokens":5}}"#, Some(5)),
        (r#"{"us\u0061ge":{"prompt_tok\u0065ns":5}}"#, Some(5)),
        // A struct as an array of its fields in order.
        (r#"{"usage":[5,null,null,null,null]}"#, Some(5)),
        (r#"[null,[5,1,6,[2],null],null,null,null]"#, Some(5)),
        (
            r#"{"usage":{"prompt_tokens":18446744073709551615}}"#,
            Some(u64::MAX),
        ),
        (r#"{"usage":{"prompt_tokens":null}}"#, None),
        // Strings that are skipped are not checked for UTF-8 nor for lone surrogates.
        ("{\"id\":\"\\uD800\",\"x\":[\"\u{e9}\"],\"usage\":{}}", None),
        (" \t\n\r{\"usage\":{\"prompt_tokens\":0}} \n", Some(0)),
    ];
    for (body, prompt) in taken {
        assert!(same(body.as_bytes()), "{body}");
        let a = read(body.as_bytes()).unwrap();
        assert_eq!(a.usage.unwrap().prompt_tokens, *prompt, "{body}");
    }
    assert!(
        same(b"{\"id\":\"\xff\"}"),
        "a skipped string is not checked for UTF-8"
    );
    // Refused as a whole, as serde refused them.
    let refused: &[&[u8]] = &[
        br#"{"usage":{"prompt_tokens":1,"input_tokens":2}}"#,
        br#"{"model":"a","model":"b"}"#,
        br#"{"model":null,"model":"b"}"#,
        br#"{"usage":{"prompt_tokens":-0}}"#,
        br#"{"usage":{"prompt_tokens":-5}}"#,
        br#"{"usage":{"prompt_tokens":1.0}}"#,
        br#"{"usage":{"prompt_tokens":1e2}}"#,
        br#"{"usage":{"prompt_tokens":01}}"#,
        br#"{"usage":{"prompt_tokens":18446744073709551616}}"#,
        br#"{"usage":{"prompt_tokens":"5"}}"#,
        br#"{"usage":[5,null,null,null]}"#,
        br#"{"usage":[5,null,null,null,null,null]}"#,
        br#"{"usage":[5,null,null,null,null,]}"#,
        br#"{"choices":[{"message":{"content":"x"}},]}"#,
        br#"{"choices":{}}"#,
        br#"{"model":"\uD800"}"#,
        br#"{"model":"\uDC00\uD800"}"#,
        br#"{"model":7}"#,
        b"{\"model\":\"\xff\"}",
        b"{\"\xff\":1}",
        b"{\"delta\":\"\xff\"}",
        br#"{"usage":{},}"#,
        br#"{"usage":{}} x"#,
        b"{\"usage\":{}}\x0c",
        br#"{"choices":[{"text":"a"}],"choices":[]}"#,
    ];
    for body in refused {
        assert!(!same(body), "{}", String::from_utf8_lossy(body));
    }
}

#[test]
fn a_choice_takes_its_message_then_its_delta_then_its_text() {
    let cases = [
        (
            r#"{"message":{"content":"m"},"delta":{"content":"d"},"text":"t"}"#,
            Some("\"m\""),
        ),
        // A message without content hides the delta's.
        (
            r#"{"message":{},"delta":{"content":"d"},"text":"t"}"#,
            Some("\"t\""),
        ),
        (r#"{"message":null,"delta":{"content":"d"}}"#, Some("\"d\"")),
        (r#"{"text":[1, {"a":2}]}"#, Some("[1, {\"a\":2}]")),
        (r#"{"message":{"content":null},"text":null}"#, None),
    ];
    for (choice, text) in cases {
        let body = format!(r#"{{"choices":[{choice}]}}"#);
        assert!(same(body.as_bytes()), "{body}");
        assert_eq!(read(body.as_bytes()).unwrap().choices, Some(vec![text]));
    }
}

#[test]
fn texts_of_strings_and_parts_read_alike() {
    let cases = [
        r#""plain""#,
        r#""esc \" \\ \/ \b \f \n \r \t \u00e9 \uD83D\uDE00""#,
        r#""\uD800""#,
        r#""\uD800\u0041""#,
        r#""\uD800\n""#,
        r#"[{"type":"text","text":"a"},{"text":null},{},{"text":"b"},["c"]]"#,
        r#"[{"text":1}]"#,
        r#"[{"text":"a","text":"b"}]"#,
        r#"[]"#,
        r#"[,]"#,
        r#"7"#,
        r#"{"text":"a"}"#,
        r#""a" "b""#,
    ];
    for raw in cases {
        assert_eq!(text_of(raw), reference::text_of(raw), "{raw}");
    }
    assert_eq!(
        text_of(cases[1]).unwrap(),
        "esc \" \\ / \u{8} \u{c} \n \r \t é 😀"
    );
    // A part written as an array of its one field is read too.
    assert_eq!(text_of(cases[5]).as_deref(), Some("abc"));
}

/// Generated answers: the fields the reader reads, with the values they take and the ones
/// they refuse, in objects and in arrays, between unknown fields and whitespace.
pub(super) struct Gen(pub(super) Rng);

impl Gen {
    pub(super) fn ws(&mut self) -> &'static str {
        match self.0.below(12) {
            0 => " ",
            1 => "\n ",
            2 => "\t",
            3 => "\r\n",
            _ => "",
        }
    }

    pub(super) fn string(&mut self) -> String {
        let parts = [
            "hi",
            "é😀",
            r#"\n"#,
            r#"\""#,
            r#"\\"#,
            r#"\/"#,
            r#"\u00e9"#,
            r#"\uD83D\uDE00"#,
            r#"\uD800"#,
            r#"\uDC00"#,
            r#"\uD800\u0041"#,
            r#"\uD800\n"#,
            r#"\uD83D\uD83D"#,
            r#"\x"#,
            r#"\u12"#,
            "\u{1}",
            "\u{7f}",
            "\u{ff}",
            "plain text ",
        ];
        let mut s = String::from("\"");
        for _ in 0..self.0.below(4) {
            s.push_str(self.0.pick(&parts));
        }
        s.push('"');
        s
    }

    pub(super) fn count(&mut self) -> String {
        let counts = [
            "0",
            "7",
            "123",
            "01",
            "-0",
            "-5",
            "1.0",
            "1e2",
            "2E-1",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999999",
            "null",
            "\"5\"",
            "true",
            "[]",
            "{}",
            "7x",
        ];
        if !self.0.one_in(3) {
            return self.0.below(100_000).to_string();
        }
        self.0.pick(&counts).to_string()
    }

    /// Any JSON value (or, rarely, not one), for raw fields and unknown ones.
    pub(super) fn any(&mut self, depth: usize) -> String {
        match self.0.below(if depth > 3 { 5 } else { 9 }) {
            0 | 1 => self.string(),
            2 => self.count(),
            3 => self
                .0
                .pick(&["null", "true", "false", "-1.5e3", "nul", "tru"])
                .to_string(),
            4 => format!("\"{}\"", "long text ".repeat(self.0.below(40))),
            5 | 6 => {
                let n = self.0.below(4);
                let items: Vec<String> = (0..n)
                    .map(|_| {
                        if self.0.one_in(2) {
                            format!(r#"{{"type":"text","text":{}}}"#, self.string())
                        } else {
                            self.any(depth + 1)
                        }
                    })
                    .collect();
                format!("[{}]", items.join(","))
            }
            _ => {
                let n = self.0.below(4);
                let keys = [
                    "\"a\"",
                    "\"text\"",
                    "\"k\\u0065y\"",
                    "\"\u{ff}\"",
                    "\"\\uD800\"",
                ];
                let items: Vec<String> = (0..n)
                    .map(|_| format!("{}:{}", self.0.pick(&keys), self.any(depth + 1)))
                    .collect();
                format!("{{{}}}", items.join(","))
            }
        }
    }

    /// A struct: an object of some of its fields (by any name, now and then twice, with an
    /// escape, or unknown ones between), or an array of values in order.
    pub(super) fn record(
        &mut self,
        names: &[&str],
        value: &mut dyn FnMut(&mut Gen, usize) -> String,
    ) -> String {
        if self.0.one_in(8) {
            let n = names.len() + self.0.below(3);
            let n = n.saturating_sub(1);
            let items: Vec<String> = (0..n)
                .map(|i| format!("{}{}", self.ws(), value(self, i % names.len())))
                .collect();
            return format!("[{}{}]", items.join(","), self.ws());
        }
        // Each field now and then, in order, with unknown ones between; rarely one twice.
        let mut fields: Vec<usize> = (0..names.len()).filter(|_| self.0.one_in(2)).collect();
        if self.0.one_in(6) {
            fields.push(self.0.below(names.len()));
        }
        let mut items = Vec::new();
        for i in fields {
            if self.0.one_in(4) {
                let key = self
                    .0
                    .pick(&["id", "object", "index", "x\\u0041", "finish_reason"]);
                items.push(format!("\"{key}\":{}", self.any(0)));
            }
            let mut key = names[i].to_string();
            if self.0.one_in(10) {
                key = key.replacen('e', "\\u0065", 1);
            }
            items.push(format!(
                "{}\"{key}\"{}:{}{}",
                self.ws(),
                self.ws(),
                self.ws(),
                value(self, i)
            ));
        }
        format!("{{{}{}}}", items.join(","), self.ws())
    }

    pub(super) fn maybe(&mut self, f: &mut dyn FnMut(&mut Gen) -> String) -> String {
        match self.0.below(12) {
            0 => "null".into(),
            1 => self.any(0),
            _ => f(self),
        }
    }

    fn details(&mut self, name: &'static str) -> String {
        self.maybe(&mut |g| g.record(&[name], &mut |g, _| g.count()))
    }

    fn usage(&mut self) -> String {
        self.maybe(&mut |g| {
            // Chat's names, the Responses API's, or both (a field given twice).
            let chat = [
                "prompt_tokens",
                "completion_tokens",
                "total_tokens",
                "prompt_tokens_details",
                "completion_tokens_details",
            ];
            let responses = [
                "input_tokens",
                "output_tokens",
                "total_tokens",
                "input_tokens_details",
                "output_tokens_details",
            ];
            let both = [&chat[..], &responses[..]].concat();
            let names = match g.0.below(5) {
                0 => &both[..],
                1 | 2 => &chat[..],
                _ => &responses[..],
            };
            g.record(names, &mut |g, i| match i % 5 {
                0..=2 => g.count(),
                3 => g.details("cached_tokens"),
                _ => g.details("reasoning_tokens"),
            })
        })
    }

    fn content(&mut self) -> String {
        self.maybe(&mut |g| {
            g.record(&["content", "role"], &mut |g, i| {
                if i == 0 {
                    g.any(0)
                } else {
                    "\"assistant\"".into()
                }
            })
        })
    }

    fn choices(&mut self) -> String {
        self.maybe(&mut |g| {
            let n = g.0.below(4);
            let items: Vec<String> = (0..n)
                .map(|_| {
                    g.record(&["message", "delta", "text"], &mut |g, i| match i {
                        0 | 1 => g.content(),
                        _ => g.any(0),
                    })
                })
                .collect();
            format!("[{}]", items.join(","))
        })
    }

    fn answer(&mut self) -> String {
        let names = ["model", "usage", "choices", "response", "delta"];
        self.record(&names, &mut |g, i| match i {
            0 => g.maybe(&mut |g| g.string()),
            1 => g.usage(),
            2 => g.choices(),
            3 => g.maybe(&mut |g| {
                g.record(&["model", "usage"], &mut |g, i| {
                    if i == 0 {
                        g.string()
                    } else {
                        g.usage()
                    }
                })
            }),
            _ => g.any(0),
        })
    }
}

#[test]
fn generated_and_mutated_answers_never_disagree() {
    let mut g = Gen(Rng(0x2545_f491_4f6c_dd1d));
    let alphabet = b"{}[]:,\"\\ \t\n0123456789-.eEnul\x00\x1f\xc3\xa9\xffu";
    let (mut read_ok, mut with_usage, mut mutated_ok) = (0, 0, 0);
    for _ in 0..20_000 {
        let doc = g.answer();
        if same(doc.as_bytes()) {
            read_ok += 1;
            if read(doc.as_bytes()).unwrap().usage.is_some() {
                with_usage += 1;
            }
        }
        let mut b = doc.into_bytes();
        for _ in 0..1 + g.0.below(2) {
            g.0.mutate(&mut b, alphabet);
        }
        if same(&b) {
            mutated_ok += 1;
        }
    }
    eprintln!("read {read_ok}, with usage {with_usage}, mutated and read {mutated_ok}");
    // Both sides of every rule were exercised: many answers read, many refused.
    assert!(read_ok > 2_000 && read_ok < 18_000, "{read_ok}");
    assert!(with_usage > 500, "{with_usage}");
    assert!(mutated_ok > 500, "{mutated_ok}");
}

#[test]
fn generated_texts_read_alike() {
    let mut g = Gen(Rng(0x1234_5678_9abc_def1));
    let mut taken = 0;
    for _ in 0..20_000 {
        let raw = g.any(0);
        let mine = text_of(&raw);
        assert_eq!(mine, reference::text_of(&raw), "{raw}");
        taken += usize::from(mine.is_some());
    }
    assert!(taken > 2_000, "{taken}");
}
