//! The per-request decisions, phase by phase, as plain functions over plain inputs: the
//! host layer reads what Envoy gives it, asks here what to do, and applies the answer.

use crate::body::JsonBody;
use crate::config::{Config, Instance};
use crate::error::ProxyError;
use crate::provider::shape::{self, ClientRequest, Upstream};

/// What the request headers phase reads.
#[derive(Debug, Default, Clone, Copy)]
pub struct RequestHead<'a> {
    pub method: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub content_length: Option<&'a str>,
    /// The request has no body at all.
    pub end_of_stream: bool,
}

/// Checks the request line and headers before any body byte is read. `Ok` means: wait for
/// the whole body.
pub fn check_head(config: &Config, head: &RequestHead<'_>) -> Result<(), ProxyError> {
    let method = head.method.unwrap_or("");
    if method != "POST" {
        return Err(ProxyError::MethodNotAllowed(method.to_string()));
    }
    if let Some(ct) = head.content_type {
        if !is_json_media_type(ct) {
            return Err(ProxyError::UnsupportedMediaType(ct.to_string()));
        }
    }
    if let Some(len) = head
        .content_length
        .and_then(|l| l.trim().parse::<u64>().ok())
    {
        if len > config.max_req_body_size as u64 {
            return Err(ProxyError::BodyTooLarge {
                limit: config.max_req_body_size,
            });
        }
    }
    if head.end_of_stream {
        return Err(ProxyError::Body(crate::body::BodyError::Empty));
    }
    Ok(())
}

/// `application/json`, or any `application/*+json`, with or without parameters.
fn is_json_media_type(ct: &str) -> bool {
    let media = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
}

/// Called for every body chunk with the size buffered so far.
pub fn check_body_size(config: &Config, buffered: usize) -> Result<(), ProxyError> {
    if buffered > config.max_req_body_size {
        Err(ProxyError::BodyTooLarge {
            limit: config.max_req_body_size,
        })
    } else {
        Ok(())
    }
}

/// The decision for a complete request body: what the client asked for and the upstream
/// request for the chosen instance.
#[derive(Debug)]
pub struct Plan<'c> {
    pub client: ClientRequest,
    pub instance: &'c Instance,
    pub upstream: Upstream<'c>,
}

pub fn plan<'c>(config: &'c Config, body: &[u8]) -> Result<Plan<'c>, ProxyError> {
    let parsed = JsonBody::parse(body)?;
    let client = ClientRequest::classify(&parsed)?;
    let instance = config.instances.first().ok_or(ProxyError::NotConfigured)?;
    let upstream = shape::shape(instance, &parsed, &client)?;
    Ok(Plan {
        client,
        instance,
        upstream,
    })
}

/// Envoy answers for an upstream it could not use with a plain-text local reply; the filter
/// turns the ones it knows into OpenAI-style errors. `details` is `response.code_details`.
pub fn local_reply_error(details: &str) -> Option<ProxyError> {
    if details == "response_timeout" || details == "upstream_per_try_timeout" {
        Some(ProxyError::UpstreamTimeout)
    } else if details.starts_with("upstream_reset_before_response_started") {
        Some(ProxyError::UpstreamUnavailable("connection failed".into()))
    } else if details == "no_healthy_upstream" {
        Some(ProxyError::UpstreamUnavailable(
            "no healthy upstream host".into(),
        ))
    } else if details == "cluster_not_found" {
        Some(ProxyError::UpstreamUnavailable(
            "the configured Envoy cluster does not exist".into(),
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn cfg() -> Config {
        config::parse(br#"{"provider":"openai","max_req_body_size":100}"#).unwrap()
    }

    #[test]
    fn head_checks() {
        let ok = RequestHead {
            method: Some("POST"),
            content_type: Some("application/json"),
            content_length: Some("50"),
            end_of_stream: false,
        };
        let cases: Vec<(&str, RequestHead, Option<u32>)> = vec![
            ("json", ok, None),
            (
                "json charset",
                RequestHead {
                    content_type: Some("Application/JSON; charset=utf-8"),
                    ..ok
                },
                None,
            ),
            (
                "vendor json",
                RequestHead {
                    content_type: Some("application/vnd.api+json"),
                    ..ok
                },
                None,
            ),
            (
                "no content type",
                RequestHead {
                    content_type: None,
                    ..ok
                },
                None,
            ),
            (
                "chunked",
                RequestHead {
                    content_length: None,
                    ..ok
                },
                None,
            ),
            (
                "text",
                RequestHead {
                    content_type: Some("text/plain"),
                    ..ok
                },
                Some(415),
            ),
            (
                "form",
                RequestHead {
                    content_type: Some("application/x-www-form-urlencoded"),
                    ..ok
                },
                Some(415),
            ),
            (
                "too long",
                RequestHead {
                    content_length: Some("101"),
                    ..ok
                },
                Some(413),
            ),
            (
                "at limit",
                RequestHead {
                    content_length: Some("100"),
                    ..ok
                },
                None,
            ),
            (
                "no body",
                RequestHead {
                    end_of_stream: true,
                    content_length: None,
                    ..ok
                },
                Some(400),
            ),
            (
                "get",
                RequestHead {
                    method: Some("GET"),
                    ..ok
                },
                Some(405),
            ),
        ];
        let c = cfg();
        for (name, head, want) in cases {
            assert_eq!(
                check_head(&c, &head).err().map(|e| e.status()),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn body_size_limit() {
        let c = cfg();
        assert!(check_body_size(&c, 100).is_ok());
        assert_eq!(check_body_size(&c, 101).unwrap_err().status(), 413);
    }

    #[test]
    fn plan_reports_client_and_upstream() {
        let c = config::parse(br#"{"provider":"deepseek","options":{"model":"deepseek-chat"}}"#)
            .unwrap();
        let p = plan(&c, br#"{"model":"x","messages":[],"stream":true}"#).unwrap();
        assert_eq!(p.client.model.as_deref(), Some("x"));
        assert!(p.upstream.stream);
        assert_eq!(p.upstream.path, "/chat/completions");
        assert_eq!(p.instance.name, "deepseek");
        assert_eq!(plan(&c, b"{}").unwrap_err().status(), 400);
        assert_eq!(plan(&c, b"{").unwrap_err().code(), "invalid_json");
    }

    #[test]
    fn local_replies() {
        assert_eq!(
            local_reply_error("response_timeout").map(|e| e.status()),
            Some(504)
        );
        assert_eq!(
            local_reply_error("upstream_reset_before_response_started{remote_connection_failure}")
                .map(|e| e.status()),
            Some(503)
        );
        assert_eq!(
            local_reply_error("no_healthy_upstream").map(|e| e.status()),
            Some(503)
        );
        assert_eq!(local_reply_error("via_upstream"), None);
    }
}
