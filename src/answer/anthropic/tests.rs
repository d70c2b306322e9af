//! Anthropic's readers and the error bodies' against serde's derive code (`reference`): the
//! same answer, event, message and usage, or the same refusal, for the recorded answers and
//! events, for cases written out, and for generated and mutated ones.

use serde_json::Value;

use super::super::reference;
use super::super::tests::Gen;
use super::*;
use crate::answer::{anthropic_usage_of_value, error_message};
use crate::testing::Rng;

/// Reads `data` every way both readers read it and holds them equal; what was read (an
/// answer, an event, an error's message).
fn same(data: &[u8]) -> (bool, bool, bool) {
    let shown = String::from_utf8_lossy(data);
    let m = message(data);
    assert_eq!(m, reference::anthropic_message(data), "message {shown}");
    let e = event(data);
    assert_eq!(e, reference::anthropic_event(data), "event {shown}");
    let err = error_message(data);
    assert_eq!(err, reference::error_message(data), "error {shown}");
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        let usages = [v.get("usage"), v.pointer("/message/usage")];
        for u in usages.into_iter().flatten() {
            assert_eq!(
                anthropic_usage_of_value(u),
                reference::anthropic_usage_of_value(u),
                "usage {u} of {shown}"
            );
        }
    }
    (m.is_some(), e.is_some(), err.is_some())
}

#[test]
fn recorded_answers_events_and_errors_read_alike() {
    for j in [
        include_str!("../../../fixtures/anthropic/message.json"),
        include_str!("../../../fixtures/anthropic/message_tool_use.json"),
    ] {
        assert!(same(j.as_bytes()).0, "{j}");
    }
    let error = include_str!("../../../fixtures/anthropic/error.json");
    assert!(same(error.as_bytes()).2, "{error}");
    let mut events = 0;
    for s in [
        include_str!("../../../fixtures/anthropic/stream_text.sse"),
        include_str!("../../../fixtures/anthropic/stream_tool_use.sse"),
        include_str!("../../../fixtures/anthropic/stream_error.sse"),
        include_str!("../../../fixtures/openai/chat_stream_usage.sse"),
    ] {
        for data in s.lines().filter_map(|l| l.strip_prefix("data:")) {
            same(data.trim_start().as_bytes());
            events += 1;
        }
    }
    assert!(events > 20, "{events}");
}

#[test]
fn what_serde_took_and_refused_is_taken_and_refused() {
    let start = br#"{"type":"message_start","message":{"model":"claude","usage":{"input_tokens":5,"cache_read_input_tokens":2},"content":[]}}"#;
    assert!(same(start).1);
    let e = event(start).unwrap();
    assert_eq!(e.kind.as_deref(), Some("message_start"));
    let m = e.message.unwrap();
    assert_eq!(m.model.as_deref(), Some("claude"));
    assert_eq!(
        m.usage,
        Some(AnthropicUsage {
            input_tokens: Some(5),
            cache_read_input_tokens: Some(2),
            ..AnthropicUsage::default()
        })
    );
    let taken: &[&[u8]] = &[
        br#"{"type":"content_block_delta","delta":{"type":"text_delta","text":"Hi"}}"#,
        br#"{"type":"content_block_delta","delta":{"partial_json":"{\"a\""}}"#,
        br#"["message_delta",null,[null,7,null,null],[null,null,null,"end_turn"]]"#,
        br#"{"content":[{"type":"text","text":"a"},{"type":"thinking","thinking":"b"},["c",null]]}"#,
        br#"{"error":{"type":"overloaded_error","message":"Overloaded"},"type":"error"}"#,
        br#"[["m"]]"#,
    ];
    for body in taken {
        let (m, e, err) = same(body);
        assert!(m || e || err, "{}", String::from_utf8_lossy(body));
    }
    assert_eq!(error_message(taken[4]).as_deref(), Some("Overloaded"));
    assert_eq!(error_message(taken[5]).as_deref(), Some("m"));
    // Each refused by the readers that refuse it (an answer, an event, an error's message).
    type Read = (bool, bool, bool);
    let refused: &[(&[u8], Read)] = &[
        (
            br#"{"usage":{"input_tokens":1},"usage":{}}"#,
            (false, false, false),
        ),
        (br#"{"usage":{"input_tokens":-1}}"#, (false, false, false)),
        (br#"{"type":7}"#, (true, false, false)),
        (br#"{"content":[{"text":1}]}"#, (false, true, false)),
        (br#"{"content":{}}"#, (false, true, false)),
        (
            br#"{"delta":{"text":"a","text":"b"}}"#,
            (true, false, false),
        ),
        (br#"{"message":{"model":1}}"#, (true, false, false)),
        (br#"{"error":null}"#, (true, true, false)),
        (br#"{"error":{}}"#, (true, true, false)),
        (br#"{"error":{"message":null}}"#, (true, true, false)),
        (br#"{"error":{"message":"a"}} x"#, (false, false, false)),
        (br#"{}"#, (true, true, false)),
    ];
    for (body, read) in refused {
        assert_eq!(same(body), *read, "{}", String::from_utf8_lossy(body));
    }
}

impl Gen {
    fn anthropic_usage(&mut self) -> String {
        let names = [
            "input_tokens",
            "output_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
        ];
        self.maybe(&mut |g| g.record(&names, &mut |g, _| g.count()))
    }

    fn message(&mut self) -> String {
        self.record(&["model", "usage", "content"], &mut |g, i| match i {
            0 => g.maybe(&mut |g| g.string()),
            1 => g.anthropic_usage(),
            _ => g.maybe(&mut |g| {
                let n = g.0.below(4);
                let blocks: Vec<String> = (0..n)
                    .map(|_| {
                        g.record(&["text", "thinking", "type"], &mut |g, _| {
                            g.maybe(&mut |g| g.string())
                        })
                    })
                    .collect();
                format!("[{}]", blocks.join(","))
            }),
        })
    }

    fn event(&mut self) -> String {
        self.record(
            &["type", "message", "usage", "delta"],
            &mut |g, i| match i {
                0 => g.maybe(&mut |g| g.string()),
                1 => g.maybe(&mut |g| g.message()),
                2 => g.anthropic_usage(),
                _ => g.maybe(&mut |g| {
                    let names = ["text", "partial_json", "thinking", "stop_reason"];
                    g.record(&names, &mut |g, _| g.maybe(&mut |g| g.string()))
                }),
            },
        )
    }

    fn error(&mut self) -> String {
        self.record(&["error", "type"], &mut |g, i| match i {
            0 => g.maybe(&mut |g| {
                g.record(&["message", "type"], &mut |g, _| {
                    g.maybe(&mut |g| g.string())
                })
            }),
            _ => g.string(),
        })
    }
}

#[test]
fn generated_and_mutated_answers_events_and_errors_never_disagree() {
    let mut g = Gen(Rng(0x5851_f42d_4c95_7f2d));
    let alphabet = b"{}[]:,\"\\ \t\n0123456789-.eEnul\x00\x1f\xc3\xa9\xffu";
    let mut read = [0usize; 3];
    for n in 0..30_000 {
        let doc = match n % 3 {
            0 => g.message(),
            1 => g.event(),
            _ => g.error(),
        };
        let (m, e, err) = same(doc.as_bytes());
        for (count, was) in read.iter_mut().zip([m, e, err]) {
            *count += usize::from(was);
        }
        let mut b = doc.into_bytes();
        g.0.mutate(&mut b, alphabet);
        same(&b);
    }
    eprintln!(
        "read: answers {}, events {}, errors {}",
        read[0], read[1], read[2]
    );
    // Both sides of the rules were exercised: many read, many refused.
    for count in read {
        assert!(count > 300 && count < 29_000, "{read:?}");
    }
}
