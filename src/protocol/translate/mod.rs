//! Translation between OpenAI chat completions and Anthropic Messages, both ways: a request
//! of one protocol shaped for an instance of the other, and its answer (a JSON body, a
//! stream event by event, an error) turned back into what the client's SDK reads. A field
//! that has no counterpart is refused with a 400 naming it, never dropped unsaid.
//!
//! `chat_to_messages`: OpenAI clients served by an `anthropic` instance.
//! `messages_to_chat`: Anthropic clients (Claude Code) served by an OpenAI-compatible one.

pub mod chat_to_messages;
pub mod messages_to_chat;

use serde_json::{Map, Value};

use super::tally::Tally;
use super::{Reader, Request, Upstream};
use crate::body::{BodyError, Patch};
use crate::config::Instance;
use crate::error::ProxyError;
use crate::sse::{Event, SseFramer, Verdict};
use crate::usage::{Usage, MAX_JSON_FOR_USAGE};

/// The client's body as a JSON object, members in order.
fn object(req: &Request<'_>) -> Result<Map<String, Value>, ProxyError> {
    serde_json::from_slice(req.body.text().as_bytes())
        .map_err(|e| ProxyError::Body(BodyError::Invalid(e.to_string())))
}

#[inline(never)] // once per argument type, not at each error site ("Round 14")
fn untranslatable(field: impl Into<String>, to: &'static str) -> ProxyError {
    ProxyError::Untranslatable {
        field: field.into(),
        to,
    }
}

/// `options`, in the instance's protocol, over the translated body.
fn merge_options(body: &mut Map<String, Value>, instance: &Instance) {
    for (key, raw) in &instance.options {
        if let Ok(v) = serde_json::from_slice::<Value>(raw.as_bytes()) {
            body.insert(key.clone(), v);
        }
    }
}

/// The upstream request of a translated body.
fn upstream<'c>(
    instance: &'c Instance,
    path: &'c str,
    body: Map<String, Value>,
    req: &Request<'_>,
    drop_usage_event: bool,
    foreign_headers: &'static [&'static str],
) -> Upstream<'c> {
    Upstream {
        cluster: &instance.cluster,
        authority: &instance.target.authority,
        path,
        auth_headers: &instance.auth_headers,
        drop_client_authorization: instance.has_auth,
        preset_headers: instance.provider.headers(),
        foreign_headers,
        body: Some(Patch::whole(
            crate::json::to_text(&Value::Object(body)),
            req.body.text().len(),
        )),
        stream: super::streams(instance, &req.client),
        drop_usage_event,
        model: super::model(instance, &req.client),
    }
}

/// A value the other side takes as "not given": `null`, `false`, `0`, or `1` for `n`.
fn is_default(key: &str, v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::Number(n) => n.as_f64() == Some(if key == "n" { 1.0 } else { 0.0 }),
        _ => false,
    }
}

/// The text of a string, or of an array of text parts (`{"type": "text", "text": ...}`),
/// joined; `None` when a part is not text.
fn text_of(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let mut out = String::new();
            for p in parts {
                if p.get("type").and_then(Value::as_str) != Some("text") {
                    return None;
                }
                if !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(p.get("text").and_then(Value::as_str)?);
            }
            Some(out)
        }
        _ => None,
    }
}

fn push_data(out: &mut Vec<u8>, data: &Value) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(&crate::json::to_bytes(data));
    out.extend_from_slice(b"\n\n");
}

fn push_event(out: &mut Vec<u8>, name: &str, data: &Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.push(b'\n');
    push_data(out, data);
}

/// The byte side of a translating reader: a stream is framed and every event replaced by
/// its translation; a JSON body is held whole and translated at its end (past
/// [`MAX_JSON_FOR_USAGE`] it passes on untranslated rather than be held in memory).
pub struct Frames {
    sse: Option<SseFramer>,
    json: Vec<u8>,
    overflow: bool,
}

impl Frames {
    pub fn new(sse: bool) -> Frames {
        Frames {
            sse: sse.then(SseFramer::default),
            json: Vec::new(),
            overflow: false,
        }
    }

    pub fn is_sse(&self) -> bool {
        self.sse.is_some()
    }

    /// A chunk: what goes on now.
    pub fn push(
        &mut self,
        chunk: &[u8],
        on_event: &mut dyn FnMut(&Event, &mut Vec<u8>),
    ) -> Vec<u8> {
        match self.sse.as_mut() {
            Some(framer) => {
                let mut out = Vec::new();
                framer.push(chunk, &mut |e| {
                    on_event(e, &mut out);
                    Verdict::Drop
                });
                out
            }
            None if self.overflow => chunk.to_vec(),
            None => {
                if self.json.len().saturating_add(chunk.len()) > MAX_JSON_FOR_USAGE {
                    self.overflow = true;
                    let mut out = std::mem::take(&mut self.json);
                    out.extend_from_slice(chunk);
                    return out;
                }
                self.json.extend_from_slice(chunk);
                Vec::new()
            }
        }
    }

    /// The end: a stream's last event, translated, or the whole JSON body to translate.
    pub fn finish(&mut self, on_event: &mut dyn FnMut(&Event, &mut Vec<u8>)) -> End {
        match self.sse.as_mut() {
            Some(framer) => {
                let mut out = Vec::new();
                framer.finish(&mut |e| {
                    on_event(e, &mut out);
                    Verdict::Drop
                });
                End::Tail(out)
            }
            None if self.overflow => End::Tail(Vec::new()),
            None => End::Body(std::mem::take(&mut self.json)),
        }
    }
}

/// One direction of answer translation: each stream event, and the end.
pub trait Translate {
    /// A stream event: its translation goes to `out`.
    fn event(&mut self, e: &Event, out: &mut Vec<u8>);
    /// The answer ended: the bytes to send last.
    fn end(&mut self, end: End) -> Vec<u8>;
    /// The usage the upstream reported, as the filter counts it.
    fn usage(&self) -> Option<Usage>;
    fn tally(&self) -> &Tally;
}

/// A reader that translates every byte of an answer (so the length changes).
pub struct Translating<T> {
    frames: Frames,
    inner: T,
}

impl<T: Translate> Translating<T> {
    pub fn new(sse: bool, inner: T) -> Translating<T> {
        Translating {
            frames: Frames::new(sse),
            inner,
        }
    }
}

impl<T: Translate> Reader for Translating<T> {
    fn push(&mut self, chunk: &[u8]) -> Option<Vec<u8>> {
        let inner = &mut self.inner;
        Some(self.frames.push(chunk, &mut |e, out| inner.event(e, out)))
    }

    fn finish(&mut self) -> Option<Vec<u8>> {
        let inner = &mut self.inner;
        let end = self.frames.finish(&mut |e, out| inner.event(e, out));
        Some(self.inner.end(end))
    }

    fn rewrites(&self) -> bool {
        true
    }

    fn usage(&self) -> Usage {
        self.inner.usage().unwrap_or_default()
    }

    fn has_usage(&self) -> bool {
        self.inner.usage().is_some()
    }

    fn seen_chars(&self) -> u64 {
        self.inner.tally().seen
    }

    fn model(&self) -> Option<&str> {
        self.inner.tally().model.as_deref()
    }

    fn text(&self) -> Option<&str> {
        self.inner.tally().text.as_deref()
    }
}

/// How an answer ended.
pub enum End {
    /// Bytes to send last (a stream's translated tail).
    Tail(Vec<u8>),
    /// The whole JSON body, to translate.
    Body(Vec<u8>),
}

#[cfg(test)]
pub(crate) mod tests;
