//! Wire protocols: how a request is shaped for an instance that speaks one, how its answer is
//! read as it passes (usage, model; stream events kept, dropped or replaced), and how the
//! filter's own errors look to a client of it. OpenAI-compatible vendors are data (provider
//! presets); a protocol with another wire format is one new file here plus one arm in
//! [`of`]; a client of one protocol served by an instance of another goes through
//! `translate`.

pub mod anthropic;
pub mod api;
pub mod openai;
pub mod tally;
pub mod translate;

use crate::body::{BodyError, JsonBody, Patch};
use crate::config::{Config, Instance};
use crate::error::ProxyError;
pub use crate::provider::ApiKind;
use crate::provider::Wire;
use crate::usage::Usage;

/// The API an instance is asked for: the client's, or its counterpart in the protocol the
/// instance speaks (OpenAI chat completions and Anthropic Messages translate both ways).
pub fn upstream_api(client: ApiKind, wire: Wire) -> ApiKind {
    match (client, wire) {
        (ApiKind::Messages, Wire::OpenAi) => ApiKind::Chat,
        (ApiKind::Chat, Wire::Anthropic) => ApiKind::Messages,
        (kind, _) => kind,
    }
}

/// The protocol a client speaks, by the API it called (`None`: not known yet, OpenAI's).
pub fn client_wire(api: Option<ApiKind>) -> Wire {
    match api {
        Some(ApiKind::Messages) => Wire::Anthropic,
        _ => Wire::OpenAi,
    }
}

/// What the client asked for, read once from its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRequest {
    pub kind: ApiKind,
    /// `stream: true` as the client sent it.
    pub stream: bool,
    /// The client's `model`, before any override.
    pub model: Option<String>,
}

impl ClientRequest {
    /// The request of `kind` (the API its path named; `None`: the body decides, see
    /// [`api::by_body`]).
    pub fn classify(
        body: &JsonBody<'_>,
        kind: Option<ApiKind>,
    ) -> Result<ClientRequest, ProxyError> {
        let kind = match kind {
            Some(k) => api::required(body, k)?,
            None => api::by_body(body)?,
        };
        // A lenient provider would take `1` or `"true"` for true and stream without the
        // usage the filter asks for: only JSON booleans pass.
        let stream = match body.raw("stream") {
            None | Some("null") | Some("false") => false,
            Some("true") => true,
            Some(_) => return Err(ProxyError::InvalidField("stream", "true or false")),
        };
        Ok(ClientRequest {
            kind,
            stream: kind.streams() && stream,
            model: body.string("model"),
        })
    }
}

/// The client's request, read once from its body.
pub struct Request<'b> {
    pub body: JsonBody<'b>,
    pub client: ClientRequest,
}

/// Parses and classifies the client's body. A top-level key that differs only in case from
/// one the filter reads or sets (`model`, `stream`, `stream_options`, a configured option)
/// is refused like a duplicate: a provider that matches keys case-insensitively would take
/// it instead of the filter's value.
pub fn read_request<'b>(
    body: &'b [u8],
    config: &Config,
    kind: Option<ApiKind>,
) -> Result<Request<'b>, ProxyError> {
    let body = JsonBody::parse(body)?;
    if let Some((key, owned)) = body.case_clash(&config.owned_keys) {
        let err = BodyError::CaseVariant(key.to_string(), owned.to_string());
        return Err(ProxyError::Body(err));
    }
    let client = ClientRequest::classify(&body, kind)?;
    Ok(Request { body, client })
}

/// The upstream request of one attempt, borrowing from the instance.
#[derive(Debug, PartialEq, Eq)]
pub struct Upstream<'c> {
    pub cluster: &'c str,
    pub authority: &'c str,
    pub path: &'c str,
    /// Auth headers, lower-cased names; they replace any client value.
    pub auth_headers: &'c [(String, String)],
    /// Drop the client's `authorization`: the gateway owns the upstream credentials.
    pub drop_client_authorization: bool,
    /// Headers the provider expects (`anthropic-version`), set unless `auth.header` sets
    /// them.
    pub preset_headers: &'static [(&'static str, &'static str)],
    /// Client headers of the other protocol, dropped when a request is translated.
    pub foreign_headers: &'static [&'static str],
    /// The new body (as the prefix that replaces the start of the client's), or `None` to
    /// forward the client's bytes unchanged.
    pub body: Option<Patch>,
    /// Whether the upstream will stream (the client's choice, unless `options` sets it).
    pub stream: bool,
    /// The filter asked for usage in the stream (to count tokens): the usage-only event
    /// must not reach a client that did not ask for it.
    pub drop_usage_event: bool,
    /// The model the upstream is asked for (configured, else the client's).
    pub model: Option<String>,
}

/// Reads one answer as it passes.
pub trait Reader {
    /// Takes a chunk. `Some(bytes)`: send these instead; `None`: the chunk goes on as is.
    fn push(&mut self, chunk: &[u8]) -> Option<Vec<u8>>;
    /// The answer ended. `Some(bytes)`: append these (a tail held back).
    fn finish(&mut self) -> Option<Vec<u8>>;
    /// Whether the bytes change (then the answer's `content-length` must go).
    fn rewrites(&self) -> bool;
    /// The usage the answer reported (zero before it is read, or when it reported none).
    fn usage(&self) -> Usage;
    /// Whether the answer reported usage (yet).
    fn has_usage(&self) -> bool;
    /// Characters of answer text seen so far (an estimate's basis when the answer is cut
    /// before its usage).
    fn seen_chars(&self) -> u64;
    /// The model the answer reported.
    fn model(&self) -> Option<&str>;
    /// The answer's text, when collected for payload logs.
    fn text(&self) -> Option<&str>;
}

/// How an answer is read: what the request asked for, and what the attempt was told.
#[derive(Debug, Clone, Copy)]
pub struct Answering {
    /// The API the client called.
    pub kind: ApiKind,
    pub status: u32,
    /// Now, in seconds since the epoch (`created` of translated answers).
    pub now_s: u64,
    /// The answer is a server-sent event stream.
    pub sse: bool,
    pub drop_usage_event: bool,
    /// Collect the answer's text (payload logs).
    pub collect_text: bool,
}

/// One wire protocol.
pub trait Protocol: Sync {
    /// The upstream request for `instance` (which speaks this protocol).
    fn shape<'c>(
        &self,
        instance: &'c Instance,
        req: &Request<'_>,
    ) -> Result<Upstream<'c>, ProxyError>;

    /// A reader for an answer in this protocol.
    fn reader(&self, answering: Answering) -> Box<dyn Reader>;

    /// An error with this status and message, as a client of this protocol expects it
    /// (`code`: the filter's stable code, where the protocol has a place for it).
    fn error(&self, status: u32, message: &str, code: Option<&str>) -> Vec<u8>;

    /// The filter's own error, as a client of this protocol expects it.
    fn error_body(&self, err: &ProxyError) -> Vec<u8> {
        self.error(err.status(), &err.message(), Some(err.code()))
    }
}

/// The protocol an instance speaks.
pub fn of(wire: Wire) -> &'static dyn Protocol {
    match wire {
        Wire::OpenAi => &openai::OpenAi,
        Wire::Anthropic => &anthropic::Anthropic,
    }
}

/// A reader for an answer from an instance speaking `wire` to a client of `a.kind`:
/// metered as it passes, or translated when the client speaks the other protocol.
pub fn reader(wire: Wire, a: Answering) -> Box<dyn Reader> {
    match (a.kind, wire) {
        (ApiKind::Messages, Wire::OpenAi) => translate::messages_to_chat::reader(a),
        (ApiKind::Chat, Wire::Anthropic) => translate::chat_to_messages::reader(a),
        _ => of(wire).reader(a),
    }
}

/// An error body from an instance speaking `from`, for a client speaking `to`: the same
/// status and message, in the client's shape.
pub fn rewrap_error(from: Wire, to: Wire, status: u32, body: &[u8]) -> Vec<u8> {
    if from == to {
        return body.to_vec();
    }
    let message = error_message(body).unwrap_or_else(|| format!("upstream answered {status}"));
    of(to).error(status, &message, None)
}

/// `error.message` of an OpenAI or Anthropic error body.
pub fn error_message(body: &[u8]) -> Option<String> {
    crate::answer::error_message(body)
}

/// The upstream path of `kind` on `instance`, or why there is none.
pub fn path(instance: &Instance, kind: ApiKind) -> Result<&str, ProxyError> {
    instance
        .target
        .path(kind)
        .ok_or(ProxyError::KindNotOffered {
            provider: instance.provider.name(),
            kind: kind.name(),
        })
}

/// A configured option's raw JSON text.
pub fn option<'c>(instance: &'c Instance, key: &str) -> Option<&'c str> {
    instance
        .options
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Whether the upstream streams: `options.stream` when configured, else the client's choice.
pub fn streams(instance: &Instance, client: &ClientRequest) -> bool {
    match option(instance, "stream") {
        Some(v) => client.kind.streams() && v == "true",
        None => client.stream,
    }
}

/// The model the upstream is asked for: `options.model` when configured, else the client's.
pub fn model(instance: &Instance, client: &ClientRequest) -> Option<String> {
    match option(instance, "model") {
        Some(v) => serde_json::from_slice::<String>(v.as_bytes()).ok(),
        None => client.model.clone(),
    }
}

/// The upstream request of one attempt on `instance`.
pub fn shape<'c>(instance: &'c Instance, req: &Request<'_>) -> Result<Upstream<'c>, ProxyError> {
    of(instance.provider.wire()).shape(instance, req)
}
