//! What the mock answers: [`Reply`] (status, headers, timing, usage numbers, text, tool call)
//! and its [`Body`]. The knobs here are read by every API's generator, so one `Reply` means
//! the same tokens and text whichever API the request used.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};

/// What the body of a reply is.
#[derive(Debug, Clone)]
pub enum Body {
    /// An answer in the shape of the API the request's path names (plain JSON, or SSE when
    /// the request says `stream: true`): `.../chat/completions` (and any path that names no
    /// API) chat, `.../embeddings`, `.../responses` (OpenAI Responses), `.../completions`
    /// (legacy), `.../messages` (Anthropic Messages), `.../models` (model list).
    Auto,
    Json(Value),
    Raw {
        content_type: String,
        bytes: Bytes,
    },
    /// Raw byte chunks written one by one with `interval` between them (for SSE framing
    /// tests: split anywhere).
    Chunks {
        content_type: String,
        chunks: Vec<Bytes>,
        interval: Duration,
    },
    /// An error body in the shape of the API the path names: OpenAI's
    /// `{"error": {...}}`, or Anthropic's `{"type": "error", "error": {...}}` for
    /// `.../messages`. [`Reply::status`] uses it for statuses >= 400.
    Error,
}

/// The tool call a reply makes when the request offers tools (`tools` in the body).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub name: String,
    /// The arguments as JSON text, as OpenAI sends them (Anthropic gets them as an object).
    pub arguments: String,
}

/// One answer. `Reply::default()` is a 200 with an automatic body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Wait before the response headers.
    pub delay: Duration,
    pub body: Body,
    /// Usage numbers for automatic bodies. `prompt_tokens` is the whole prompt, cached
    /// tokens included (OpenAI's meaning); an Anthropic answer reports the uncached rest as
    /// `input_tokens`, so `input + cache_creation + cache_read == prompt_tokens`.
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Prompt tokens read from the provider's cache (OpenAI `cached_tokens`, Anthropic
    /// `cache_read_input_tokens`), part of `prompt_tokens`.
    pub cached_tokens: u64,
    /// Prompt tokens written to the cache (Anthropic `cache_creation_input_tokens`), part of
    /// `prompt_tokens`. OpenAI answers do not report it.
    pub cache_write_tokens: u64,
    /// Reasoning tokens (OpenAI `reasoning_tokens`), part of `completion_tokens`.
    pub reasoning_tokens: u64,
    /// Automatic SSE: content events, and the pause between events.
    pub events: usize,
    pub interval: Duration,
    /// Close the connection without answering.
    pub drop_connection: bool,
    /// Streamed bodies: reset the stream after this many chunks (an upstream that dies).
    pub abort_after: Option<usize>,
    /// Streamed bodies: after this many chunks, wait this long (a slow upstream).
    pub pause: Option<(usize, Duration)>,
    /// The answer's text; `None` keeps the defaults ("Hello from the mock." plain,
    /// "tok0 tok1 ..." streamed). Streamed, a set text is cut into `events` deltas.
    pub text: Option<String>,
    /// Answer with this tool call when the request carries `tools`.
    pub tool_call: Option<ToolCall>,
    /// The model ids a `.../models` request lists.
    pub models: Vec<String>,
}

impl Default for Reply {
    fn default() -> Self {
        Reply {
            status: 200,
            headers: Vec::new(),
            delay: Duration::ZERO,
            body: Body::Auto,
            prompt_tokens: 11,
            completion_tokens: 7,
            cached_tokens: 0,
            cache_write_tokens: 0,
            reasoning_tokens: 0,
            events: 3,
            interval: Duration::ZERO,
            drop_connection: false,
            abort_after: None,
            pause: None,
            text: None,
            tool_call: None,
            models: vec!["mock-model".to_string()],
        }
    }
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        let body = if status >= 400 {
            Body::Error
        } else {
            Body::Auto
        };
        Reply {
            status,
            body,
            ..Reply::default()
        }
    }

    pub fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            body: Body::Json(body),
            ..Reply::default()
        }
    }

    /// An Anthropic error whatever the path: `{"type": "error", "error": {"type": kind,
    /// "message": ...}}`, e.g. `Reply::anthropic_error(529, "overloaded_error")`.
    pub fn anthropic_error(status: u16, kind: &str) -> Reply {
        Reply::json(status, anthropic_error_body(kind, &format!("mock {kind}")))
    }

    /// A tool call (when the request offers tools): `arguments` is the call's input object,
    /// e.g. `Reply::tool_call("get_weather", json!({"city": "Paris"}))`.
    pub fn tool_call(name: &str, arguments: Value) -> Reply {
        Reply {
            tool_call: Some(ToolCall {
                name: name.to_string(),
                arguments: arguments.to_string(),
            }),
            ..Reply::default()
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn delay(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }

    pub fn usage(mut self, prompt: u64, completion: u64) -> Reply {
        self.prompt_tokens = prompt;
        self.completion_tokens = completion;
        self
    }

    /// Prompt tokens served from the cache (part of the prompt).
    pub fn cached(mut self, tokens: u64) -> Reply {
        self.cached_tokens = tokens;
        self
    }

    /// Prompt tokens written to the cache (Anthropic only; part of the prompt).
    pub fn cache_write(mut self, tokens: u64) -> Reply {
        self.cache_write_tokens = tokens;
        self
    }

    /// Reasoning tokens (part of the completion).
    pub fn reasoning(mut self, tokens: u64) -> Reply {
        self.reasoning_tokens = tokens;
        self
    }

    pub fn sse(mut self, events: usize, interval: Duration) -> Reply {
        self.events = events;
        self.interval = interval;
        self
    }

    /// The answer's text (streamed: cut into `events` deltas).
    pub fn text(mut self, text: &str) -> Reply {
        self.text = Some(text.to_string());
        self
    }

    /// The ids `.../models` lists.
    pub fn models(mut self, ids: &[&str]) -> Reply {
        self.models = ids.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn dropped() -> Reply {
        Reply {
            drop_connection: true,
            ..Reply::default()
        }
    }

    /// The whole text of a plain (not streamed) answer.
    pub fn plain_text(&self) -> String {
        self.text
            .clone()
            .unwrap_or_else(|| "Hello from the mock.".to_string())
    }

    /// The deltas of a streamed answer, in order; their concatenation is the streamed text.
    pub fn stream_pieces(&self) -> Vec<String> {
        match &self.text {
            Some(text) => split_even(text, self.events),
            None => (0..self.events).map(|i| format!("tok{i} ")).collect(),
        }
    }

    /// The tool call to make, when the reply has one and the request offers tools.
    pub fn tool_call_for(&self, asked: &Value) -> Option<&ToolCall> {
        let offers = asked["tools"].as_array().is_some_and(|t| !t.is_empty());
        self.tool_call.as_ref().filter(|_| offers)
    }

    /// Anthropic's `input_tokens`: the prompt less what the cache read or wrote.
    pub fn uncached_prompt_tokens(&self) -> u64 {
        self.prompt_tokens
            .saturating_sub(self.cached_tokens)
            .saturating_sub(self.cache_write_tokens)
    }
}

/// `text` cut into `n` pieces of about equal length on char boundaries (none when `n` is 0;
/// pieces may be empty when the text is shorter than `n`).
pub fn split_even(text: &str, n: usize) -> Vec<String> {
    if n == 0 {
        return Vec::new();
    }
    let chars: Vec<char> = text.chars().collect();
    let per = chars.len().div_ceil(n);
    (0..n)
        .map(|i| {
            let from = (i * per).min(chars.len());
            let to = ((i + 1) * per).min(chars.len());
            chars.get(from..to).unwrap_or(&[]).iter().collect()
        })
        .collect()
}

/// Anthropic's error body.
pub fn anthropic_error_body(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_mock"})
}

/// The Anthropic error type for a status, as Anthropic documents them.
pub fn anthropic_error_kind(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_even_keeps_every_char_in_order() {
        for n in 1..8 {
            let pieces = split_even("héllo wörld", n);
            assert_eq!(pieces.len(), n);
            assert_eq!(pieces.concat(), "héllo wörld");
        }
        assert!(split_even("abc", 0).is_empty());
    }

    #[test]
    fn streamed_pieces_default_and_set_text() {
        let r = Reply::default();
        assert_eq!(r.stream_pieces(), ["tok0 ", "tok1 ", "tok2 "]);
        let r = Reply::default().text("Hello there").sse(4, Duration::ZERO);
        assert_eq!(r.stream_pieces().len(), 4);
        assert_eq!(r.stream_pieces().concat(), "Hello there");
        assert_eq!(r.plain_text(), "Hello there");
    }

    #[test]
    fn tool_call_only_when_tools_are_offered() {
        let r = Reply::tool_call("f", json!({"a": 1}));
        assert!(r.tool_call_for(&json!({"messages": []})).is_none());
        assert!(r.tool_call_for(&json!({"tools": []})).is_none());
        let call = r.tool_call_for(&json!({"tools": [{"name": "f"}]}));
        assert_eq!(call.map(|c| c.arguments.as_str()), Some(r#"{"a":1}"#));
    }

    #[test]
    fn anthropic_input_tokens_exclude_the_cache() {
        let r = Reply::default().usage(100, 5).cached(30).cache_write(20);
        assert_eq!(r.uncached_prompt_tokens(), 50);
        assert_eq!(
            Reply::default()
                .usage(3, 1)
                .cached(9)
                .uncached_prompt_tokens(),
            0
        );
    }
}
