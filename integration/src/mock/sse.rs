//! Server-sent events as the providers frame them (OpenAI chat and completions: `data:`
//! lines only; OpenAI Responses and Anthropic: `event:` then `data:`), and a small reader
//! of such text for the tests.

use bytes::Bytes;
use serde_json::Value;

/// `data: {json}` and a blank line.
pub fn data_event(data: &Value) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

/// `event: {name}`, `data: {json}` and a blank line.
pub fn named_event(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// One event read back from SSE text.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

impl SseEvent {
    /// The data as JSON (`Null` when it is not JSON, e.g. `[DONE]`).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or(Value::Null)
    }
}

/// Reads SSE text (`\n`, `\r\n` or `\r` line ends) into events, as a browser's EventSource
/// does: comments and unknown fields are skipped, and a block with no `data:` is no event.
pub fn parse_sse(text: &str) -> Vec<SseEvent> {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut out = Vec::new();
    let (mut event, mut data): (Option<String>, Option<String>) = (None, None);
    for line in text.split('\n') {
        if line.is_empty() {
            if let Some(d) = data.take() {
                out.push(SseEvent {
                    event: event.take(),
                    data: d,
                });
            }
            event = None;
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => event = Some(value.to_string()),
            "data" => {
                data = Some(match data.take() {
                    Some(d) => format!("{d}\n{value}"),
                    None => value.to_string(),
                })
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_named_and_data_only_events() {
        let text = "event: a\ndata: {\"x\":1}\n\n: comment\ndata: [DONE]\n\n...\n\n";
        let events = parse_sse(text);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].event.as_deref(), Some("a"));
        assert_eq!(events[0].json()["x"], 1);
        assert_eq!(events[1].event, None);
        assert_eq!(events[1].data, "[DONE]");
    }

    #[test]
    fn joins_multi_line_data_and_reads_crlf() {
        let events = parse_sse("data:a\r\ndata: b\r\n\r\n");
        assert_eq!(events[0].data, "a\nb");
    }
}
