use serde_json::{json, Map, Value};

use super::*;
use crate::protocol::translate::tests::{answering, at_every_split, events, feed};

fn req(v: Value) -> Result<Map<String, Value>, ProxyError> {
    match v {
        Value::Object(m) => request(&m, false),
        _ => panic!("not an object"),
    }
}

#[test]
fn a_messages_request_becomes_a_chat_request() {
    // What Claude Code sends, in short: system blocks with cache hints, tool results and
    // text in one user turn, tool use in the assistant turn.
    let got = req(json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "system": [{"type": "text", "text": "You are Claude Code.",
                    "cache_control": {"type": "ephemeral"}},
                   {"type": "text", "text": "Be terse."}],
        "messages": [
            {"role": "user", "content": "List files"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Sure."},
                {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1",
                 "content": [{"type": "text", "text": "a.txt"}], "is_error": false},
                {"type": "text", "text": "<reminder>", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "thanks"}]},
            {"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": "iVBO"}}]}
        ],
        "tools": [{"name": "Bash", "description": "Run", "input_schema": {"type": "object"},
                   "cache_control": {"type": "ephemeral"}}],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": true},
        "metadata": {"user_id": "u-1"},
        "stop_sequences": ["END"],
        "temperature": 1,
        "thinking": {"type": "disabled"}
    }))
    .unwrap();
    assert_eq!(
        Value::Object(got),
        json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 1024,
            "messages": [
                {"role": "system", "content": "You are Claude Code.\nBe terse."},
                {"role": "user", "content": "List files"},
                {"role": "assistant", "content": "Sure.", "tool_calls": [
                    {"id": "toolu_1", "type": "function",
                     "function": {"name": "Bash", "arguments": "{\"command\":\"ls\"}"}}]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "a.txt"},
                {"role": "user", "content": "<reminder>\nthanks"},
                {"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}]}
            ],
            "tools": [{"type": "function", "function": {"name": "Bash", "description": "Run",
                                                        "parameters": {"type": "object"}}}],
            "tool_choice": "auto",
            "parallel_tool_calls": false,
            "user": "u-1",
            "stop": ["END"],
            "temperature": 1
        })
    );
}

#[test]
fn what_has_no_counterpart_is_refused_by_name() {
    let turn = |content: Value| json!({"messages": [{"role": "user", "content": content}]});
    let cases = [
        (json!({"messages": [], "top_k": 5}), "top_k"),
        (
            json!({"messages": [], "thinking": {"type": "enabled", "budget_tokens": 1024}}),
            "thinking",
        ),
        (json!({"messages": [], "container": "c"}), "container"),
        (
            json!({"messages": [], "metadata": {"user_id": "u", "other": 1}}),
            "metadata.other",
        ),
        (
            turn(json!([{"type": "document", "source": {}}])),
            "messages[0].content[0] (document)",
        ),
        (
            json!({"messages": [{"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hm", "signature": "s"}]}]}),
            "messages[0].content[0] (thinking)",
        ),
        (
            json!({"messages": [], "tools": [{"type": "web_search_20250305", "name": "w"}]}),
            "tools[0].type",
        ),
        (
            turn(json!([{"type": "image", "source": {"type": "file", "file_id": "f"}}])),
            "messages[0].content[0].source",
        ),
    ];
    for (body, want) in cases {
        match req(body.clone()).unwrap_err() {
            ProxyError::Untranslatable { field, .. } => assert_eq!(field, want, "{body}"),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn tool_choices() {
    for (c, want) in [
        (json!({"type": "auto"}), json!("auto")),
        (json!({"type": "any"}), json!("required")),
        (json!({"type": "none"}), json!("none")),
        (
            json!({"type": "tool", "name": "f"}),
            json!({"type": "function", "function": {"name": "f"}}),
        ),
    ] {
        let got = req(json!({"messages": [], "tool_choice": c})).unwrap();
        assert_eq!(got.get("tool_choice"), Some(&want));
        assert!(!got.contains_key("parallel_tool_calls"));
    }
}

fn messages_reader(status: u32, sse: bool) -> Box<dyn Reader> {
    reader(answering(ApiKind::Messages, status, sse, false))
}

#[test]
fn a_chat_completion_becomes_a_message() {
    let body = include_bytes!("../../../../fixtures/openai/chat.json");
    let mut r = messages_reader(200, false);
    let out: Value = serde_json::from_slice(&feed(r.as_mut(), &[body])).unwrap();
    let source: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(out["type"], "message");
    assert_eq!(out["role"], "assistant");
    assert_eq!(out["id"], source["id"]);
    assert_eq!(out["model"], source["model"]);
    assert_eq!(
        out["content"],
        json!([{"type": "text", "text": source["choices"][0]["message"]["content"]}])
    );
    assert_eq!(out["stop_reason"], "end_turn");
    let u = &source["usage"];
    assert_eq!(out["usage"]["output_tokens"], u["completion_tokens"]);
    assert_eq!(
        r.usage().prompt_tokens,
        u["prompt_tokens"].as_u64().unwrap()
    );

    let body = include_bytes!("../../../../fixtures/openai/chat_tool_call.json");
    let mut r = messages_reader(200, false);
    let out: Value = serde_json::from_slice(&feed(r.as_mut(), &[body])).unwrap();
    let source: Value = serde_json::from_slice(body).unwrap();
    let call = &source["choices"][0]["message"]["tool_calls"][0];
    let block = out["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "tool_use")
        .unwrap();
    assert_eq!(block["id"], call["id"]);
    assert_eq!(block["name"], call["function"]["name"]);
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(block["input"], args);
    assert_eq!(out["stop_reason"], "tool_use");
}

/// What an Anthropic client assembles from the events.
struct Assembled {
    names: Vec<String>,
    text: String,
    tools: Vec<(String, String, String)>,
    stop: String,
    usage: Value,
}

fn assemble(bytes: &[u8]) -> Assembled {
    let mut a = Assembled {
        names: Vec::new(),
        text: String::new(),
        tools: Vec::new(),
        stop: String::new(),
        usage: Value::Null,
    };
    let mut kinds: Vec<String> = Vec::new();
    for (name, data) in events(bytes) {
        let name = name.expect("Anthropic events are named");
        assert_eq!(data["type"], name.as_str());
        a.names.push(name.clone());
        match name.as_str() {
            "content_block_start" => {
                let b = &data["content_block"];
                assert_eq!(data["index"].as_u64().unwrap() as usize, kinds.len());
                kinds.push(b["type"].as_str().unwrap().into());
                if b["type"] == "tool_use" {
                    a.tools.push((
                        b["id"].as_str().unwrap().into(),
                        b["name"].as_str().unwrap().into(),
                        String::new(),
                    ));
                }
            }
            "content_block_delta" => {
                let d = &data["delta"];
                match d["type"].as_str().unwrap() {
                    "text_delta" => a.text.push_str(d["text"].as_str().unwrap()),
                    "input_json_delta" => a
                        .tools
                        .last_mut()
                        .unwrap()
                        .2
                        .push_str(d["partial_json"].as_str().unwrap()),
                    other => panic!("{other}"),
                }
            }
            "message_delta" => {
                a.stop = data["delta"]["stop_reason"].as_str().unwrap().into();
                a.usage = data["usage"].clone();
            }
            _ => {}
        }
    }
    a
}

#[test]
fn a_chat_stream_becomes_anthropic_events_at_every_split() {
    let sse = include_bytes!("../../../../fixtures/openai/chat_stream_usage.sse");
    let (out, r) = at_every_split(sse, &|| messages_reader(200, true));
    let a = assemble(&out);
    assert_eq!(a.names.first().map(String::as_str), Some("message_start"));
    assert_eq!(a.names.last().map(String::as_str), Some("message_stop"));
    assert!(!a.text.is_empty());
    assert_eq!(a.stop, "end_turn");
    let u = r.usage();
    assert!(u.total_tokens > 0);
    assert_eq!(a.usage["output_tokens"], u.completion_tokens);
    assert_eq!(a.usage["input_tokens"], u.prompt_tokens - u.cached_tokens);
    assert_eq!(r.text(), Some(a.text.as_str()));
}

#[test]
fn a_tool_call_stream_becomes_tool_use_events_at_every_split() {
    let sse = include_bytes!("../../../../fixtures/openai/chat_tool_call_stream.sse");
    let (out, r) = at_every_split(sse, &|| messages_reader(200, true));
    let a = assemble(&out);
    assert_eq!(a.tools.len(), 1);
    assert_eq!(a.tools[0].0, "call_4XzlGBLtUe9dy3GVNV4jhq7h");
    assert_eq!(a.tools[0].1, "get_weather");
    let input: Value = serde_json::from_str(&a.tools[0].2).unwrap();
    assert_eq!(input, json!({"city": "New York City"}));
    assert_eq!(a.stop, "tool_use");
    assert_eq!(a.usage["output_tokens"], 16);
    assert_eq!(r.usage().total_tokens, 60);
}

#[test]
fn a_stream_cut_before_done_still_ends_like_anthropic_s() {
    let sse = include_bytes!("../../../../fixtures/openai/chat_tool_call_stream.sse");
    let text = std::str::from_utf8(sse).unwrap();
    let cut = text.replace("data: [DONE]\n\n", "");
    let mut r = messages_reader(200, true);
    let a = assemble(&feed(r.as_mut(), &[cut.as_bytes()]));
    assert_eq!(a.names.last().map(String::as_str), Some("message_stop"));
    assert_eq!(a.stop, "tool_use");
}

#[test]
fn errors_come_back_in_anthropic_shape() {
    let body = br#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#;
    let mut r = messages_reader(429, false);
    let out: Value = serde_json::from_slice(&feed(r.as_mut(), &[body])).unwrap();
    assert_eq!(
        out,
        json!({"type": "error", "error": {"type": "rate_limit_error",
                                          "message": "Rate limit reached"}})
    );
    let mut r = messages_reader(200, true);
    let out = events(&feed(
        r.as_mut(),
        &[b"data: {\"error\":{\"message\":\"boom\"}}\n\n"],
    ));
    assert_eq!(
        out,
        vec![(
            Some("error".into()),
            json!({"type": "error", "error": {"type": "api_error", "message": "boom"}})
        )]
    );
}

/// The members in the order Anthropic's own answers have them, byte for byte: the tests
/// above compare JSON values, which do not see the order.
#[test]
fn an_answer_keeps_its_members_in_order() {
    let body = include_bytes!("../../../../fixtures/openai/chat_tool_call.json");
    let mut r = reader(answering(ApiKind::Messages, 200, false, false));
    assert_eq!(
        String::from_utf8(feed(r.as_mut(), &[body])).unwrap(),
        r#"{"id":"chatcmpl-abc123","type":"message","role":"assistant","model":"gpt-4o-mini","content":[{"type":"tool_use","id":"call_abc123","name":"get_current_weather","input":{"location":"Boston, MA"}}],"stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":82,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":17}}"#
    );

    let sse = include_bytes!("../../../../fixtures/openai/chat_tool_call_stream.sse");
    let mut r = reader(answering(ApiKind::Messages, 200, true, false));
    let out = String::from_utf8(feed(r.as_mut(), &[sse])).unwrap();
    let events: Vec<&str> = out.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(
        events,
        [
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"chatcmpl-ABfwERreu9s99xXsVuOWtIB2UOx62\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"gpt-4o-2024-08-06\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":0,\"output_tokens\":0}}}",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"call_4XzlGBLtUe9dy3GVNV4jhq7h\",\"name\":\"get_weather\",\"input\":{}}}",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"\"}}",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"city\"}}",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\":\\\"\"}}",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"New\"}}",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\" York\"}}",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\" City\"}}",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"}\"}}",
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"input_tokens\":44,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":16}}",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}",
        ]
    );
}
