//! Helpers shared by the translators' tests (feeding a reader at every split, reading what
//! it wrote back as a client would), and the round trip of a conversation through both
//! request translators.

use serde_json::{json, Map, Value};

use crate::protocol::{Answering, ApiKind, Reader};

/// Feeds the chunks, then ends the answer: every byte the client gets.
pub fn feed(r: &mut dyn Reader, chunks: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in chunks {
        match r.push(c) {
            Some(b) => out.extend(b),
            None => out.extend_from_slice(c),
        }
    }
    if let Some(tail) = r.finish() {
        out.extend(tail);
    }
    out
}

/// The answer fed whole, then cut in two at every byte: the client must get the same bytes
/// (and the reader the same usage) however the network splits it.
pub fn at_every_split(
    bytes: &[u8],
    make: &dyn Fn() -> Box<dyn Reader>,
) -> (Vec<u8>, Box<dyn Reader>) {
    let mut whole = make();
    let want = feed(whole.as_mut(), &[bytes]);
    for cut in 0..=bytes.len() {
        let (a, b) = bytes.split_at(cut);
        let mut r = make();
        let got = feed(r.as_mut(), &[a, b]);
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "split at {cut}"
        );
        assert_eq!(r.usage(), whole.usage(), "usage, split at {cut}");
        assert_eq!(r.model(), whole.model(), "model, split at {cut}");
    }
    (want, whole)
}

pub fn answering(kind: ApiKind, status: u32, sse: bool, drop_usage_event: bool) -> Answering {
    Answering {
        kind,
        status,
        now_s: 1_700_000_000,
        sse,
        drop_usage_event,
        collect_text: true,
    }
}

/// The events of a stream: (`event:` name, parsed `data:`); `[DONE]` as a string.
pub fn events(bytes: &[u8]) -> Vec<(Option<String>, Value)> {
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let mut out = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut name = None;
        let mut data = String::new();
        for line in block.lines() {
            if let Some(n) = line.strip_prefix("event: ") {
                name = Some(n.to_string());
            } else if let Some(d) = line.strip_prefix("data: ") {
                data.push_str(d);
            }
        }
        let value = serde_json::from_str(&data).unwrap_or(Value::String(data));
        out.push((name, value));
    }
    out
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("not an object"),
    }
}

#[test]
fn a_chat_conversation_survives_the_round_trip_through_messages() {
    let chat = json!({
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "user", "content": [
                {"type": "text", "text": "And this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}]}
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather",
            "description": "Weather", "parameters": {"type": "object",
            "properties": {"city": {"type": "string"}}}}}],
        "tool_choice": "required",
        "max_tokens": 100,
        "temperature": 0.5,
        "stop": ["END"]
    });
    let messages = super::chat_to_messages::request(&object(chat.clone()), false).unwrap();
    let back = super::messages_to_chat::request(&messages, false).unwrap();
    assert_eq!(Value::Object(back), chat);
}
