//! OpenAI's Responses API (`POST .../responses`) as the mock answers it: the response
//! object, and streamed, the semantic event sequence (`response.created` ...
//! `response.completed`, each with a `sequence_number`), text or a function call.

use bytes::Bytes;
use serde_json::{json, Value};

use super::openai::CREATED;
use super::reply::{Reply, ToolCall};
use super::sse::named_event;

pub const RESPONSE_ID: &str = "resp_mock";
pub const MESSAGE_ID: &str = "msg_mock";
pub const FUNCTION_CALL_ID: &str = "fc_mock";
pub const CALL_ID: &str = "call_mock";

/// Responses usage, always with both details objects, as the API sends it.
pub fn usage(reply: &Reply) -> Value {
    json!({
        "input_tokens": reply.prompt_tokens,
        "input_tokens_details": {"cached_tokens": reply.cached_tokens},
        "output_tokens": reply.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": reply.reasoning_tokens},
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
    })
}

/// The response object; `output` and `usage` are `[]` and `null` while in progress.
fn response(model: &str, status: &str, output: Value, usage: Value) -> Value {
    let mut r = json!({
        "id": RESPONSE_ID, "object": "response", "created_at": CREATED, "status": status,
        "error": null, "incomplete_details": null, "instructions": null,
        "max_output_tokens": null, "model": model, "output": output,
        "parallel_tool_calls": true, "previous_response_id": null,
        "reasoning": {"effort": null, "summary": null}, "store": true, "temperature": 1.0,
        "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [], "top_p": 1.0,
        "truncation": "disabled", "usage": usage, "user": null, "metadata": {},
    });
    if status == "completed" {
        r["completed_at"] = json!(CREATED + 1);
    }
    r
}

fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

fn message_item(status: &str, content: Value) -> Value {
    json!({"id": MESSAGE_ID, "type": "message", "status": status, "role": "assistant",
           "content": content})
}

fn function_call_item(status: &str, call: &ToolCall, arguments: &str) -> Value {
    json!({"id": FUNCTION_CALL_ID, "type": "function_call", "status": status,
           "call_id": CALL_ID, "name": call.name, "arguments": arguments})
}

/// The plain answer: one message, or one function call when the request offers tools and
/// the reply makes a call.
pub fn plain(model: &str, reply: &Reply, asked: &Value) -> Value {
    let output = match reply.tool_call_for(asked) {
        Some(call) => json!([function_call_item("completed", call, &call.arguments)]),
        None => json!([message_item(
            "completed",
            json!([text_part(&reply.plain_text())])
        )]),
    };
    response(model, "completed", output, usage(reply))
}

/// The streamed answer: the events OpenAI sends, in order, `event:` + `data:` each, ending
/// with `response.completed` carrying the whole response and its usage (no `[DONE]`).
pub fn sse_events(model: &str, reply: &Reply, asked: &Value) -> Vec<Bytes> {
    let mut events: Vec<Value> = vec![
        json!({"type": "response.created",
               "response": response(model, "in_progress", json!([]), Value::Null)}),
        json!({"type": "response.in_progress",
               "response": response(model, "in_progress", json!([]), Value::Null)}),
    ];
    let done_item = match reply.tool_call_for(asked) {
        Some(call) => {
            events.push(
                json!({"type": "response.output_item.added", "output_index": 0,
                               "item": function_call_item("in_progress", call, "")}),
            );
            for piece in super::openai::argument_pieces(call, reply) {
                events.push(json!({"type": "response.function_call_arguments.delta",
                                   "item_id": FUNCTION_CALL_ID, "output_index": 0, "delta": piece}));
            }
            events.push(json!({"type": "response.function_call_arguments.done",
                               "item_id": FUNCTION_CALL_ID, "output_index": 0,
                               "arguments": call.arguments}));
            function_call_item("completed", call, &call.arguments)
        }
        None => {
            let text = reply.stream_pieces().concat();
            let at = |v: Value| {
                let mut v = v;
                v["item_id"] = json!(MESSAGE_ID);
                v["output_index"] = json!(0);
                v["content_index"] = json!(0);
                v
            };
            events.push(
                json!({"type": "response.output_item.added", "output_index": 0,
                               "item": message_item("in_progress", json!([]))}),
            );
            events.push(at(json!({"type": "response.content_part.added",
                                  "part": text_part("")})));
            for piece in reply.stream_pieces() {
                events.push(at(
                    json!({"type": "response.output_text.delta", "delta": piece,
                                      "logprobs": []}),
                ));
            }
            events.push(at(
                json!({"type": "response.output_text.done", "text": text, "logprobs": []}),
            ));
            events.push(at(
                json!({"type": "response.content_part.done", "part": text_part(&text)}),
            ));
            message_item("completed", json!([text_part(&text)]))
        }
    };
    events.push(
        json!({"type": "response.output_item.done", "output_index": 0,
                       "item": done_item.clone()}),
    );
    events.push(json!({"type": "response.completed",
                       "response": response(model, "completed", json!([done_item]), usage(reply))}));
    events
        .into_iter()
        .enumerate()
        .map(|(i, mut e)| {
            e["sequence_number"] = json!(i);
            let name = e["type"].as_str().unwrap_or_default().to_string();
            named_event(&name, &e)
        })
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

    fn types(events: &[SseEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| e.json()["type"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn text_stream_in_the_documented_order() {
        let r = Reply::default().usage(40, 9).cached(16).reasoning(3);
        let events = read(&sse_events("gpt-x", &r, &json!({})));
        assert_eq!(
            types(&events),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        for (i, e) in events.iter().enumerate() {
            assert_eq!(
                e.event.as_deref(),
                e.json()["type"].as_str(),
                "event: names the type"
            );
            assert_eq!(e.json()["sequence_number"], i);
        }
        let deltas: String = events
            .iter()
            .filter(|e| e.event.as_deref() == Some("response.output_text.delta"))
            .map(|e| e.json()["delta"].as_str().unwrap().to_string())
            .collect();
        let completed = events.last().unwrap().json();
        let response = &completed["response"];
        assert_eq!(response["id"], RESPONSE_ID);
        assert_eq!(response["status"], "completed");
        assert_eq!(response["output"][0]["content"][0]["text"], deltas.as_str());
        assert_eq!(
            response["usage"],
            json!({"input_tokens": 40, "input_tokens_details": {"cached_tokens": 16},
                   "output_tokens": 9, "output_tokens_details": {"reasoning_tokens": 3},
                   "total_tokens": 49})
        );
        assert_eq!(events[0].json()["response"]["usage"], Value::Null);
        assert_eq!(events[0].json()["response"]["id"], RESPONSE_ID);
        assert!(events[2..10].iter().all(|e| {
            let j = e.json();
            j["item_id"] == MESSAGE_ID || j["item"]["id"] == MESSAGE_ID
        }));
    }

    #[test]
    fn function_call_plain_and_streamed() {
        let r = Reply::tool_call("get_weather", json!({"city": "Paris"}));
        let asked = json!({"tools": [{"type": "function", "name": "get_weather"}]});
        let plain = plain("m", &r, &asked);
        assert_eq!(plain["output"][0]["type"], "function_call");
        assert_eq!(plain["output"][0]["arguments"], r#"{"city":"Paris"}"#);
        let events = read(&sse_events("m", &r, &asked));
        let args: String = events
            .iter()
            .filter(|e| e.event.as_deref() == Some("response.function_call_arguments.delta"))
            .map(|e| e.json()["delta"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(args, r#"{"city":"Paris"}"#);
        let last = events.last().unwrap().json();
        assert_eq!(last["response"]["output"][0]["call_id"], CALL_ID);
        // Without tools in the request the same reply answers with text.
        assert_eq!(plain_text_of(&plain_no_tools(&r)), "Hello from the mock.");
    }

    fn plain_no_tools(r: &Reply) -> Value {
        plain("m", r, &json!({"input": "hi"}))
    }

    fn plain_text_of(v: &Value) -> String {
        v["output"][0]["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}
