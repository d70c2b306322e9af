//! The OpenAI wire protocol (chat completions, embeddings, Responses, legacy completions) and
//! every vendor that speaks it: request shaping by patching the client's body in place
//! (`options` merged, `include_usage` asked for on streams), answers read for usage with the
//! usage-only stream event dropped when the client did not ask for it, and OpenAI-style
//! errors.

use crate::json::{self, obj};

use super::{Answering, ClientRequest, Protocol, Reader, Request, Upstream};
use crate::body::JsonBody;
use crate::config::Instance;
use crate::error::ProxyError;
use crate::provider::ApiKind;
use crate::usage::{Meter, Usage};

pub struct OpenAi;

impl Protocol for OpenAi {
    fn shape<'c>(
        &self,
        instance: &'c Instance,
        req: &Request<'_>,
    ) -> Result<Upstream<'c>, ProxyError> {
        if req.client.kind == ApiKind::Messages {
            return super::translate::messages_to_chat::shape(instance, req);
        }
        shape(instance, req)
    }

    fn reader(&self, a: Answering) -> Box<dyn Reader> {
        Box::new(if a.sse {
            Meter::sse(
                (200..300).contains(&a.status) && a.drop_usage_event,
                a.collect_text,
            )
        } else {
            Meter::json(a.collect_text)
        })
    }

    fn error(&self, status: u32, message: &str, code: Option<&str>) -> Vec<u8> {
        error(status, message, code)
    }

    fn error_body(&self, err: &ProxyError) -> Vec<u8> {
        err.body()
    }
}

impl Reader for Meter {
    fn push(&mut self, chunk: &[u8]) -> Option<Vec<u8>> {
        Meter::push(self, chunk)
    }
    fn finish(&mut self) -> Option<Vec<u8>> {
        Meter::finish(self)
    }
    fn rewrites(&self) -> bool {
        Meter::rewrites(self)
    }
    fn usage(&self) -> Usage {
        Meter::usage(self)
    }
    fn has_usage(&self) -> bool {
        Meter::has_usage(self)
    }
    fn seen_chars(&self) -> u64 {
        Meter::seen_chars(self)
    }
    fn model(&self) -> Option<&str> {
        Meter::model(self)
    }
    fn text(&self) -> Option<&str> {
        Meter::text(self)
    }
}

/// An OpenAI-style error body; `type` from the status.
pub fn error(status: u32, message: &str, code: Option<&str>) -> Vec<u8> {
    let kind = match status {
        401 => "authentication_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    };
    let error = obj([
        ("message", message.into()),
        ("type", kind.into()),
        ("code", code.into()),
    ]);
    json::to_bytes(&obj([("error", error)]))
}

fn shape<'c>(instance: &'c Instance, req: &Request<'_>) -> Result<Upstream<'c>, ProxyError> {
    let (body, client): (_, &ClientRequest) = (&req.body, &req.client);
    let path = super::path(instance, client.kind)?;
    let option = |key: &str| super::option(instance, key);
    let stream = super::streams(instance, client);
    let model = super::model(instance, client);
    // A stream reports usage only when asked: ask, keeping the client's (or the
    // configuration's) other stream options, and remember whether the client asked itself.
    // The client's options are read as raw JSON, never as a `serde_json::Value` (which,
    // with serde_json's `raw_value` feature, as the tests build it, reads
    // `{"$serde_json::private::RawValue": "true"}` as `true`; the shipped build has no such
    // feature).
    let usage_edit = if stream && client.kind.asks_for_stream_usage() {
        stream_usage_edit(option("stream_options").or_else(|| body.raw("stream_options")))?
    } else {
        None
    };
    let edits = instance
        .options
        .iter()
        .filter(|(k, _)| usage_edit.is_none() || k != "stream_options")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(usage_edit.as_deref().map(|v| ("stream_options", v)));
    let new_body = body.patch(edits);

    Ok(Upstream {
        cluster: &instance.cluster,
        authority: &instance.target.authority,
        path,
        auth_headers: &instance.auth_headers,
        drop_client_authorization: instance.has_auth,
        preset_headers: instance.provider.headers(),
        foreign_headers: &[],
        body: new_body,
        stream,
        drop_usage_event: usage_edit.is_some(),
        model,
    })
}

/// The stream options that ask for usage, from the configuration's or the client's (`None`
/// when they already do).
#[inline(never)] // compiled on its own: see "Round 5" in docs/performance.md
fn stream_usage_edit(options: Option<&str>) -> Result<Option<String>, ProxyError> {
    let base = options.filter(|t| *t != "null").unwrap_or("{}");
    let options = JsonBody::parse(base.as_bytes())
        .map_err(|_| ProxyError::InvalidField("stream_options", "an object"))?;
    if options.raw("include_usage") == Some("true") {
        return Ok(None);
    }
    Ok(options.patched([("include_usage", "true")]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::Patch;
    use crate::config;
    use crate::provider::ApiKind;
    use serde_json::{json, Value};

    fn instance(cfg: Value) -> Instance {
        config::parse(cfg.to_string().as_bytes())
            .unwrap()
            .instances
            .remove(0)
    }

    fn run(cfg: Value, body: &str) -> Result<(ClientRequest, Upstream<'static>), ProxyError> {
        let parsed = config::parse(cfg.to_string().as_bytes()).unwrap();
        let inst: &'static Instance = Box::leak(Box::new(instance(cfg)));
        let req = super::super::read_request(body.as_bytes(), &parsed, None)?;
        let mut up = shape(inst, &req)?;
        // The patched body, whole, to read in the assertions.
        up.body = up.body.map(|p| {
            let whole = String::from_utf8(p.apply(body.as_bytes())).unwrap();
            Patch::whole(whole, body.len())
        });
        Ok((req.client, up))
    }

    #[test]
    fn classifies_requests() {
        let cases = [
            (r#"{"messages":[]}"#, Ok((ApiKind::Chat, false))),
            (
                r#"{"messages":[{"role":"user","content":"hi"}],"stream":true}"#,
                Ok((ApiKind::Chat, true)),
            ),
            (
                r#"{"messages":[],"stream":false}"#,
                Ok((ApiKind::Chat, false)),
            ),
            (r#"{"input":"hello"}"#, Ok((ApiKind::Embeddings, false))),
            (
                r#"{"input":["a","b"],"stream":true}"#,
                Ok((ApiKind::Embeddings, false)),
            ),
            (r#"{"messages":"hi"}"#, Err(ProxyError::UnknownKind)),
            (r#"{"input":null}"#, Err(ProxyError::UnknownKind)),
            (r#"{"prompt":"x"}"#, Err(ProxyError::UnknownKind)),
            (
                r#"{"messages":[],"stream":1}"#,
                Err(ProxyError::InvalidField("stream", "true or false")),
            ),
            (
                r#"{"messages":[],"stream":"true"}"#,
                Err(ProxyError::InvalidField("stream", "true or false")),
            ),
            (
                r#"{"messages":[],"stream":null}"#,
                Ok((ApiKind::Chat, false)),
            ),
        ];
        for (body, want) in cases {
            let got = ClientRequest::classify(&JsonBody::parse(body.as_bytes()).unwrap(), None)
                .map(|c| (c.kind, c.stream));
            assert_eq!(got, want, "{body}");
        }
    }

    #[test]
    fn options_win_and_auth_applies() {
        let (client, up) = run(
            json!({"provider": "openai", "auth": {"header": {"Authorization": "Bearer sk-x"}},
                   "options": {"model": "gpt-4o", "max_tokens": 5}}),
            r#"{"model":"gpt-3.5","messages":[{"role":"user","content":"hi"}]}"#,
        )
        .unwrap();
        assert_eq!(client.model.as_deref(), Some("gpt-3.5"));
        assert_eq!(up.model.as_deref(), Some("gpt-4o"));
        assert_eq!(
            (up.cluster, up.authority, up.path),
            ("openai", "api.openai.com", "/v1/chat/completions")
        );
        assert_eq!(
            up.auth_headers,
            &[("authorization".to_string(), "Bearer sk-x".to_string())]
        );
        assert!(up.drop_client_authorization);
        let sent: Value = serde_json::from_str(&up.body.as_ref().unwrap().prefix).unwrap();
        assert_eq!(
            sent,
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5})
        );
    }

    #[test]
    fn unchanged_body_is_not_rewritten() {
        let (_, up) = run(
            json!({"provider": "openai", "options": {"model": "gpt-4o"}}),
            r#"{"model": "gpt-4o", "messages": []}"#,
        )
        .unwrap();
        assert_eq!(up.body, None);
        assert!(!up.drop_client_authorization);
    }

    #[test]
    fn stream_follows_options_when_set() {
        let (_, up) = run(
            json!({"provider": "openai", "options": {"stream": false}}),
            r#"{"messages":[],"stream":true}"#,
        )
        .unwrap();
        assert!(!up.stream);
        let (_, up) = run(
            json!({"provider": "openai"}),
            r#"{"messages":[],"stream":true}"#,
        )
        .unwrap();
        assert!(up.stream);
    }

    #[test]
    fn streams_ask_for_usage_keeping_other_stream_options() {
        let sent = |up: &Upstream| -> Value {
            serde_json::from_str(&up.body.as_ref().unwrap().prefix).unwrap()
        };
        let (_, up) = run(
            json!({"provider": "openai"}),
            r#"{"messages":[],"stream":true}"#,
        )
        .unwrap();
        assert_eq!(sent(&up)["stream_options"], json!({"include_usage": true}));
        assert!(up.drop_usage_event);

        let (_, up) = run(
            json!({"provider": "openai"}),
            r#"{"messages":[],"stream":true,"stream_options":{"x":1,"include_usage":false}}"#,
        )
        .unwrap();
        assert_eq!(
            sent(&up)["stream_options"],
            json!({"x": 1, "include_usage": true})
        );
        assert!(up.drop_usage_event);

        // The client asked itself: nothing to change, nothing to drop.
        let body = r#"{"messages":[],"stream":true,"stream_options":{"include_usage":true}}"#;
        let (_, up) = run(json!({"provider": "openai"}), body).unwrap();
        assert_eq!(up.body, None);
        assert!(!up.drop_usage_event);

        // Configured stream options win, and still get include_usage.
        let (_, up) = run(
            json!({"provider": "openai", "options": {"stream_options": {"y": 2}, "model": "m"}}),
            r#"{"messages":[],"stream":true,"stream_options":{"x":1}}"#,
        )
        .unwrap();
        let v = sent(&up);
        assert_eq!(v["stream_options"], json!({"y": 2, "include_usage": true}));
        assert_eq!(v["model"], "m");
        assert!(up.drop_usage_event);

        // A value that only serde_json's raw-value quirk reads as `true` is not `true`.
        let body = r#"{"messages":[],"stream":true,"stream_options":{"include_usage":{"$serde_json::private::RawValue":"true"}}}"#;
        let (_, up) = run(json!({"provider": "openai"}), body).unwrap();
        assert_eq!(sent(&up)["stream_options"], json!({"include_usage": true}));
        assert!(up.drop_usage_event);
        // Not an object: refused.
        let body = r#"{"messages":[],"stream":true,"stream_options":[1]}"#;
        let err = run(json!({"provider": "openai"}), body).unwrap_err();
        assert_eq!(err.code(), "invalid_value");

        // Not streaming: untouched.
        let (_, up) = run(json!({"provider": "openai"}), r#"{"messages":[]}"#).unwrap();
        assert_eq!(up.body, None);
        assert!(!up.drop_usage_event);
    }

    #[test]
    fn keys_the_filter_owns_cannot_be_shadowed_by_case() {
        let cfg = json!({"provider": "openai", "options": {"model": "m", "max_tokens": 5}});
        for body in [
            r#"{"model":"x","MODEL":"client","messages":[]}"#,
            r#"{"Stream":true,"messages":[]}"#,
            r#"{"messages":[],"Max_Tokens":9000}"#,
        ] {
            let err = run(cfg.clone(), body).unwrap_err();
            assert_eq!(err.code(), "duplicate_key", "{body}");
        }
        assert!(run(cfg, r#"{"messages":[],"Temperature":1}"#).is_ok());
    }

    #[test]
    fn embeddings_paths_per_provider() {
        let (_, up) = run(json!({"provider": "openai"}), r#"{"input":"x"}"#).unwrap();
        assert_eq!(up.path, "/v1/embeddings");
        let err = run(json!({"provider": "deepseek"}), r#"{"input":"x"}"#).unwrap_err();
        assert_eq!(err.status(), 400);
        assert_eq!(err.code(), "unsupported_request_kind");
    }
}
