use serde_json::{json, Value};

use super::*;
use crate::config;
use crate::protocol::translate::tests::{answering, at_every_split, feed};
use crate::protocol::{read_request, shape as shape_for};

fn instance(cfg: Value) -> Instance {
    config::parse(cfg.to_string().as_bytes())
        .unwrap()
        .instances
        .remove(0)
}

#[test]
fn a_messages_request_passes_with_options_patched_in() {
    let cfg = json!({"provider": "anthropic",
        "auth": {"header": {"x-api-key": "sk-ant"}},
        "options": {"model": "claude-sonnet-4-5", "max_tokens": 512}});
    let parsed = config::parse(cfg.to_string().as_bytes()).unwrap();
    let inst = instance(cfg);
    let body = br#"{"model":"x","max_tokens":10,"messages":[{"role":"user","content":"hi"}],"stream":true}"#;
    let req = read_request(body, &parsed, Some(ApiKind::Messages)).unwrap();
    let up = shape_for(&inst, &req).unwrap();
    assert_eq!(
        (up.cluster, up.authority, up.path),
        ("anthropic", "api.anthropic.com", "/v1/messages")
    );
    assert_eq!(
        up.auth_headers,
        &[("x-api-key".to_string(), "sk-ant".to_string())]
    );
    assert_eq!(
        up.preset_headers,
        &[("anthropic-version", crate::provider::ANTHROPIC_VERSION)]
    );
    assert!(up.stream && !up.drop_usage_event);
    assert_eq!(up.model.as_deref(), Some("claude-sonnet-4-5"));
    let sent: Value = serde_json::from_slice(&up.body.as_ref().unwrap().apply(body)).unwrap();
    assert_eq!(
        sent,
        json!({"model": "claude-sonnet-4-5", "max_tokens": 512,
               "messages": [{"role": "user", "content": "hi"}], "stream": true})
    );
    // Embeddings have no Anthropic counterpart.
    let req = read_request(br#"{"input":"x"}"#, &parsed, Some(ApiKind::Embeddings)).unwrap();
    assert_eq!(
        shape_for(&inst, &req).unwrap_err().code(),
        "unsupported_request_kind"
    );
}

#[test]
fn stream_usage_counts_input_cache_and_cumulative_output_at_every_split() {
    let sse = concat!(
        "event: message_start\n",
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"claude-x\",",
        "\"usage\":{\"input_tokens\":10,\"cache_creation_input_tokens\":20,",
        "\"cache_read_input_tokens\":30,\"output_tokens\":1}}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,",
        "\"delta\":{\"type\":\"text_delta\",\"text\":\"Hé\"}}\n\n",
        "event: message_delta\n",
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},",
        "\"usage\":{\"output_tokens\":7}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );
    let make =
        || -> Box<dyn Reader> { Anthropic.reader(answering(ApiKind::Messages, 200, true, false)) };
    let (out, r) = at_every_split(sse.as_bytes(), &make);
    assert_eq!(out, sse.as_bytes(), "every byte passes unchanged");
    let u = r.usage();
    assert_eq!(
        (
            u.prompt_tokens,
            u.completion_tokens,
            u.total_tokens,
            u.cached_tokens
        ),
        (60, 7, 67, 30)
    );
    assert_eq!(r.model(), Some("claude-x"));
    assert_eq!(r.text(), Some("Hé"));

    let sse = include_bytes!("../../../fixtures/anthropic/stream_tool_use.sse");
    let (out, r) = at_every_split(sse, &make);
    assert_eq!(out, sse.to_vec());
    assert_eq!(
        (r.usage().prompt_tokens, r.usage().completion_tokens),
        (472, 89)
    );
}

#[test]
fn a_json_answer_is_read_and_passed_unchanged() {
    let body = include_bytes!("../../../fixtures/anthropic/message.json");
    let mut r = Anthropic.reader(answering(ApiKind::Messages, 200, false, false));
    assert_eq!(feed(r.as_mut(), &[body]), body.to_vec());
    assert!(!r.rewrites());
    assert_eq!(r.usage().total_tokens, 18);
    assert_eq!(r.model(), Some("claude-opus-4-8"));
    assert_eq!(r.text(), Some("Hello!"));
}

#[test]
fn errors_in_anthropic_shape() {
    let body: Value = serde_json::from_slice(&error(529, "busy")).unwrap();
    assert_eq!(
        body,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})
    );
    for (status, kind) in [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (405, "invalid_request_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (504, "timeout_error"),
    ] {
        assert_eq!(error_type(status), kind, "{status}");
    }
    let err = ProxyError::BodyTooLarge { limit: 5 };
    let body: Value = serde_json::from_slice(&Anthropic.error_body(&err)).unwrap();
    assert_eq!(body["error"]["type"], "request_too_large");
    assert!(body["error"]["message"].as_str().unwrap().contains('5'));
}
