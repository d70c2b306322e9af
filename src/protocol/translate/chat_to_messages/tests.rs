use serde_json::{json, Map, Value};

use super::*;
use crate::protocol::translate::tests::{answering, at_every_split, events, feed};

fn req(v: Value) -> Result<Map<String, Value>, ProxyError> {
    match v {
        Value::Object(m) => request(&m, false),
        _ => panic!("not an object"),
    }
}

fn field(err: ProxyError) -> String {
    match err {
        ProxyError::Untranslatable { field, .. } => field,
        other => panic!("not untranslatable: {other:?}"),
    }
}

#[test]
fn a_chat_request_becomes_a_messages_request() {
    let got = req(json!({
        "model": "claude-x",
        "messages": [
            {"role": "system", "content": "A"},
            {"role": "developer", "content": [{"type": "text", "text": "B"}]},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "t1", "type": "function", "function": {"name": "f", "arguments": ""}},
                {"id": "t2", "type": "function", "function": {"name": "g", "arguments": "{\"a\":1}"}}]},
            {"role": "tool", "tool_call_id": "t1", "content": "r1"},
            {"role": "tool", "tool_call_id": "t2", "content": [{"type": "text", "text": "r2"}]},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}
        ],
        "max_completion_tokens": 50, "max_tokens": 10, "stop": "END", "user": "u-1",
        "parallel_tool_calls": false, "n": 1, "presence_penalty": 0, "logprobs": false,
        "response_format": {"type": "text"}, "stream_options": {"include_usage": true}
    }))
    .unwrap();
    assert_eq!(
        Value::Object(got),
        json!({
            "model": "claude-x",
            "system": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}],
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "t1", "name": "f", "input": {}},
                    {"type": "tool_use", "id": "t2", "name": "g", "input": {"a": 1}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "r1"},
                    {"type": "tool_result", "tool_use_id": "t2", "content": "r2"}]},
                {"role": "user", "content": [
                    {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]}
            ],
            "stop_sequences": ["END"],
            "metadata": {"user_id": "u-1"},
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": true},
            "max_tokens": 50
        })
    );
}

#[test]
fn max_tokens_has_a_default_and_stream_is_the_clients() {
    let m = json!({"messages": [{"role": "user", "content": "x"}]});
    let Value::Object(m) = m else { panic!() };
    let got = request(&m, true).unwrap();
    assert_eq!(got.get("max_tokens"), Some(&json!(DEFAULT_MAX_TOKENS)));
    assert_eq!(got.get("stream"), Some(&json!(true)));
    assert!(!got.contains_key("system"));
}

#[test]
fn tools_and_tool_choice() {
    let got = req(json!({"messages": [], "tools": [
            {"type": "function", "function": {"name": "f", "strict": false}}],
        "tool_choice": {"type": "function", "function": {"name": "f"}}}))
    .unwrap();
    assert_eq!(
        got.get("tools"),
        Some(&json!([{"name": "f", "input_schema": {"type": "object", "properties": {}}}]))
    );
    assert_eq!(
        got.get("tool_choice"),
        Some(&json!({"type": "tool", "name": "f"}))
    );
    for (c, want) in [
        ("none", json!({"type": "none"})),
        ("auto", json!({"type": "auto"})),
        ("required", json!({"type": "any"})),
    ] {
        let got = req(json!({"messages": [], "tool_choice": c})).unwrap();
        assert_eq!(got.get("tool_choice"), Some(&want));
    }
}

#[test]
fn what_has_no_counterpart_is_refused_by_name() {
    let user = |content: Value| json!({"messages": [{"role": "user", "content": content}]});
    let cases = [
        (json!({"messages": [], "n": 2}), "n"),
        (json!({"messages": [], "logprobs": true}), "logprobs"),
        (json!({"messages": [], "seed": 7}), "seed"),
        (
            json!({"messages": [], "frequency_penalty": 0.5}),
            "frequency_penalty",
        ),
        (
            json!({"messages": [], "response_format": {"type": "json_object"}}),
            "response_format",
        ),
        (
            json!({"messages": [], "reasoning_effort": "low"}),
            "reasoning_effort",
        ),
        (json!({"messages": [], "audio": {}}), "audio"),
        (json!({"messages": [], "whatever": 1}), "whatever"),
        (
            user(json!([{"type": "input_audio", "input_audio": {}}])),
            "messages[0].content[0] (input_audio)",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x", "name": "bob"}]}),
            "messages[0].name",
        ),
        (
            json!({"messages": [{"role": "function", "content": "x"}]}),
            "messages[0].role",
        ),
        (
            json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "a",
                "function": {"name": "f", "arguments": "[1]"}}]}]}),
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            json!({"messages": [], "tools": [{"type": "function",
                "function": {"name": "f", "strict": true}}]}),
            "tools[0].function.strict",
        ),
        (
            json!({"messages": [], "tools": [{"type": "custom", "custom": {}}]}),
            "tools[0].type",
        ),
    ];
    for (body, want) in cases {
        assert_eq!(field(req(body.clone()).unwrap_err()), want, "{body}");
    }
    let err = req(json!({"messages": [], "n": 3})).unwrap_err();
    assert_eq!((err.status(), err.code()), (400, "untranslatable_field"));
    assert!(err.message().contains("`n`"), "{}", err.message());
}

fn chat_reader(status: u32, sse: bool, drop: bool) -> Box<dyn Reader> {
    reader(answering(ApiKind::Chat, status, sse, drop))
}

#[test]
fn a_message_becomes_a_chat_completion() {
    let body = include_bytes!("../../../../fixtures/anthropic/message.json");
    let mut r = chat_reader(200, false, true);
    let out: Value = serde_json::from_slice(&feed(r.as_mut(), &[body])).unwrap();
    assert_eq!(out["object"], "chat.completion");
    assert_eq!(out["id"], "msg_01XFDUDYJgAACzvnptvVoYEL");
    assert_eq!(out["model"], "claude-opus-4-8");
    assert_eq!(out["created"], 1_700_000_000);
    assert_eq!(out["choices"][0]["message"]["content"], "Hello!");
    assert_eq!(out["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        out["usage"],
        json!({"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18,
               "prompt_tokens_details": {"cached_tokens": 0}})
    );
    assert_eq!(r.usage().total_tokens, 18);
    assert_eq!(r.text(), Some("Hello!"));

    let body = include_bytes!("../../../../fixtures/anthropic/message_tool_use.json");
    let mut r = chat_reader(200, false, true);
    let out: Value = serde_json::from_slice(&feed(r.as_mut(), &[body])).unwrap();
    let m = &out["choices"][0]["message"];
    assert_eq!(
        m["content"],
        "I'll check the current weather in San Francisco for you."
    );
    assert_eq!(m["tool_calls"][0]["id"], "toolu_01A09q90qw90lq917835lq9");
    assert_eq!(m["tool_calls"][0]["function"]["name"], "get_weather");
    let args: Value = serde_json::from_str(
        m["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        args,
        json!({"location": "San Francisco, CA", "unit": "celsius"})
    );
    assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
    // The documented example has no usage: none is made up.
    assert!(!r.has_usage());
}

/// A tool call as a client assembles it: id, name, arguments.
type Call = (String, String, String);

/// What an OpenAI client assembles from the chunks: text, tool calls, finish, usage, and
/// whether `[DONE]` came.
type Assembled = (String, Vec<Call>, String, Option<Value>, bool);

fn assemble(bytes: &[u8]) -> Assembled {
    let mut text = String::new();
    let mut calls: Vec<Call> = Vec::new();
    let mut finish = String::new();
    let mut usage = None;
    let mut done = false;
    for (name, data) in events(bytes) {
        assert_eq!(name, None, "OpenAI streams have no event names");
        if data == json!("[DONE]") {
            done = true;
            continue;
        }
        assert_eq!(data["object"], "chat.completion.chunk");
        if let Some(u) = data.get("usage") {
            usage = Some(u.clone());
            assert_eq!(data["choices"], json!([]));
            continue;
        }
        let choice = &data["choices"][0];
        if let Some(t) = choice["delta"]["content"].as_str() {
            text.push_str(t);
        }
        for c in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let i = c["index"].as_u64().unwrap() as usize;
            if calls.len() <= i {
                calls.push((
                    c["id"].as_str().unwrap().into(),
                    c["function"]["name"].as_str().unwrap().into(),
                    String::new(),
                ));
            }
            calls[i]
                .2
                .push_str(c["function"]["arguments"].as_str().unwrap_or(""));
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            finish = f.into();
        }
    }
    (text, calls, finish, usage, done)
}

#[test]
fn a_text_stream_becomes_chunks_at_every_split() {
    let sse = include_bytes!("../../../../fixtures/anthropic/stream_text.sse");
    for asked in [true, false] {
        let (out, r) = at_every_split(sse, &|| chat_reader(200, true, !asked));
        let (text, calls, finish, usage, done) = assemble(&out);
        assert_eq!(text, "Hello!");
        assert!(calls.is_empty());
        assert_eq!(finish, "stop");
        assert!(done);
        let want = json!({"prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40,
                          "prompt_tokens_details": {"cached_tokens": 0}});
        assert_eq!(usage, asked.then_some(want));
        assert_eq!(r.usage().total_tokens, 40);
        assert_eq!(r.model(), Some("claude-opus-4-8"));
    }
}

#[test]
fn a_tool_use_stream_becomes_tool_call_chunks_at_every_split() {
    let sse = include_bytes!("../../../../fixtures/anthropic/stream_tool_use.sse");
    let (out, r) = at_every_split(sse, &|| chat_reader(200, true, false));
    let (text, calls, finish, usage, _) = assemble(&out);
    assert!(text.starts_with("Okay, let's check the weather"), "{text}");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].1, "get_weather");
    let args: Value = serde_json::from_str(&calls[0].2).unwrap();
    assert_eq!(args, json!({"location": "San Francisco, CA"}));
    assert_eq!(finish, "tool_calls");
    assert_eq!(usage.unwrap()["completion_tokens"], 89);
    assert_eq!(r.usage().prompt_tokens, 472);
}

#[test]
fn errors_come_back_in_openai_shape() {
    let sse = include_bytes!("../../../../fixtures/anthropic/stream_error.sse");
    let mut r = chat_reader(200, true, true);
    let out = events(&feed(r.as_mut(), &[sse]));
    assert_eq!(
        out,
        vec![(
            None,
            json!({"error": {"message": "Overloaded", "type": "overloaded_error", "code": null}})
        )]
    );
    let body = include_bytes!("../../../../fixtures/anthropic/error.json");
    let mut r = chat_reader(404, false, true);
    let out: Value = serde_json::from_slice(&feed(r.as_mut(), &[body])).unwrap();
    assert_eq!(
        out["error"]["message"],
        "The requested resource could not be found."
    );
    assert_eq!(out["error"]["type"], "invalid_request_error");
}

#[test]
fn stop_reasons() {
    for (stop, want) in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ] {
        assert_eq!(finish_reason(stop), want);
    }
}

/// The members in the order OpenAI's own answers have them, byte for byte: the tests above
/// compare JSON values, which do not see the order.
#[test]
fn an_answer_keeps_its_members_in_order() {
    let body = include_bytes!("../../../../fixtures/anthropic/message_tool_use.json");
    let mut r = chat_reader(200, false, true);
    assert_eq!(
        String::from_utf8(feed(r.as_mut(), &[body])).unwrap(),
        r#"{"id":"msg_01Aq9w938a90dw8q","object":"chat.completion","created":1700000000,"model":"claude-sonnet-4-5","choices":[{"index":0,"message":{"role":"assistant","content":"I'll check the current weather in San Francisco for you.","tool_calls":[{"id":"toolu_01A09q90qw90lq917835lq9","type":"function","function":{"name":"get_weather","arguments":"{\"location\":\"San Francisco, CA\",\"unit\":\"celsius\"}"}}]},"logprobs":null,"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0,"prompt_tokens_details":{"cached_tokens":0}}}"#
    );

    let sse = include_bytes!("../../../../fixtures/anthropic/stream_tool_use.sse");
    let mut r = chat_reader(200, true, true);
    let out = String::from_utf8(feed(r.as_mut(), &[sse])).unwrap();
    let events: Vec<&str> = out.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(
        events[0],
        r#"data: {"id":"msg_014p7gG3wDgGV9EUtLvnow3U","object":"chat.completion.chunk","created":1700000000,"model":"claude-opus-4-8","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}"#
    );
    for want in [
        r#"data: {"id":"msg_014p7gG3wDgGV9EUtLvnow3U","object":"chat.completion.chunk","created":1700000000,"model":"claude-opus-4-8","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","type":"function","function":{"name":"get_weather","arguments":""}}]},"logprobs":null,"finish_reason":null}]}"#,
        r#"data: {"id":"msg_014p7gG3wDgGV9EUtLvnow3U","object":"chat.completion.chunk","created":1700000000,"model":"claude-opus-4-8","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":" CA\"}"}}]},"logprobs":null,"finish_reason":null}]}"#,
        r#"data: {"id":"msg_014p7gG3wDgGV9EUtLvnow3U","object":"chat.completion.chunk","created":1700000000,"model":"claude-opus-4-8","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}]}"#,
    ] {
        assert!(events.contains(&want), "{want}\nnot in\n{out}");
    }
    assert_eq!(events.last(), Some(&"data: [DONE]"));
}
