//! The Anthropic Messages protocol: a Messages request shaped for an `anthropic` instance
//! (`options` patched in, `anthropic-version` from the preset), its answer read as it
//! passes for usage (`message_start` input and cache tokens, `message_delta` cumulative
//! output tokens) without changing a byte, and Anthropic-style errors
//! (`{"type":"error","error":{"type","message"}}`) for clients of this API.

use crate::json::{self, obj};

use super::tally::{AnthropicUsage, Tally};
use super::{Answering, Protocol, Reader, Request, Upstream};
use crate::config::Instance;
use crate::error::ProxyError;
use crate::provider::ApiKind;
use crate::sse::{Event as SseEvent, SseFramer, Verdict};
use crate::usage::{Usage, MAX_JSON_FOR_USAGE};

/// Client headers of the OpenAI protocol, dropped when a chat request is translated.
pub const OPENAI_HEADERS: &[&str] = &["openai-organization", "openai-project", "openai-beta"];

pub struct Anthropic;

impl Protocol for Anthropic {
    fn shape<'c>(
        &self,
        instance: &'c Instance,
        req: &Request<'_>,
    ) -> Result<Upstream<'c>, ProxyError> {
        match req.client.kind {
            ApiKind::Messages => shape(instance, req),
            ApiKind::Chat => super::translate::chat_to_messages::shape(instance, req),
            kind => Err(ProxyError::KindNotOffered {
                provider: instance.provider.name(),
                kind: kind.name(),
            }),
        }
    }

    fn reader(&self, a: Answering) -> Box<dyn Reader> {
        Box::new(Meter::new(a.sse, a.collect_text))
    }

    fn error(&self, status: u32, message: &str, _code: Option<&str>) -> Vec<u8> {
        error(status, message)
    }
}

/// Anthropic's error type for a status (its SDKs pick the exception by status; the type
/// names it for people).
pub fn error_type(status: u32) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// An Anthropic-style error body.
pub fn error(status: u32, message: &str) -> Vec<u8> {
    let error = obj([
        ("type", error_type(status).into()),
        ("message", message.into()),
    ]);
    json::to_bytes(&obj([("type", "error".into()), ("error", error)]))
}

/// A Messages request to a Messages instance: the client's body with `options` patched in.
fn shape<'c>(instance: &'c Instance, req: &Request<'_>) -> Result<Upstream<'c>, ProxyError> {
    let path = super::path(instance, ApiKind::Messages)?;
    let edits = instance
        .options
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()));
    Ok(Upstream {
        cluster: &instance.cluster,
        authority: &instance.target.authority,
        path,
        auth_headers: &instance.auth_headers,
        drop_client_authorization: instance.has_auth,
        preset_headers: instance.provider.headers(),
        foreign_headers: &[],
        body: req.body.patch(edits),
        stream: super::streams(instance, &req.client),
        drop_usage_event: false,
        model: super::model(instance, &req.client),
    })
}

/// What is read of a Messages answer, or of one stream event (by `answer::anthropic`; serde's
/// derive code, its reference, only in tests and the fuzz build).
#[derive(Debug, Default, PartialEq)]
#[cfg_attr(any(test, feature = "reference-derive"), derive(serde::Deserialize))]
pub struct Message {
    pub model: Option<String>,
    pub usage: Option<AnthropicUsage>,
    pub content: Option<Vec<Block>>,
}

#[derive(Debug, PartialEq)]
#[cfg_attr(any(test, feature = "reference-derive"), derive(serde::Deserialize))]
pub struct Block {
    pub text: Option<String>,
    pub thinking: Option<String>,
}

/// One stream event (only the members the filter reads).
#[derive(Debug, PartialEq)]
#[cfg_attr(any(test, feature = "reference-derive"), derive(serde::Deserialize))]
pub struct Event {
    #[cfg_attr(any(test, feature = "reference-derive"), serde(rename = "type"))]
    pub kind: Option<String>,
    /// `message_start`.
    pub message: Option<Message>,
    /// `message_delta`.
    pub usage: Option<AnthropicUsage>,
    /// `content_block_delta` (text, tool input, thinking) and `message_delta` (stop reason).
    pub delta: Option<Delta>,
}

#[derive(Debug, PartialEq)]
#[cfg_attr(any(test, feature = "reference-derive"), derive(serde::Deserialize))]
pub struct Delta {
    pub text: Option<String>,
    pub partial_json: Option<String>,
    pub thinking: Option<String>,
    pub stop_reason: Option<String>,
}

impl Event {
    /// The event's usage, wherever it carries it.
    pub fn usage(&self) -> Option<&AnthropicUsage> {
        self.usage
            .as_ref()
            .or_else(|| self.message.as_ref().and_then(|m| m.usage.as_ref()))
    }
}

/// Reads a Messages answer for its usage, model and text, passing every byte unchanged.
pub struct Meter {
    sse: Option<SseFramer>,
    json: Vec<u8>,
    overflow: bool,
    usage: Option<AnthropicUsage>,
    tally: Tally,
}

impl Meter {
    pub fn new(sse: bool, collect_text: bool) -> Meter {
        Meter {
            sse: sse.then(SseFramer::default),
            json: Vec::new(),
            overflow: false,
            usage: None,
            tally: Tally::new(collect_text),
        }
    }

    fn add_usage(&mut self, later: &AnthropicUsage) {
        self.usage
            .get_or_insert_with(Default::default)
            .update(later);
    }

    fn on_event(&mut self, e: &SseEvent<'_>) {
        let Some(event) = crate::answer::anthropic::event(&e.data) else {
            return;
        };
        if let Some(u) = event.usage() {
            self.add_usage(u);
        }
        self.tally
            .model(event.message.as_ref().and_then(|m| m.model.as_deref()));
        if let Some(d) = &event.delta {
            for part in [&d.text, &d.partial_json, &d.thinking]
                .into_iter()
                .flatten()
            {
                self.tally.text(part);
            }
        }
    }

    fn on_body(&mut self) {
        let body = std::mem::take(&mut self.json);
        let Some(m) = crate::answer::anthropic::message(&body) else {
            return;
        };
        if let Some(u) = &m.usage {
            self.add_usage(u);
        }
        self.tally.model(m.model.as_deref());
        for b in m.content.iter().flatten() {
            for part in [&b.text, &b.thinking].into_iter().flatten() {
                self.tally.text(part);
            }
        }
    }
}

impl Reader for Meter {
    fn push(&mut self, chunk: &[u8]) -> Option<Vec<u8>> {
        match self.sse.take() {
            Some(mut framer) => {
                framer.push(chunk, &mut |e| {
                    self.on_event(e);
                    Verdict::Keep
                });
                self.sse = Some(framer);
            }
            None if !self.overflow => {
                if self.json.len().saturating_add(chunk.len()) > MAX_JSON_FOR_USAGE {
                    self.overflow = true;
                    self.json = Vec::new();
                } else {
                    self.json.extend_from_slice(chunk);
                }
            }
            None => {}
        }
        None
    }

    fn finish(&mut self) -> Option<Vec<u8>> {
        match self.sse.take() {
            Some(mut framer) => {
                framer.finish(&mut |e| {
                    self.on_event(e);
                    Verdict::Keep
                });
                self.sse = Some(framer);
            }
            None => self.on_body(),
        }
        None
    }

    fn rewrites(&self) -> bool {
        false
    }

    fn usage(&self) -> Usage {
        self.usage.map(|u| u.counted()).unwrap_or_default()
    }

    fn has_usage(&self) -> bool {
        self.usage.is_some()
    }

    fn seen_chars(&self) -> u64 {
        self.tally.seen
    }

    fn model(&self) -> Option<&str> {
        self.tally.model.as_deref()
    }

    fn text(&self) -> Option<&str> {
        self.tally.text.as_deref()
    }
}

#[cfg(test)]
mod tests;
