//! OpenAI's classic APIs as the mock answers them: chat completions (text or a tool call,
//! plain or streamed), legacy completions (plain or streamed), embeddings, the model list,
//! and OpenAI-shaped errors.

use bytes::Bytes;
use serde_json::{json, Value};

use super::reply::{Reply, ToolCall};
use super::sse::data_event;

/// `created` of every automatic answer.
pub const CREATED: u64 = 1_700_000_000;

/// Chat and completions usage: the three counts, and the details objects when the reply
/// sets cached or reasoning tokens (so a default reply's bytes stay as they always were).
pub fn usage(reply: &Reply) -> Value {
    let mut u = json!({"prompt_tokens": reply.prompt_tokens,
                       "completion_tokens": reply.completion_tokens,
                       "total_tokens": reply.prompt_tokens + reply.completion_tokens});
    if reply.cached_tokens > 0 || reply.reasoning_tokens > 0 {
        u["prompt_tokens_details"] = json!({"cached_tokens": reply.cached_tokens});
        u["completion_tokens_details"] = json!({"reasoning_tokens": reply.reasoning_tokens});
    }
    u
}

pub fn chat(model: &str, reply: &Reply) -> Value {
    json!({
        "id": "chatcmpl-mock", "object": "chat.completion", "created": CREATED, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.plain_text()},
                     "finish_reason": "stop"}],
        "usage": usage(reply),
    })
}

/// A chat answer whose message is one tool call (`finish_reason: "tool_calls"`).
pub fn chat_tool_call(model: &str, reply: &Reply, call: &ToolCall) -> Value {
    json!({
        "id": "chatcmpl-mock", "object": "chat.completion", "created": CREATED, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": null,
                        "tool_calls": [{"id": "call_mock", "type": "function",
                                        "function": {"name": call.name, "arguments": call.arguments}}]},
                     "finish_reason": "tool_calls"}],
        "usage": usage(reply),
    })
}

fn chunk(model: &str, delta: Value, finish: Value) -> Value {
    json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": CREATED,
           "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
}

fn usage_chunk(model: &str, reply: &Reply) -> Value {
    json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": CREATED,
           "model": model, "choices": [], "usage": usage(reply)})
}

fn with_done(events: Vec<Value>) -> Vec<Bytes> {
    let mut out: Vec<Bytes> = events.iter().map(data_event).collect();
    out.push(Bytes::from_static(b"data: [DONE]\n\n"));
    out
}

/// An OpenAI-style stream: a role chunk, `events` content chunks, a finish chunk, the
/// usage-only chunk when asked for, then `[DONE]`. One SSE event per element.
pub fn sse_events(model: &str, reply: &Reply, include_usage: bool) -> Vec<Bytes> {
    let mut events = vec![chunk(
        model,
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    for piece in reply.stream_pieces() {
        events.push(chunk(model, json!({"content": piece}), Value::Null));
    }
    events.push(chunk(model, json!({}), json!("stop")));
    if include_usage {
        events.push(usage_chunk(model, reply));
    }
    with_done(events)
}

/// A streamed tool call as OpenAI sends it: the first chunk names the call (id, function
/// name, empty arguments), then the arguments in pieces, a `tool_calls` finish chunk, the
/// usage chunk when asked for, and `[DONE]`.
pub fn tool_call_sse_events(
    model: &str,
    reply: &Reply,
    call: &ToolCall,
    include_usage: bool,
) -> Vec<Bytes> {
    let mut events = vec![chunk(
        model,
        json!({"role": "assistant", "content": null,
               "tool_calls": [{"index": 0, "id": "call_mock", "type": "function",
                               "function": {"name": call.name, "arguments": ""}}]}),
        Value::Null,
    )];
    for piece in argument_pieces(call, reply) {
        events.push(chunk(
            model,
            json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
            Value::Null,
        ));
    }
    events.push(chunk(model, json!({}), json!("tool_calls")));
    if include_usage {
        events.push(usage_chunk(model, reply));
    }
    with_done(events)
}

/// The arguments text of a streamed tool call in several pieces (at least two).
pub fn argument_pieces(call: &ToolCall, reply: &Reply) -> Vec<String> {
    super::reply::split_even(&call.arguments, reply.events.max(2))
}

/// A legacy completions answer (`text_completion`).
pub fn completion(model: &str, reply: &Reply) -> Value {
    json!({
        "id": "cmpl-mock", "object": "text_completion", "created": CREATED, "model": model,
        "choices": [{"text": reply.plain_text(), "index": 0, "logprobs": null, "finish_reason": "stop"}],
        "usage": usage(reply),
    })
}

/// A streamed legacy completion: one chunk per text piece, a finish chunk, the usage chunk
/// (empty `choices`) when `stream_options.include_usage` is set, then `[DONE]`.
pub fn completion_sse_events(model: &str, reply: &Reply, include_usage: bool) -> Vec<Bytes> {
    let piece = |text: &str, finish: Value| {
        json!({"id": "cmpl-mock", "object": "text_completion", "created": CREATED, "model": model,
               "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}]})
    };
    let mut events: Vec<Value> = reply
        .stream_pieces()
        .iter()
        .map(|p| piece(p, Value::Null))
        .collect();
    events.push(piece("", json!("stop")));
    if include_usage {
        events.push(
            json!({"id": "cmpl-mock", "object": "text_completion", "created": CREATED,
                   "model": model, "choices": [], "usage": usage(reply)}),
        );
    }
    with_done(events)
}

pub fn embeddings(asked: &Value, model: &str, reply: &Reply) -> Value {
    let inputs = match &asked["input"] {
        Value::Array(a) => a.len().max(1),
        _ => 1,
    };
    let data: Vec<Value> = (0..inputs)
        .map(|i| json!({"object": "embedding", "index": i, "embedding": [0.0023, -0.0091, 0.0154]}))
        .collect();
    json!({"object": "list", "data": data, "model": model,
           "usage": {"prompt_tokens": reply.prompt_tokens, "total_tokens": reply.prompt_tokens}})
}

/// `GET /v1/models`: the reply's model ids in OpenAI's list format.
pub fn models(reply: &Reply) -> Value {
    let data: Vec<Value> = reply
        .models
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": CREATED, "owned_by": "mock"}))
        .collect();
    json!({"object": "list", "data": data})
}

pub fn error(status: u16) -> Value {
    json!({"error": {"message": format!("mock error {status}"), "type": "mock_error", "code": status}})
}

#[cfg(test)]
mod tests {
    use super::super::sse::parse_sse;
    use super::*;

    fn read(chunks: &[Bytes]) -> Vec<Value> {
        let text: String = chunks
            .iter()
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        let events = parse_sse(&text);
        assert_eq!(events.last().map(|e| e.data.as_str()), Some("[DONE]"));
        assert!(events.iter().all(|e| e.event.is_none()), "data-only SSE");
        events[..events.len() - 1]
            .iter()
            .map(|e| e.json())
            .collect()
    }

    #[test]
    fn chat_usage_details_only_when_set() {
        let plain = chat("m", &Reply::default());
        assert!(plain["usage"].get("prompt_tokens_details").is_none());
        let r = Reply::default().usage(50, 20).cached(30).reasoning(8);
        let u = &chat("m", &r)["usage"];
        assert_eq!(u["total_tokens"], 70);
        assert_eq!(u["prompt_tokens_details"]["cached_tokens"], 30);
        assert_eq!(u["completion_tokens_details"]["reasoning_tokens"], 8);
    }

    #[test]
    fn streamed_tool_call_arguments_add_up() {
        let r = Reply::tool_call("get_weather", json!({"city": "Paris", "unit": "c"}));
        let call = r.tool_call.clone().unwrap();
        let events = read(&tool_call_sse_events("m", &r, &call, true));
        let first = &events[0]["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(first["id"], "call_mock");
        assert_eq!(first["function"]["name"], "get_weather");
        let args: String = events
            .iter()
            .filter_map(|e| {
                e["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str()
            })
            .collect();
        assert_eq!(
            serde_json::from_str::<Value>(&args).unwrap(),
            json!({"city": "Paris", "unit": "c"})
        );
        let argument_chunks = events.len() - 3;
        assert!(argument_chunks >= 2, "arguments in several pieces");
        let finish = &events[events.len() - 2];
        assert_eq!(finish["choices"][0]["finish_reason"], "tool_calls");
        let last = &events[events.len() - 1];
        assert_eq!(last["choices"], json!([]));
        assert_eq!(last["usage"]["total_tokens"], 18);
        assert!(events.iter().all(|e| e["id"] == "chatcmpl-mock"));
    }

    #[test]
    fn completion_stream_usage_only_when_asked() {
        let r = Reply::default().usage(5, 4);
        let with = read(&completion_sse_events("m", &r, true));
        let without = read(&completion_sse_events("m", &r, false));
        assert_eq!(with.len(), without.len() + 1);
        assert!(without.iter().all(|e| e.get("usage").is_none()));
        let text: String = without
            .iter()
            .filter_map(|e| e["choices"][0]["text"].as_str())
            .collect();
        assert_eq!(text, "tok0 tok1 tok2 ");
        assert_eq!(
            without.last().unwrap()["choices"][0]["finish_reason"],
            "stop"
        );
        let last = with.last().unwrap();
        assert_eq!(last["choices"], json!([]));
        assert_eq!(last["usage"]["prompt_tokens"], 5);
        assert_eq!(last["usage"]["completion_tokens"], 4);
        assert!(with.iter().all(|e| e["object"] == "text_completion"));
    }

    #[test]
    fn models_lists_the_reply_ids() {
        let m = models(&Reply::default().models(&["a", "b"]));
        assert_eq!(m["object"], "list");
        let ids: Vec<&str> = m["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|d| d["id"].as_str())
            .collect();
        assert_eq!(ids, ["a", "b"]);
    }
}
