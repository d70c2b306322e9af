//! An Anthropic answer read as an OpenAI chat completion: the `message` body becomes a
//! `chat.completion`, each stream event the chunk it means (text, tool-call pieces, the
//! finish reason, the usage chunk when asked for, `[DONE]`), errors OpenAI's error shape.

use serde_json::Value;

use super::{finish_reason, openai_usage};
use crate::json::{empty, obj, or_null, to_bytes, to_text};
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
        let choice = obj([
            ("index", Value::from(0)),
            ("delta", delta),
            ("logprobs", Value::Null),
            ("finish_reason", finish.map_or(Value::Null, Value::from)),
        ]);
        obj([
            ("id", Value::from(self.id.as_str())),
            ("object", Value::from("chat.completion.chunk")),
            ("created", Value::from(self.created)),
            (
                "model",
                Value::from(self.tally.model.as_deref().unwrap_or("")),
            ),
            ("choices", Value::Array(vec![choice])),
        ])
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
                    &self.chunk(
                        obj([("role", "assistant".into()), ("content", "".into())]),
                        None,
                    ),
                );
            }
            "content_block_start" => {
                let block = v.get("content_block");
                match block.and_then(|b| b.get("type")).and_then(Value::as_str) {
                    Some("tool_use") => {
                        let index = self.tools.len();
                        self.tools
                            .push(v.get("index").and_then(Value::as_u64).unwrap_or(0));
                        let function = obj([
                            ("name", or_null(block.and_then(|b| b.get("name")))),
                            ("arguments", "".into()),
                        ]);
                        let call = obj([
                            ("index", index.into()),
                            ("id", or_null(block.and_then(|b| b.get("id")))),
                            ("type", "function".into()),
                            ("function", function),
                        ]);
                        let delta = obj([("tool_calls", Value::Array(vec![call]))]);
                        push_data(out, &self.chunk(delta, None));
                    }
                    Some("text") => {
                        let text = block.and_then(|b| str_at(b, &["text"])).unwrap_or_default();
                        if !text.is_empty() {
                            self.tally.text(&text);
                            let delta = obj([("content", text.into())]);
                            push_data(out, &self.chunk(delta, None));
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
                        let delta = obj([("content", text.into())]);
                        push_data(out, &self.chunk(delta, None));
                    }
                    Some("input_json_delta") => {
                        let part = str_at(d, &["partial_json"]).unwrap_or_default();
                        let block = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                        let index = self.tools.iter().position(|b| *b == block);
                        if let (false, Some(index)) = (part.is_empty(), index) {
                            self.tally.text(&part);
                            let function = obj([("arguments", part.into())]);
                            let call = obj([("index", index.into()), ("function", function)]);
                            let delta = obj([("tool_calls", Value::Array(vec![call]))]);
                            push_data(out, &self.chunk(delta, None));
                        }
                    }
                    Some("thinking_delta") => {
                        let text = str_at(d, &["thinking"]).unwrap_or_default();
                        self.tally.text(&text);
                        let delta = obj([("reasoning_content", text.into())]);
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
                let delta = empty();
                push_data(out, &self.chunk(delta, Some(finish_reason(&stop))));
            }
            "message_stop" => {
                if self.include_usage {
                    let mut c = self.chunk(Value::Null, None);
                    if let Some(o) = c.as_object_mut() {
                        o.insert("choices".into(), Value::Array(Vec::new()));
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
                let error = obj([
                    ("message", message.into()),
                    ("type", kind.into()),
                    ("code", Value::Null),
                ]);
                push_data(out, &obj([("error", error)]));
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
                    let input = b.get("input").map(crate::json::copy).unwrap_or_else(empty);
                    let function = obj([
                        ("name", or_null(b.get("name"))),
                        ("arguments", to_text(&input).into()),
                    ]);
                    calls.push(obj([
                        ("id", or_null(b.get("id"))),
                        ("type", "function".into()),
                        ("function", function),
                    ]));
                }
                _ => {}
            }
        }
        for t in [&text, &thinking].into_iter().flatten() {
            self.tally.text(t);
        }
        let mut message = obj([
            ("role", "assistant".into()),
            ("content", text.map_or(Value::Null, Value::from)),
        ]);
        if let Some(o) = message.as_object_mut() {
            if !calls.is_empty() {
                o.insert("tool_calls".into(), Value::Array(calls));
            }
            if let Some(t) = thinking {
                o.insert("reasoning_content".into(), Value::String(t));
            }
        }
        let stop = m.get("stop_reason").and_then(Value::as_str).unwrap_or("");
        let choice = obj([
            ("index", 0.into()),
            ("message", message),
            ("logprobs", Value::Null),
            ("finish_reason", finish_reason(stop).into()),
        ]);
        let usage = openai_usage(&Translate::usage(self).unwrap_or_default());
        to_bytes(&obj([
            ("id", or_null(m.get("id"))),
            ("object", "chat.completion".into()),
            ("created", self.created.into()),
            ("model", or_null(m.get("model"))),
            ("choices", Value::Array(vec![choice])),
            ("usage", usage),
        ]))
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
