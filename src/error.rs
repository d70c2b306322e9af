//! The errors the filter answers itself, each with its HTTP status and an OpenAI-style body
//! (`{"error": {"message", "type", "code"}}`) so that SDKs show the reason.

use crate::json::{self, obj};

use crate::body::BodyError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyError {
    /// The method, and the one the API takes.
    MethodNotAllowed(String, &'static str),
    /// A known API the filter does not serve (its name).
    UnsupportedApi(&'static str),
    /// `GET .../models/<id>` of a model the configuration does not serve.
    ModelNotFound(String),
    UnsupportedMediaType(String),
    BodyTooLarge {
        limit: usize,
    },
    Body(BodyError),
    /// A field the filter reads has the wrong type (field, what it must be).
    InvalidField(&'static str, &'static str),
    /// Neither `messages` (chat) nor `input` (embeddings).
    UnknownKind,
    /// A request field that has no equivalent in the protocol of the instance picked (the
    /// field's path in the request, and that protocol's name).
    Untranslatable {
        field: String,
        to: &'static str,
    },
    /// The chosen provider has no endpoint for this kind of request.
    KindNotOffered {
        provider: &'static str,
        kind: &'static str,
    },
    /// No instance may take the request (all tried, unhealthy or out of quota).
    NoInstanceAvailable,
    /// A token limit is spent (`rate_limiting`): the configured status and message.
    RateLimited {
        status: u16,
        message: String,
        retry_after: u64,
    },
    /// `require_consumer` is on and no authenticating filter named a consumer.
    ConsumerRequired,
    /// The rate limit service could not say, and the configuration refuses then.
    QuotaUnavailable,
    /// Envoy answered for the upstream: timeout, refused connection, no healthy host.
    UpstreamTimeout,
    UpstreamUnavailable(String),
    /// The filter has no usable configuration (never expected: Envoy refuses bad ones).
    NotConfigured,
    /// Envoy refused a host call the filter needs; the request is not forwarded half-shaped.
    Internal(String),
}

impl ProxyError {
    pub fn status(&self) -> u32 {
        match self {
            ProxyError::MethodNotAllowed(..) => 405,
            ProxyError::UnsupportedApi(_) | ProxyError::ModelNotFound(_) => 404,
            ProxyError::UnsupportedMediaType(_) => 415,
            ProxyError::BodyTooLarge { .. } => 413,
            ProxyError::Body(_)
            | ProxyError::InvalidField(..)
            | ProxyError::UnknownKind
            | ProxyError::Untranslatable { .. }
            | ProxyError::KindNotOffered { .. } => 400,
            ProxyError::ConsumerRequired => 401,
            ProxyError::UpstreamTimeout => 504,
            ProxyError::UpstreamUnavailable(_)
            | ProxyError::NoInstanceAvailable
            | ProxyError::QuotaUnavailable => 503,
            ProxyError::NotConfigured | ProxyError::Internal(_) => 500,
            ProxyError::RateLimited { status, .. } => u32::from(*status),
        }
    }

    /// OpenAI's `error.type`.
    fn kind(&self) -> &'static str {
        match self {
            ProxyError::RateLimited { .. } => return "rate_limit_error",
            ProxyError::ConsumerRequired => return "authentication_error",
            _ => {}
        }
        match self.status() {
            400..=499 => "invalid_request_error",
            _ => "api_error",
        }
    }

    /// A stable, machine-readable `error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::MethodNotAllowed(..) => "method_not_allowed",
            ProxyError::UnsupportedApi(_) => "unsupported_api",
            ProxyError::ModelNotFound(_) => "model_not_found",
            ProxyError::UnsupportedMediaType(_) => "unsupported_media_type",
            ProxyError::BodyTooLarge { .. } => "request_too_large",
            ProxyError::Body(BodyError::Empty) => "empty_body",
            ProxyError::Body(BodyError::DuplicateKey(_) | BodyError::CaseVariant(..)) => {
                "duplicate_key"
            }
            ProxyError::Body(_) => "invalid_json",
            ProxyError::InvalidField(..) => "invalid_value",
            ProxyError::UnknownKind => "unknown_request_kind",
            ProxyError::Untranslatable { .. } => "untranslatable_field",
            ProxyError::KindNotOffered { .. } => "unsupported_request_kind",
            ProxyError::UpstreamTimeout => "upstream_timeout",
            ProxyError::UpstreamUnavailable(_) => "upstream_unavailable",
            ProxyError::NoInstanceAvailable => "no_instance_available",
            ProxyError::QuotaUnavailable => "rate_limit_service_unavailable",
            ProxyError::ConsumerRequired => "consumer_required",
            ProxyError::NotConfigured => "not_configured",
            ProxyError::Internal(_) => "internal_error",
            ProxyError::RateLimited { .. } => "rate_limit_exceeded",
        }
    }

    pub fn message(&self) -> String {
        match self {
            ProxyError::MethodNotAllowed(m, "GET") => {
                format!("method {m} is not allowed: the models API takes GET")
            }
            ProxyError::MethodNotAllowed(m, _) => {
                format!("method {m} is not allowed: send a POST with a JSON body")
            }
            ProxyError::UnsupportedApi(api) => format!(
                "the {api} API is not served by this gateway; it serves chat completions, \
                 embeddings, responses, completions, models and Anthropic messages"
            ),
            ProxyError::ModelNotFound(id) => format!("the model `{id}` is not served here"),
            ProxyError::UnsupportedMediaType(ct) => {
                format!("content type `{ct}` is not supported: send application/json")
            }
            ProxyError::BodyTooLarge { limit } => {
                format!("the request body is larger than the limit of {limit} bytes")
            }
            ProxyError::Body(e) => e.to_string(),
            ProxyError::InvalidField(field, what) => format!("`{field}` must be {what}"),
            ProxyError::Untranslatable { field, to } => format!(
                "`{field}` has no equivalent in {to}, the API of the instance picked; \
                 leave it out (docs/providers.md lists what is translated)"
            ),
            ProxyError::UnknownKind => "call an API's path (/v1/chat/completions, /v1/embeddings, \
                 /v1/responses, /v1/completions), or post to this path a body with `messages` \
                 (chat completions) or `input` alone (embeddings)"
                .to_string(),
            ProxyError::KindNotOffered { provider, kind } => format!(
                "provider `{provider}` does not offer {kind}; configure `override.endpoint` for it"
            ),
            ProxyError::UpstreamTimeout => "the LLM provider did not answer in time".to_string(),
            ProxyError::NoInstanceAvailable => {
                "no LLM instance is available for this request".into()
            }
            ProxyError::UpstreamUnavailable(why) => {
                format!("the LLM provider could not be reached ({why})")
            }
            ProxyError::NotConfigured => "the AI proxy filter has no valid configuration".into(),
            ProxyError::ConsumerRequired => {
                "this gateway needs an authenticated consumer: send your gateway API key".into()
            }
            ProxyError::QuotaUnavailable => {
                "the rate limit service could not be reached; try again".into()
            }
            ProxyError::Internal(what) => format!("the AI proxy filter failed: {what}"),
            ProxyError::RateLimited { message, .. } => message.clone(),
        }
    }

    pub fn body(&self) -> Vec<u8> {
        let error = obj([
            ("message", self.message().into()),
            ("type", self.kind().into()),
            ("code", self.code().into()),
        ]);
        json::to_bytes(&obj([("error", error)]))
    }

    /// Extra response headers besides `content-type`.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            ProxyError::MethodNotAllowed(_, allow) => vec![("allow", (*allow).into())],
            ProxyError::RateLimited { retry_after, .. } => {
                vec![("retry-after", retry_after.to_string())]
            }
            _ => Vec::new(),
        }
    }
}

impl From<BodyError> for ProxyError {
    fn from(e: BodyError) -> Self {
        ProxyError::Body(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn statuses_and_bodies() {
        let cases = [
            (
                ProxyError::Body(BodyError::Empty),
                400,
                "empty_body",
                "invalid_request_error",
            ),
            (
                ProxyError::Body(BodyError::Invalid("x".into())),
                400,
                "invalid_json",
                "invalid_request_error",
            ),
            (
                ProxyError::UnknownKind,
                400,
                "unknown_request_kind",
                "invalid_request_error",
            ),
            (
                ProxyError::BodyTooLarge { limit: 10 },
                413,
                "request_too_large",
                "invalid_request_error",
            ),
            (
                ProxyError::UnsupportedMediaType("text/plain".into()),
                415,
                "unsupported_media_type",
                "invalid_request_error",
            ),
            (
                ProxyError::MethodNotAllowed("GET".into(), "POST"),
                405,
                "method_not_allowed",
                "invalid_request_error",
            ),
            (
                ProxyError::UpstreamTimeout,
                504,
                "upstream_timeout",
                "api_error",
            ),
        ];
        for (err, status, code, kind) in cases {
            assert_eq!(err.status(), status, "{err:?}");
            let v: Value = serde_json::from_slice(&err.body()).unwrap();
            assert_eq!(v["error"]["code"], code, "{err:?}");
            assert_eq!(v["error"]["type"], kind, "{err:?}");
            assert!(!v["error"]["message"].as_str().unwrap().is_empty());
        }
    }
}
