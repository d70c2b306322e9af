//! An Anthropic answer read as an OpenAI chat completion: the `message` body becomes a
//! `chat.completion`, each stream event the chunk it means (text, tool-call pieces, the
//! finish reason, the usage chunk when asked for, `[DONE]`), errors OpenAI's error shape.

use serde_json::{json, Value};

use super::{finish_reason, openai_usage};
use crate::protocol;
use crate::protocol::tally::{AnthropicUsage, Tally};
use crate::protocol::translate::{push_data, End, Translate};
use crate::provider::Wire;
use crate::sse::Event;
use crate::usage::Usage;

pub struct ToChat {
    pub(super) ok: bool,
    pub(super) status: u32,
    pub(super) created: u64,
    pub(super) include_usage: bool,
    pub(super) usage: Option<AnthropicUsage>,
    pub(super) tally: Tally,
    pub(super) id: String,
    /// The Anthropic block index of each tool call, in order (OpenAI numbers tool calls).
    pub(super) tools: Vec<u64>,
}

impl ToChat {
    fn add_usage(&mut self, u: Option<&Value>) {
        if let Some(u) = u.and_then(crate::answer::anthropic_usage_of_value) {
            self.usage.get_or_insert_with(Default::default).update(&u);
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
               "model": self.tally.model.as_deref().unwrap_or(""),
               "choices": [{"index": 0, "delta": delta, "logprobs": null,
                            "finish_reason": finish}]})
    }

    fn on_event(&mut self, e: &Event, out: &mut Vec<u8>) {
        let Ok(v) = serde_json::from_slice::<Value>(&e.data) else {
            return;
        };
        let str_at = |v: &Value, path: &[&str]| -> Option<String> {
            let mut at = v;
            for p in path {
                at = at.get(p)?;
            }
            at.as_str().map(str::to_string)
        };
        match v.get("type").and_then(Value::as_str).unwrap_or("") {
            "message_start" => {
                let m = v.get("message");
                self.id = m.and_then(|m| str_at(m, &["id"])).unwrap_or_default();
                self.tally
                    .model(m.and_then(|m| m.get("model")).and_then(Value::as_str));
                self.add_usage(m.and_then(|m| m.get("usage")));
                push_data(
                    out,
                    &self.chunk(json!({"role": "assistant", "content": ""}), None),
                );
            }
            "content_block_start" => {
                let block = v.get("content_block");
                match block.and_then(|b| b.get("type")).and_then(Value::as_str) {
                    Some("tool_use") => {
                        let index = self.tools.len();
                        self.tools
                            .push(v.get("index").and_then(Value::as_u64).unwrap_or(0));
                        let call = json!({"index": index,
                            "id": block.and_then(|b| b.get("id")),
                            "type": "function",
                            "function": {"name": block.and_then(|b| b.get("name")),
                                         "arguments": ""}});
                        push_data(out, &self.chunk(json!({"tool_calls": [call]}), None));
                    }
                    Some("text") => {
                        let text = block.and_then(|b| str_at(b, &["text"])).unwrap_or_default();
                        if !text.is_empty() {
                            self.tally.text(&text);
                            push_data(out, &self.chunk(json!({"content": text}), None));
                        }
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let d = v.get("delta").unwrap_or(&Value::Null);
                match d.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        let text = str_at(d, &["text"]).unwrap_or_default();
                        self.tally.text(&text);
                        push_data(out, &self.chunk(json!({"content": text}), None));
                    }
                    Some("input_json_delta") => {
                        let part = str_at(d, &["partial_json"]).unwrap_or_default();
                        let block = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                        let index = self.tools.iter().position(|b| *b == block);
                        if let (false, Some(index)) = (part.is_empty(), index) {
                            self.tally.text(&part);
                            let call = json!({"index": index, "function": {"arguments": part}});
                            push_data(out, &self.chunk(json!({"tool_calls": [call]}), None));
                        }
                    }
                    Some("thinking_delta") => {
                        let text = str_at(d, &["thinking"]).unwrap_or_default();
                        self.tally.text(&text);
                        let delta = json!({"reasoning_content": text});
                        push_data(out, &self.chunk(delta, None));
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                self.add_usage(v.get("usage"));
                let stop = v
                    .get("delta")
                    .and_then(|d| str_at(d, &["stop_reason"]))
                    .unwrap_or_default();
                push_data(out, &self.chunk(json!({}), Some(finish_reason(&stop))));
            }
            "message_stop" => {
                if self.include_usage {
                    let mut c = self.chunk(Value::Null, None);
                    if let Some(o) = c.as_object_mut() {
                        o.insert("choices".into(), json!([]));
                        o.insert(
                            "usage".into(),
                            openai_usage(&Translate::usage(self).unwrap_or_default()),
                        );
                    }
                    push_data(out, &c);
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
            }
            "error" => {
                let err = v.get("error");
                let message = err
                    .and_then(|e| str_at(e, &["message"]))
                    .unwrap_or_default();
                let kind = err
                    .and_then(|e| str_at(e, &["type"]))
                    .unwrap_or_else(|| "api_error".into());
                push_data(
                    out,
                    &json!({"error": {"message": message, "type": kind, "code": null}}),
                );
            }
            _ => {}
        }
    }

    /// A whole `message` body as a `chat.completion`.
    fn completion(&mut self, body: &[u8]) -> Vec<u8> {
        let Ok(m) = serde_json::from_slice::<Value>(body) else {
            return body.to_vec();
        };
        self.tally.model(m.get("model").and_then(Value::as_str));
        self.add_usage(m.get("usage"));
        let mut text: Option<String> = None;
        let mut thinking: Option<String> = None;
        let mut calls = Vec::new();
        for b in m
            .get("content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let s = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or("");
            match s("type") {
                "text" => text.get_or_insert_with(String::new).push_str(s("text")),
                "thinking" => thinking
                    .get_or_insert_with(String::new)
                    .push_str(s("thinking")),
                "tool_use" => {
                    let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                    calls.push(json!({"id": b.get("id"), "type": "function",
                        "function": {"name": b.get("name"), "arguments": input.to_string()}}));
                }
                _ => {}
            }
        }
        for t in [&text, &thinking].into_iter().flatten() {
            self.tally.text(t);
        }
        let mut message = json!({"role": "assistant", "content": text});
        if let Some(o) = message.as_object_mut() {
            if !calls.is_empty() {
                o.insert("tool_calls".into(), Value::Array(calls));
            }
            if let Some(t) = thinking {
                o.insert("reasoning_content".into(), Value::String(t));
            }
        }
        let stop = m.get("stop_reason").and_then(Value::as_str).unwrap_or("");
        json!({"id": m.get("id"), "object": "chat.completion", "created": self.created,
               "model": m.get("model"),
               "choices": [{"index": 0, "message": message, "logprobs": null,
                            "finish_reason": finish_reason(stop)}],
               "usage": openai_usage(&Translate::usage(self).unwrap_or_default())})
        .to_string()
        .into_bytes()
    }

    fn finish_with(&mut self, end: End) -> Vec<u8> {
        match end {
            End::Tail(bytes) => bytes,
            End::Body(body) if self.ok => self.completion(&body),
            End::Body(body) => {
                protocol::rewrap_error(Wire::Anthropic, Wire::OpenAi, self.status, &body)
            }
        }
    }
}

impl Translate for ToChat {
    fn event(&mut self, e: &Event, out: &mut Vec<u8>) {
        self.on_event(e, out);
    }

    fn end(&mut self, end: End) -> Vec<u8> {
        self.finish_with(end)
    }

    fn usage(&self) -> Option<Usage> {
        self.usage.map(|u| u.counted())
    }

    fn tally(&self) -> &Tally {
        &self.tally
    }
}
