//! Which API a request is for, decided by its path first (under any prefix: `/v1/...`,
//! `/openai/v1/...`), by its body only for paths that name no API; the APIs the filter does
//! not serve are named, never sent elsewhere; and `GET .../models`, answered from the
//! configuration.

use serde_json::Value;

use crate::json::{self, obj};

use crate::body::JsonBody;
use crate::config::Config;
use crate::error::ProxyError;
use crate::provider::ApiKind;

/// What a request's path says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The path names this API.
    Api(ApiKind),
    /// `.../models` (the list), or `.../models/<id>`.
    Models(Option<String>),
    /// A known OpenAI API the filter does not serve (its name).
    Unsupported(&'static str),
    /// The path names no API: the body decides.
    ByBody,
}

/// OpenAI APIs the filter does not serve, by their first path segment.
const UNSERVED: &[(&str, &str)] = &[
    ("moderations", "moderations"),
    ("audio", "audio"),
    ("images", "images"),
    ("files", "files"),
    ("uploads", "uploads"),
    ("batches", "batches"),
    ("fine_tuning", "fine-tuning"),
    ("fine-tunes", "fine-tuning"),
    ("assistants", "assistants"),
    ("threads", "threads"),
    ("vector_stores", "vector stores"),
    ("realtime", "realtime"),
    ("evals", "evals"),
    ("containers", "containers"),
    ("conversations", "conversations"),
];

/// The route of a path (its query ignored).
pub fn route(path: &str) -> Route {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let path = path.trim_end_matches('/');
    // The Assistants API's `/threads/<id>/messages` is not Anthropic's. (`contains` would
    // build a substring searcher for every request: "Round 8" in docs/performance.md.)
    if path.as_bytes().windows(9).any(|w| w == b"/threads/") {
        return Route::Unsupported("assistants");
    }
    // Chat first: it ends in /completions too.
    for kind in ApiKind::ALL {
        if path.ends_with(kind.suffix()) {
            return Route::Api(kind);
        }
    }
    if path.ends_with("/models") {
        return Route::Models(None);
    }
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    let segments: Vec<&str> = segments.by_ref().collect();
    if let [.., "models", id] = segments.as_slice() {
        return Route::Models(Some((*id).to_string()));
    }
    if let Some(name) = segments.iter().find_map(|s| {
        UNSERVED
            .iter()
            .find(|(seg, _)| seg == s)
            .map(|(_, name)| *name)
    }) {
        return Route::Unsupported(name);
    }
    // `/v1/responses/<id>` and the like: the Responses API's other operations.
    if segments.contains(&"responses") {
        return Route::Unsupported("responses (retrieving, cancelling, deleting)");
    }
    // `/v1/messages/count_tokens`, `/v1/messages/batches`: Anthropic's other operations.
    if segments.contains(&"messages") {
        return Route::Unsupported("messages (token counting, batches)");
    }
    Route::ByBody
}

/// Members only a Responses request has: with `input`, they make a body that is not an
/// embeddings request.
const RESPONSES_ONLY: &[&str] = &[
    "instructions",
    "previous_response_id",
    "conversation",
    "reasoning",
    "text",
    "store",
    "background",
    "include",
    "max_output_tokens",
    "max_tool_calls",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "truncation",
    "prompt",
];

fn has_messages(body: &JsonBody<'_>) -> bool {
    body.raw("messages").is_some_and(|m| m.starts_with('['))
}

fn has_input(body: &JsonBody<'_>) -> bool {
    body.raw("input").is_some_and(|i| i != "null")
}

/// A body posted to the path of `kind` must look like it: chat and Messages have
/// `messages`, embeddings `input` (a provider would refuse it anyway; the client learns why, at no cost).
pub fn required(body: &JsonBody<'_>, kind: ApiKind) -> Result<ApiKind, ProxyError> {
    match kind {
        ApiKind::Chat | ApiKind::Messages if !has_messages(body) => Err(ProxyError::UnknownKind),
        ApiKind::Embeddings if !has_input(body) => Err(ProxyError::UnknownKind),
        k => Ok(k),
    }
}

/// The API of a body posted to a path that names none: chat when `messages` is an array,
/// embeddings when `input` comes without a Responses-only member.
pub fn by_body(body: &JsonBody<'_>) -> Result<ApiKind, ProxyError> {
    if has_messages(body) {
        return Ok(ApiKind::Chat);
    }
    if has_input(body) && !body.keys().any(|k| RESPONSES_ONLY.contains(&k)) {
        return Ok(ApiKind::Embeddings);
    }
    Err(ProxyError::UnknownKind)
}

/// The models the configuration serves: each instance's configured `model`, else its
/// provider's name; each once.
fn models(config: &Config) -> Vec<(String, &'static str)> {
    let mut out: Vec<(String, &'static str)> = Vec::new();
    for inst in &config.instances {
        let configured = inst
            .options
            .iter()
            .find(|(k, _)| k == "model")
            .and_then(|(_, v)| serde_json::from_slice::<String>(v.as_bytes()).ok());
        let id = configured.unwrap_or_else(|| inst.provider.name().to_string());
        if !out.iter().any(|(m, _)| *m == id) {
            out.push((id, inst.provider.name()));
        }
    }
    out
}

fn model_object(id: &str, owner: &str) -> Value {
    obj([
        ("id", id.into()),
        ("object", "model".into()),
        ("created", 0.into()),
        ("owned_by", owner.into()),
    ])
}

/// The answer to `GET .../models` (`None`) or `GET .../models/<id>`, in OpenAI's format.
pub fn models_answer(config: &Config, id: Option<&str>) -> Result<Vec<u8>, ProxyError> {
    let all = models(config);
    let value = match id {
        None => {
            let data: Vec<Value> = all.iter().map(|(m, o)| model_object(m, o)).collect();
            obj([("object", "list".into()), ("data", Value::Array(data))])
        }
        Some(id) => match all.iter().find(|(m, _)| m == id) {
            Some((m, o)) => model_object(m, o),
            None => return Err(ProxyError::ModelNotFound(id.to_string())),
        },
    };
    Ok(json::to_bytes(&value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    #[test]
    fn the_path_decides_under_any_prefix() {
        let cases = [
            ("/v1/chat/completions", Route::Api(ApiKind::Chat)),
            ("/openai/v1/chat/completions?x=1", Route::Api(ApiKind::Chat)),
            ("/v1/embeddings", Route::Api(ApiKind::Embeddings)),
            ("/v1/responses", Route::Api(ApiKind::Responses)),
            ("/api/v1/responses/", Route::Api(ApiKind::Responses)),
            ("/v1/completions", Route::Api(ApiKind::Completions)),
            ("/v1/messages", Route::Api(ApiKind::Messages)),
            (
                "/anthropic/v1/messages?beta=true",
                Route::Api(ApiKind::Messages),
            ),
            (
                "/v1/messages/count_tokens",
                Route::Unsupported("messages (token counting, batches)"),
            ),
            ("/v1/threads/t_1/messages", Route::Unsupported("assistants")),
            ("/v1/models", Route::Models(None)),
            ("/v1/models/gpt-4o", Route::Models(Some("gpt-4o".into()))),
            ("/v1/moderations", Route::Unsupported("moderations")),
            ("/v1/audio/speech", Route::Unsupported("audio")),
            ("/v1/images/generations", Route::Unsupported("images")),
            (
                "/v1/responses/resp_1",
                Route::Unsupported("responses (retrieving, cancelling, deleting)"),
            ),
            ("/anything", Route::ByBody),
            ("/", Route::ByBody),
        ];
        for (path, want) in cases {
            assert_eq!(route(path), want, "{path}");
        }
    }

    #[test]
    fn the_body_decides_only_where_the_path_does_not() {
        let kind = |b: &str| by_body(&JsonBody::parse(b.as_bytes()).unwrap());
        assert_eq!(kind(r#"{"messages":[]}"#), Ok(ApiKind::Chat));
        assert_eq!(
            kind(r#"{"input":"x","model":"m","dimensions":3}"#),
            Ok(ApiKind::Embeddings)
        );
        // A Responses body is not an embeddings one.
        assert_eq!(
            kind(r#"{"input":"x","model":"m","instructions":"be brief"}"#),
            Err(ProxyError::UnknownKind)
        );
        assert_eq!(kind(r#"{"input":null}"#), Err(ProxyError::UnknownKind));
        assert_eq!(kind(r#"{"prompt":"x"}"#), Err(ProxyError::UnknownKind));
    }

    #[test]
    fn models_come_from_the_configuration() {
        let c = config::parse(
            br#"{"instances":[
                {"name":"a","provider":"openai","options":{"model":"gpt-4o"}},
                {"name":"b","provider":"deepseek"},
                {"name":"c","provider":"openai","options":{"model":"gpt-4o"}}]}"#,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&models_answer(&c, None).unwrap()).unwrap();
        let ids: Vec<&str> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["gpt-4o", "deepseek"]);
        assert_eq!(v["data"][1]["owned_by"], "deepseek");
        let one: Value =
            serde_json::from_slice(&models_answer(&c, Some("gpt-4o")).unwrap()).unwrap();
        assert_eq!(one["object"], "model");
        assert_eq!(models_answer(&c, Some("nope")).unwrap_err().status(), 404);
    }
}
