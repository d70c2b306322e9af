//! Wire protocols: how a request is shaped for an instance that speaks one, how its answer is
//! read as it passes (usage, model; stream events kept, dropped or replaced), and how the
//! filter's own errors look to a client of it. OpenAI-compatible vendors are data (provider
//! presets); a protocol with another wire format is one new file here plus one arm in
//! [`of`].

pub mod api;
pub mod openai;

use crate::body::{BodyError, JsonBody};
use crate::config::{Config, Instance};
use crate::error::ProxyError;
pub use crate::provider::ApiKind;
use crate::provider::Wire;
use crate::usage::Usage;

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
    /// The new body, or `None` to forward the client's bytes unchanged.
    pub body: Option<String>,
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
    pub kind: ApiKind,
    pub status: u32,
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

    /// The filter's own error, as a client of this protocol expects it.
    fn error_body(&self, err: &ProxyError) -> Vec<u8>;
}

/// The protocol an instance speaks.
pub fn of(wire: Wire) -> &'static dyn Protocol {
    match wire {
        Wire::OpenAi => &openai::OpenAi,
    }
}

/// The upstream request of one attempt on `instance`.
pub fn shape<'c>(instance: &'c Instance, req: &Request<'_>) -> Result<Upstream<'c>, ProxyError> {
    of(instance.provider.wire()).shape(instance, req)
}
