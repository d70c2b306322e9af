//! An OpenAI chat answer read as an Anthropic `message`: the `chat.completion` body becomes
//! a `message`, the chunks of a stream Anthropic's events (`message_start`, a content block
//! per text run or tool call, `message_delta` with the stop reason and the usage,
//! `message_stop`), errors Anthropic's error shape.

use serde_json::Value;

use super::stop_reason;
use crate::json::{empty, obj, or_null, to_bytes};
use crate::protocol;
use crate::protocol::tally::Tally;
use crate::protocol::translate::{push_event, End, Translate};
use crate::provider::Wire;
use crate::sse::Event;
use crate::usage::Usage;

/// The content block being streamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    None,
    Text(u64),
    Tool(u64),
}

pub struct ToMessages {
    pub(super) ok: bool,
    pub(super) status: u32,
    pub(super) usage: Option<Usage>,
    pub(super) tally: Tally,
    pub(super) id: String,
    pub(super) started: bool,
    pub(super) finished: bool,
    pub(super) open: Open,
    /// Blocks started so far (the next block's index).
    pub(super) blocks: u64,
    pub(super) stop: Option<&'static str>,
}

/// Anthropic's usage for counted usage (its `input_tokens` leaves the cache reads out).
fn anthropic_usage(u: &Usage) -> Value {
    obj([
        (
            "input_tokens",
            u.prompt_tokens.saturating_sub(u.cached_tokens).into(),
        ),
        ("cache_creation_input_tokens", 0.into()),
        ("cache_read_input_tokens", u.cached_tokens.into()),
        ("output_tokens", u.completion_tokens.into()),
    ])
}

impl ToMessages {
    fn start(&mut self, chunk: &Value, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        self.id = chunk
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let usage = obj([("input_tokens", 0.into()), ("output_tokens", 0.into())]);
        let message = obj([
            ("id", self.id.as_str().into()),
            ("type", "message".into()),
            ("role", "assistant".into()),
            ("content", Value::Array(Vec::new())),
            ("model", self.tally.model.as_deref().unwrap_or("").into()),
            ("stop_reason", Value::Null),
            ("stop_sequence", Value::Null),
            ("usage", usage),
        ]);
        let start = obj([("type", "message_start".into()), ("message", message)]);
        push_event(out, "message_start", &start);
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if let Open::Text(i) | Open::Tool(i) = self.open {
            push_event(
                out,
                "content_block_stop",
                &obj([("type", "content_block_stop".into()), ("index", i.into())]),
            );
        }
        self.open = Open::None;
    }

    fn open_block(&mut self, block: Value, tool: bool, out: &mut Vec<u8>) -> u64 {
        self.close(out);
        let index = self.blocks;
        self.blocks = self.blocks.saturating_add(1);
        self.open = if tool {
            Open::Tool(index)
        } else {
            Open::Text(index)
        };
        let start = obj([
            ("type", "content_block_start".into()),
            ("index", index.into()),
            ("content_block", block),
        ]);
        push_event(out, "content_block_start", &start);
        index
    }

    fn delta(out: &mut Vec<u8>, index: u64, delta: Value) {
        let event = obj([
            ("type", "content_block_delta".into()),
            ("index", index.into()),
            ("delta", delta),
        ]);
        push_event(out, "content_block_delta", &event);
    }

    fn text(&mut self, text: &str, out: &mut Vec<u8>) {
        self.tally.text(text);
        let index = match self.open {
            Open::Text(i) => i,
            _ => {
                let block = obj([("type", "text".into()), ("text", "".into())]);
                self.open_block(block, false, out)
            }
        };
        let delta = obj([("type", "text_delta".into()), ("text", text.into())]);
        Self::delta(out, index, delta);
    }

    fn tool_call(&mut self, call: &Value, out: &mut Vec<u8>) {
        let f = call.get("function");
        if let Some(id) = call.get("id").filter(|id| id.is_string()) {
            let block = obj([
                ("type", "tool_use".into()),
                ("id", crate::json::copy(id)),
                ("name", or_null(f.and_then(|f| f.get("name")))),
                ("input", empty()),
            ]);
            self.open_block(block, true, out);
        }
        let args = f
            .and_then(|f| f.get("arguments"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if let (Open::Tool(index), false) = (self.open, args.is_empty()) {
            self.tally.text(args);
            let delta = obj([
                ("type", "input_json_delta".into()),
                ("partial_json", args.into()),
            ]);
            Self::delta(out, index, delta);
        }
    }

    /// The end of the stream: the open block closed, the stop reason and usage, the stop.
    fn finish_stream(&mut self, out: &mut Vec<u8>) {
        if !self.started || self.finished {
            return;
        }
        self.finished = true;
        self.close(out);
        let usage = anthropic_usage(&self.usage.unwrap_or_default());
        let delta = obj([
            ("stop_reason", self.stop.unwrap_or("end_turn").into()),
            ("stop_sequence", Value::Null),
        ]);
        let event = obj([
            ("type", "message_delta".into()),
            ("delta", delta),
            ("usage", usage),
        ]);
        push_event(out, "message_delta", &event);
        let stop = obj([("type", "message_stop".into())]);
        push_event(out, "message_stop", &stop);
    }

    fn on_event(&mut self, e: &Event, out: &mut Vec<u8>) {
        if e.data.as_slice() == b"[DONE]" {
            self.finish_stream(out);
            return;
        }
        let Ok(chunk) = serde_json::from_slice::<Value>(&e.data) else {
            return;
        };
        if let Some(err) = chunk.get("error") {
            let message = err.get("message").and_then(Value::as_str).unwrap_or("");
            let error = obj([("type", "api_error".into()), ("message", message.into())]);
            let data = obj([("type", "error".into()), ("error", error)]);
            push_event(out, "error", &data);
            return;
        }
        self.tally.model(chunk.get("model").and_then(Value::as_str));
        self.start(&chunk, out);
        if let Some(u) = chunk.get("usage").and_then(Usage::from_openai) {
            self.usage = Some(u);
        }
        let choices = chunk.get("choices").and_then(Value::as_array);
        for choice in choices.into_iter().flatten().take(1) {
            let delta = choice.get("delta");
            if let Some(text) = delta
                .and_then(|d| d.get("content"))
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
            {
                self.text(text, out);
            }
            let calls = delta
                .and_then(|d| d.get("tool_calls"))
                .and_then(Value::as_array);
            for call in calls.into_iter().flatten() {
                self.tool_call(call, out);
            }
            if let Some(finish) = choice.get("finish_reason").and_then(Value::as_str) {
                self.stop = Some(stop_reason(finish));
            }
        }
    }

    /// A whole `chat.completion` as a `message`.
    fn message(&mut self, body: &[u8]) -> Vec<u8> {
        let Ok(c) = serde_json::from_slice::<Value>(body) else {
            return body.to_vec();
        };
        self.tally.model(c.get("model").and_then(Value::as_str));
        self.usage = c.get("usage").and_then(Usage::from_openai);
        let choice = c
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|a| a.first());
        let message = choice.and_then(|ch| ch.get("message"));
        let mut content = Vec::new();
        if let Some(text) = message
            .and_then(|m| m.get("content"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            self.tally.text(text);
            content.push(obj([("type", "text".into()), ("text", text.into())]));
        }
        let calls = message
            .and_then(|m| m.get("tool_calls"))
            .and_then(Value::as_array);
        for call in calls.into_iter().flatten() {
            let f = call.get("function");
            let args = f
                .and_then(|f| f.get("arguments"))
                .and_then(Value::as_str)
                .unwrap_or("{}");
            self.tally.text(args);
            let input = serde_json::from_slice::<Value>(args.as_bytes())
                .ok()
                .filter(Value::is_object)
                .unwrap_or_else(empty);
            content.push(obj([
                ("type", "tool_use".into()),
                ("id", or_null(call.get("id"))),
                ("name", or_null(f.and_then(|f| f.get("name")))),
                ("input", input),
            ]));
        }
        let finish = choice
            .and_then(|ch| ch.get("finish_reason"))
            .and_then(Value::as_str)
            .unwrap_or("stop");
        let usage = anthropic_usage(&self.usage.unwrap_or_default());
        to_bytes(&obj([
            ("id", or_null(c.get("id"))),
            ("type", "message".into()),
            ("role", "assistant".into()),
            ("model", or_null(c.get("model"))),
            ("content", Value::Array(content)),
            ("stop_reason", stop_reason(finish).into()),
            ("stop_sequence", Value::Null),
            ("usage", usage),
        ]))
    }

    fn finish_with(&mut self, end: End) -> Vec<u8> {
        match end {
            End::Tail(mut bytes) => {
                // A stream that ended without `[DONE]` still ends as Anthropic's does.
                if self.ok && self.stop.is_some() {
                    self.finish_stream(&mut bytes);
                }
                bytes
            }
            End::Body(body) if self.ok => self.message(&body),
            End::Body(body) => {
                protocol::rewrap_error(Wire::OpenAi, Wire::Anthropic, self.status, &body)
            }
        }
    }
}

impl Translate for ToMessages {
    fn event(&mut self, e: &Event, out: &mut Vec<u8>) {
        self.on_event(e, out);
    }

    fn end(&mut self, end: End) -> Vec<u8> {
        self.finish_with(end)
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }

    fn tally(&self) -> &Tally {
        &self.tally
    }
}
