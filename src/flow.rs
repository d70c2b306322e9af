//! The per-request decisions, phase by phase, as plain functions over plain inputs: the
//! host layer reads what Envoy gives it, asks here what to do, and applies the answer.

use crate::balancer::RoundRobin;
use crate::body::JsonBody;
use crate::config::{Config, Instance};
use crate::error::ProxyError;
use crate::provider::shape::{self, ClientRequest, Upstream};
use crate::provider::ApiKind;

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

/// The client's request, read once from its body.
pub struct Request<'b> {
    pub body: JsonBody<'b>,
    pub client: ClientRequest,
}

pub fn read_request(body: &[u8]) -> Result<Request<'_>, ProxyError> {
    let body = JsonBody::parse(body)?;
    let client = ClientRequest::classify(&body)?;
    Ok(Request { body, client })
}

/// Picks the instance for the next attempt among those not `tried` that offer this kind of
/// request. `hash` is the request's key hash (consistent hashing only).
pub fn pick(
    config: &Config,
    rr: &mut RoundRobin,
    hash: u64,
    tried: &[bool],
    kind: ApiKind,
) -> Result<usize, ProxyError> {
    let offers = |i: usize| {
        config
            .instances
            .get(i)
            .is_some_and(|inst| inst.target.path(kind).is_some())
    };
    if !(0..config.instances.len()).any(offers) {
        let provider = config.instances.first().map_or("", |i| i.provider.name());
        return Err(ProxyError::KindNotOffered {
            provider,
            kind: kind.name(),
        });
    }
    let available = |i: usize| offers(i) && !tried.get(i).copied().unwrap_or(false);
    config
        .balancer
        .pick(rr, hash, available)
        .ok_or(ProxyError::NoInstanceAvailable)
}

/// The upstream request of one attempt on instance `index`.
pub fn shape_for<'c>(
    config: &'c Config,
    index: usize,
    req: &Request<'_>,
) -> Result<(&'c Instance, Upstream<'c>), ProxyError> {
    let instance = config
        .instances
        .get(index)
        .ok_or(ProxyError::NoInstanceAvailable)?;
    let upstream = shape::shape(instance, &req.body, &req.client)?;
    Ok((instance, upstream))
}

/// Client headers that never go to a fallback callout: pseudo-headers and framing (Envoy
/// sets its own), the routing header, Envoy's control headers, and what the instance's auth
/// replaces.
fn forwardable(name: &str, config: &Config, up: &Upstream<'_>) -> bool {
    const DROP: &[&str] = &[
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-connection",
        "expect",
    ];
    !(name.starts_with(':')
        || name.starts_with("x-envoy-")
        || DROP.contains(&name)
        || name == config.cluster_header
        || (up.drop_client_authorization && name == "authorization")
        || up.auth_headers.iter().any(|(n, _)| n == name))
}

/// The headers of a fallback callout: the request line for the instance, the client's
/// headers (as it sent them, so nothing of an earlier instance leaks), the instance's auth.
pub fn callout_headers(
    config: &Config,
    up: &Upstream<'_>,
    client_headers: &[(String, String)],
    body_len: usize,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = vec![
        (":method".into(), "POST".into()),
        (":path".into(), up.path.to_string()),
        (":authority".into(), up.authority.to_string()),
    ];
    out.extend(
        client_headers
            .iter()
            .filter(|(n, _)| forwardable(n, config, up))
            .cloned(),
    );
    out.extend(up.auth_headers.iter().cloned());
    out.push(("content-length".into(), body_len.to_string()));
    out
}

/// The headers of a callout's answer that may be replayed to the client: Envoy frames the
/// local reply itself.
pub fn replayable_response_header(name: &str) -> bool {
    !(name.starts_with(':')
        || matches!(
            name,
            "content-length" | "transfer-encoding" | "connection" | "keep-alive"
        ))
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

    fn plan(c: &Config, body: &[u8]) -> Result<(usize, ClientRequest, String), ProxyError> {
        let req = read_request(body)?;
        let i = pick(c, &mut RoundRobin::default(), 0, &[], req.client.kind)?;
        let (_, up) = shape_for(c, i, &req)?;
        Ok((i, req.client.clone(), up.path.to_string()))
    }

    #[test]
    fn reads_picks_and_shapes() {
        let c = config::parse(br#"{"provider":"deepseek","options":{"model":"deepseek-chat"}}"#)
            .unwrap();
        let (i, client, path) = plan(&c, br#"{"model":"x","messages":[],"stream":true}"#).unwrap();
        assert_eq!(i, 0);
        assert_eq!(client.model.as_deref(), Some("x"));
        assert!(client.stream);
        assert_eq!(path, "/chat/completions");
        assert_eq!(plan(&c, b"{}").unwrap_err().status(), 400);
        assert_eq!(plan(&c, b"{").unwrap_err().code(), "invalid_json");
        assert_eq!(
            plan(&c, br#"{"input":"x"}"#).unwrap_err().code(),
            "unsupported_request_kind"
        );
    }

    #[test]
    fn picking_skips_tried_and_instances_without_the_kind() {
        let c = config::parse(
            br#"{"instances":[
                {"name":"ds","provider":"deepseek","priority":2},
                {"name":"oa","provider":"openai","priority":1},
                {"name":"oa2","provider":"openai","priority":0}]}"#,
        )
        .unwrap();
        let mut rr = RoundRobin::default();
        assert_eq!(pick(&c, &mut rr, 0, &[], ApiKind::Chat), Ok(0));
        assert_eq!(pick(&c, &mut rr, 0, &[true], ApiKind::Chat), Ok(1));
        assert_eq!(pick(&c, &mut rr, 0, &[], ApiKind::Embeddings), Ok(1));
        assert_eq!(
            pick(&c, &mut rr, 0, &[false, true], ApiKind::Embeddings),
            Ok(2)
        );
        assert_eq!(
            pick(&c, &mut rr, 0, &[true, true, true], ApiKind::Chat),
            Err(ProxyError::NoInstanceAvailable)
        );
    }

    #[test]
    fn callout_headers_carry_the_client_but_not_the_last_instance() {
        let c = config::parse(
            br#"{"instances":[
                {"name":"a","provider":"openai","auth":{"header":{"Authorization":"Bearer A"}}},
                {"name":"b","provider":"openai-compatible","override":{"endpoint":"http://b:9/v1/x"},
                 "auth":{"header":{"api-key":"B"}}}]}"#,
        )
        .unwrap();
        let req = read_request(br#"{"messages":[]}"#).unwrap();
        let (_, up) = shape_for(&c, 1, &req).unwrap();
        let client: Vec<(String, String)> = [
            (":path", "/v1/chat/completions"),
            (":authority", "gw"),
            ("authorization", "Bearer client"),
            ("api-key", "client-key"),
            ("openai-beta", "assistants=v2"),
            ("content-length", "15"),
            ("x-envoy-upstream-rq-timeout-ms", "1"),
            ("x-ai-proxy-cluster", "evil"),
            ("accept", "application/json"),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
        let h = callout_headers(&c, &up, &client, 15);
        let get = |n: &str| {
            h.iter()
                .filter(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(get(":method"), ["POST"]);
        assert_eq!(get(":path"), ["/v1/x"]);
        assert_eq!(get(":authority"), ["b:9"]);
        assert_eq!(get("authorization"), Vec::<&str>::new());
        assert_eq!(get("api-key"), ["B"]);
        assert_eq!(get("openai-beta"), ["assistants=v2"]);
        assert_eq!(get("accept"), ["application/json"]);
        assert_eq!(get("content-length"), ["15"]);
        assert!(get("x-envoy-upstream-rq-timeout-ms").is_empty());
        assert!(get("x-ai-proxy-cluster").is_empty());
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
