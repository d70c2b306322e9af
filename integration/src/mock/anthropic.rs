//! Anthropic's Messages API (`POST .../messages`) as the mock answers it: the `message`
//! object (a text or a `tool_use` block), and streamed, the event sequence Anthropic sends
//! (`message_start` with the input and cache tokens, content blocks, `ping`,
//! `message_delta` with the stop reason and the cumulative output tokens, `message_stop`).

use bytes::Bytes;
use serde_json::{json, Value};

use super::reply::{Reply, ToolCall};
use super::sse::named_event;

pub const MESSAGE_ID: &str = "msg_mock";
pub const TOOL_USE_ID: &str = "toolu_mock";

/// Anthropic usage: `input_tokens` is the uncached part of the reply's prompt.
pub fn usage(reply: &Reply, output_tokens: u64) -> Value {
    json!({
        "input_tokens": reply.uncached_prompt_tokens(),
        "cache_creation_input_tokens": reply.cache_write_tokens,
        "cache_read_input_tokens": reply.cached_tokens,
        "output_tokens": output_tokens,
    })
}

fn message(model: &str, content: Value, stop_reason: Value, usage: Value) -> Value {
    json!({"id": MESSAGE_ID, "type": "message", "role": "assistant", "model": model,
           "content": content, "stop_reason": stop_reason, "stop_sequence": null,
           "usage": usage})
}

fn tool_input(call: &ToolCall) -> Value {
    serde_json::from_str(&call.arguments).unwrap_or_else(|_| json!({}))
}

/// The plain answer: a text block, or a `tool_use` block when the request offers tools and
/// the reply makes a call.
pub fn plain(model: &str, reply: &Reply, asked: &Value) -> Value {
    let (content, stop) = match reply.tool_call_for(asked) {
        Some(call) => (
            json!([{"type": "tool_use", "id": TOOL_USE_ID, "name": call.name,
                    "input": tool_input(call)}]),
            "tool_use",
        ),
        None => (
            json!([{"type": "text", "text": reply.plain_text()}]),
            "end_turn",
        ),
    };
    message(
        model,
        content,
        json!(stop),
        usage(reply, reply.completion_tokens),
    )
}

/// The streamed answer, `event:` + `data:` each, in Anthropic's order.
pub fn sse_events(model: &str, reply: &Reply, asked: &Value) -> Vec<Bytes> {
    let started = usage(reply, reply.completion_tokens.min(1));
    let mut events = vec![json!({"type": "message_start",
                                 "message": message(model, json!([]), Value::Null, started)})];
    let stop = match reply.tool_call_for(asked) {
        Some(call) => {
            events.push(json!({"type": "content_block_start", "index": 0,
                               "content_block": {"type": "tool_use", "id": TOOL_USE_ID,
                                                 "name": call.name, "input": {}}}));
            events.push(json!({"type": "ping"}));
            // Anthropic opens with an empty piece, then the input in several pieces.
            let mut pieces = vec![String::new()];
            pieces.extend(super::openai::argument_pieces(call, reply));
            for piece in pieces {
                events.push(json!({"type": "content_block_delta", "index": 0,
                                   "delta": {"type": "input_json_delta", "partial_json": piece}}));
            }
            "tool_use"
        }
        None => {
            events.push(json!({"type": "content_block_start", "index": 0,
                               "content_block": {"type": "text", "text": ""}}));
            events.push(json!({"type": "ping"}));
            for piece in reply.stream_pieces() {
                events.push(json!({"type": "content_block_delta", "index": 0,
                                   "delta": {"type": "text_delta", "text": piece}}));
            }
            "end_turn"
        }
    };
    events.push(json!({"type": "content_block_stop", "index": 0}));
    events.push(json!({"type": "message_delta",
                       "delta": {"stop_reason": stop, "stop_sequence": null},
                       "usage": {"output_tokens": reply.completion_tokens}}));
    events.push(json!({"type": "message_stop"}));
    events
        .iter()
        .map(|e| named_event(e["type"].as_str().unwrap_or_default(), e))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::sse::{parse_sse, SseEvent};
    use super::*;

    fn read(chunks: &[Bytes]) -> Vec<SseEvent> {
        let text: String = chunks
            .iter()
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        parse_sse(&text)
    }

    fn names(events: &[SseEvent]) -> Vec<&str> {
        events.iter().map(|e| e.event.as_deref().unwrap()).collect()
    }

    #[test]
    fn text_stream_order_and_usage() {
        let r = Reply::default().usage(100, 42).cached(30).cache_write(20);
        let events = read(&sse_events("claude-x", &r, &json!({})));
        assert_eq!(
            names(&events),
            [
                "message_start",
                "content_block_start",
                "ping",
                "content_block_delta",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop",
            ]
        );
        assert!(events
            .iter()
            .all(|e| e.event.as_deref() == e.json()["type"].as_str()));
        let start = events[0].json();
        assert_eq!(start["message"]["id"], MESSAGE_ID);
        assert_eq!(
            start["message"]["usage"],
            json!({"input_tokens": 50, "cache_creation_input_tokens": 20,
                   "cache_read_input_tokens": 30, "output_tokens": 1})
        );
        let text: String = events
            .iter()
            .filter_map(|e| e.json()["delta"]["text"].as_str().map(str::to_string))
            .collect();
        assert_eq!(text, "tok0 tok1 tok2 ");
        let delta = events[7].json();
        assert_eq!(delta["delta"]["stop_reason"], "end_turn");
        // Cumulative: the total, not what came after message_start's 1.
        assert_eq!(delta["usage"]["output_tokens"], 42);
    }

    #[test]
    fn tool_use_plain_and_streamed() {
        let r = Reply::tool_call("get_weather", json!({"location": "San Francisco, CA"}));
        let asked = json!({"tools": [{"name": "get_weather", "input_schema": {"type": "object"}}]});
        let m = plain("claude-x", &r, &asked);
        assert_eq!(m["stop_reason"], "tool_use");
        assert_eq!(m["content"][0]["id"], TOOL_USE_ID);
        assert_eq!(
            m["content"][0]["input"],
            json!({"location": "San Francisco, CA"})
        );

        let events = read(&sse_events("claude-x", &r, &asked));
        assert_eq!(events[1].json()["content_block"]["type"], "tool_use");
        let pieces: Vec<String> = events
            .iter()
            .filter_map(|e| {
                e.json()["delta"]["partial_json"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect();
        assert!(pieces.len() >= 3, "several partial_json pieces: {pieces:?}");
        assert_eq!(pieces[0], "");
        let input: Value = serde_json::from_str(&pieces.concat()).unwrap();
        assert_eq!(input, json!({"location": "San Francisco, CA"}));
        let delta = events
            .iter()
            .find(|e| e.event.as_deref() == Some("message_delta"))
            .unwrap();
        assert_eq!(delta.json()["delta"]["stop_reason"], "tool_use");
    }

    #[test]
    fn text_when_the_request_offers_no_tools() {
        let r = Reply::tool_call("f", json!({}));
        let m = plain("c", &r, &json!({"messages": []}));
        assert_eq!(m["content"][0]["type"], "text");
        assert_eq!(m["stop_reason"], "end_turn");
        assert_eq!(m["usage"]["output_tokens"], 7);
    }
}
