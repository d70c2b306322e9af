//! The request side of an exchange: check the request line and headers, hold them, buffer
//! the body, then admit, pick and shape the first attempt, as edits to the paused request.

use super::account::{self, request_payload, Answer};
use super::{Exchange, Phase, Plugin, Retry};
use crate::balancer::key::{self, RequestAttrs};
use crate::balancer::{hash_bytes, Algorithm};
use crate::body::BodyError;
use crate::config::Config;
use crate::effect::{Effect, Host, Map, Out};
use crate::error::ProxyError;
use crate::headers::Headers;
use crate::protocol::api::{self, Route};
use crate::protocol::{self, Request, Upstream};
use crate::text::num;

/// Envoy's total timeout for the request; the filter's value replaces any client's.
const TIMEOUT_HEADER: &str = "x-envoy-upstream-rq-timeout-ms";

/// What the request headers phase checks.
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
        return Err(ProxyError::MethodNotAllowed(method.to_string(), "POST"));
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
            return Err(too_large(config));
        }
    }
    if head.end_of_stream {
        return Err(ProxyError::Body(BodyError::Empty));
    }
    Ok(())
}

fn too_large(config: &Config) -> ProxyError {
    ProxyError::BodyTooLarge {
        limit: config.max_req_body_size,
    }
}

/// `application/json`, or any `application/*+json`, with or without parameters.
/// Compared ignoring ASCII case in place (no lower-case copy per request).
fn is_json_media_type(ct: &str) -> bool {
    let media = ct.split(';').next().unwrap_or("").trim().as_bytes();
    let is = |part: Option<&[u8]>, want: &[u8]| part.is_some_and(|p| p.eq_ignore_ascii_case(want));
    is(Some(media), b"application/json")
        || (is(media.get(..12), b"application/")
            && is(
                media.len().checked_sub(5).and_then(|at| media.get(at..)),
                b"+json",
            ))
}

/// Request attributes for the consistent-hashing key: the request's headers, and the
/// client address (read only when the key needs it).
struct Attrs<'h> {
    headers: &'h Headers,
    host: &'h dyn Host,
}

impl RequestAttrs for Attrs<'_> {
    fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(str::to_string)
    }

    fn source_address(&self) -> Option<String> {
        self.host
            .property(&["source", "address"])
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }
}

impl Exchange {
    #[inline(never)] // compiled on its own: see "Round 5" in docs/performance.md
    pub(super) fn request_headers(
        &mut self,
        plugin: &Plugin,
        end_of_stream: bool,
        host: &dyn Host,
    ) -> Out {
        let config = &plugin.config;
        self.acct.started_ns = host.now_ns();
        // A client must never choose the cluster: its routing header goes first, whatever
        // happens next.
        let unroute = Effect::RemoveHeader(Map::Request, config.cluster_header.clone());
        let mut out = self.head(plugin, end_of_stream, host);
        out.effects.insert(0, unroute);
        // The access log names the path the client called, whatever comes of the request.
        let path = Effect::state("llm_client_path", &self.client_path);
        out.effects.insert(1, path);
        out
    }

    fn head(&mut self, plugin: &Plugin, end_of_stream: bool, host: &dyn Host) -> Out {
        let config = &plugin.config;
        // One read of the whole map: each host read costs about as much as a dozen writes.
        let headers = host.headers(Map::Request);
        let get = |name: &str| headers.get(name);
        self.client_path = get(":path").unwrap_or("").to_string();
        let method = get(":method").unwrap_or("");
        match api::route(&self.client_path) {
            Route::Models(id) if method == "GET" => return self.models(plugin, id.as_deref()),
            Route::Models(_) => {
                let err = ProxyError::MethodNotAllowed(method.to_string(), "GET");
                return self.reply(Some(plugin), &err);
            }
            Route::Unsupported(name) => {
                return self.reply(Some(plugin), &ProxyError::UnsupportedApi(name))
            }
            Route::Api(kind) => self.api = Some(kind),
            Route::ByBody => self.api = None,
        }
        let head = RequestHead {
            method: get(":method"),
            content_type: get("content-type"),
            content_length: get("content-length"),
            end_of_stream,
        };
        if let Err(e) = check_head(config, &head) {
            return self.reply(Some(plugin), &e);
        }
        self.chunked = get("transfer-encoding").is_some();
        if let (Algorithm::ConsistentHash, Some(source)) =
            (config.balancer.algorithm(), config.hash_key.as_ref())
        {
            let attrs = Attrs {
                headers: &headers,
                host,
            };
            let key = key::resolve(source, &attrs, &config.consumer_header);
            self.hash = hash_bytes(key.as_bytes());
        }
        let consumer = get(&config.consumer_header).filter(|c| !c.is_empty());
        if config.require_consumer && consumer.is_none() {
            return self.reply(Some(plugin), &ProxyError::ConsumerRequired);
        }
        self.acct.consumer = consumer.map(str::to_string);
        if !config.rate_limits.consumers.is_empty() {
            self.consumer = self.acct.consumer.clone();
        }
        if retries(config) {
            // As the client sent them: a fallback must not inherit the first instance's edits.
            self.client_headers = headers;
        }
        // Routing is decided from the body: hold the headers (this needs
        // `allow_on_headers_stop_iteration: true` in the Wasm filter config).
        self.phase = Phase::AwaitingBody;
        Out::hold(Vec::new())
    }

    #[inline(never)] // compiled on its own: see "Round 5" in docs/performance.md
    pub(super) fn request_body(
        &mut self,
        plugin: &Plugin,
        size: usize,
        end_of_stream: bool,
        host: &dyn Host,
    ) -> Out {
        if !matches!(self.phase, Phase::AwaitingBody) {
            return Out::go(Vec::new());
        }
        if size > plugin.config.max_req_body_size {
            return self.reply(Some(plugin), &too_large(&plugin.config));
        }
        if !end_of_stream {
            return Out::hold(Vec::new());
        }
        match host.body(Map::Request, size) {
            Ok(body) => self.admit(plugin, body, host),
            Err(s) => self.reply(Some(plugin), &internal("read the request body", &s)),
        }
    }

    /// A body that ends with trailers never reported `end_of_stream`: finish here.
    #[inline(never)] // compiled on its own: see "Round 5" in docs/performance.md
    pub(super) fn request_trailers(&mut self, plugin: &Plugin, host: &dyn Host) -> Out {
        if !matches!(self.phase, Phase::AwaitingBody) {
            return Out::go(Vec::new());
        }
        let size = match host.body(Map::Request, usize::MAX) {
            Ok(b) => b.len(),
            Err(s) => return self.reply(Some(plugin), &internal("read the request body", &s)),
        };
        self.request_body(plugin, size, true, host)
    }

    /// `GET .../models`: answered from the configuration, nothing goes upstream.
    fn models(&mut self, plugin: &Plugin, id: Option<&str>) -> Out {
        match api::models_answer(&plugin.config, id) {
            Ok(body) => {
                let ct = ("content-type".to_string(), "application/json".to_string());
                let mut out = self.send(200, vec![ct], body);
                out.effects.push(Effect::state("llm_api", "models"));
                out.effects.push(Effect::state("llm_error_code", "-"));
                out
            }
            Err(e) => self.reply(Some(plugin), &e),
        }
    }

    /// Sends the request to instance `index`, admitted by the quota backend. `paused`: as
    /// for [`Exchange::sent_first`].
    pub(super) fn send_first(
        &mut self,
        plugin: &Plugin,
        body: Vec<u8>,
        index: usize,
        paused: bool,
        host: &dyn Host,
    ) -> Out {
        let shaped = protocol::read_request(&body, &plugin.config, self.api)
            .and_then(|req| self.shape_first(plugin, &req, body.len(), index));
        match shaped {
            Ok(effects) => self.sent_first(plugin, body, index, effects, paused, host),
            Err(e) => self.refuse(plugin, &e),
        }
    }

    /// The first attempt on instance `index`: the edits that shape the paused request for
    /// it, and the books.
    pub(super) fn shape_first(
        &mut self,
        plugin: &Plugin,
        req: &Request<'_>,
        body_len: usize,
        index: usize,
    ) -> Result<Vec<Effect>, ProxyError> {
        let config = &plugin.config;
        let instance = config
            .instances
            .get(index)
            .ok_or(ProxyError::NoInstanceAvailable)?;
        let up = protocol::shape(instance, req)?;
        log::debug!(
            "envoy-ai-proxy: {} request to instance {} (cluster {})",
            req.client.kind.name(),
            instance.name,
            up.cluster
        );
        let mut effects = request_edits(config, &up, req.body.text().as_bytes(), self.chunked);
        // Access logs show the path the client called, never the rewritten one (it may carry
        // an `auth.query` key): Envoy's default format logs this header when present.
        if up.path != self.client_path {
            effects.push(Effect::SetHeader(
                Map::Request,
                "x-envoy-original-path".into(),
                self.client_path.clone(),
            ));
        }

        let len = u64::try_from(body_len).unwrap_or(u64::MAX);
        self.acct.prompt_estimate = len.div_ceil(account::CHARS_PER_TOKEN);
        let answer = Answer::new(index, &req.client, instance, &up, 1, String::new());
        effects.extend(answer.sent());
        self.acct.answer = Some(answer);
        self.acct.request_payload = config
            .logging
            .payloads
            .then(|| request_payload(req.body.raw("messages").or(req.body.raw("input"))))
            .flatten();
        Ok(effects)
    }

    /// The first attempt is on its way: keep what a fallback needs. `paused`: the request
    /// waits since an earlier callback and must be resumed explicitly.
    pub(super) fn sent_first(
        &mut self,
        plugin: &Plugin,
        body: Vec<u8>,
        index: usize,
        mut effects: Vec<Effect>,
        paused: bool,
        host: &dyn Host,
    ) -> Out {
        let config = &plugin.config;
        let now = host.now_ns();
        self.acct.first_sent_ns = now;
        self.acct.sent_ns = now;
        if retries(config) {
            let mut tried = vec![false; config.instances.len()];
            if let Some(t) = tried.get_mut(index) {
                *t = true;
            }
            self.retry = Some(Retry {
                body,
                client_headers: std::mem::take(&mut self.client_headers),
                tried,
                failures: Vec::new(),
                counted: 0,
                attempt_started_ns: now,
                held: None,
                last: (None, Vec::new()),
            });
        }
        self.phase = Phase::Forwarded(index);
        if paused {
            effects.push(Effect::Resume);
        }
        Out::go(effects)
    }
}

/// Whether a failed answer may ever be retried on another instance (then the request is
/// kept for the fallback).
fn retries(config: &Config) -> bool {
    config.fallback.retries_answers() && config.instances.len() > 1
}

pub(super) fn internal(what: &str, why: &str) -> ProxyError {
    ProxyError::Internal(format!("could not {what} ({why})"))
}

/// The edits that turn the paused request into the attempt's upstream request.
fn request_edits(config: &Config, up: &Upstream<'_>, body: &[u8], chunked: bool) -> Vec<Effect> {
    let set = |n: &str, v: &str| Effect::SetHeader(Map::Request, n.to_string(), v.to_string());
    let mut out = vec![
        set(&config.cluster_header, up.cluster),
        set(":authority", up.authority),
        set(":path", up.path),
    ];
    // What the client sent that must not reach the provider (an auth header the instance
    // sets replaces the client's anyway).
    for name in dropped_client_headers(config, up) {
        if !up.auth_headers.iter().any(|(n, _)| n == name) {
            out.push(Effect::RemoveHeader(Map::Request, name.to_string()));
        }
    }
    out.extend(up.auth_headers.iter().map(|(n, v)| set(n, v)));
    out.extend(preset_headers(up).map(|(n, v)| set(n, v)));
    // `timeout` bounds a whole answer. A stream may rightly run for minutes, so for streams
    // the total limit is lifted and the route's `idle_timeout` bounds the silence instead.
    // A client's per-try timeout can only shorten its own request (Envoy caps it at the
    // total, which the filter sets): it is left alone.
    let timeout_ms = if up.stream { 0 } else { config.timeout_ms };
    out.push(set(TIMEOUT_HEADER, &num(timeout_ms)));
    if let Some(patch) = &up.body {
        // Envoy replaces a prefix of the buffered body: only the bytes up to the last change
        // go back, the client's unchanged tail (most of a large body) stays where it is.
        out.push(Effect::ReplaceBody {
            map: Map::Request,
            size: patch.replaced,
            bytes: patch.prefix.as_bytes().to_vec(),
        });
        // Envoy does not fix content-length after a body change; a stale one desynchronises
        // the upstream connection.
        out.push(set(
            "content-length",
            &num(u64::try_from(patch.new_len(body.len())).unwrap_or(u64::MAX)),
        ));
        if chunked {
            out.push(Effect::RemoveHeader(
                Map::Request,
                "transfer-encoding".into(),
            ));
        }
    }
    out
}

/// Client headers the provider never sees: `accept-encoding` (the filter reads the answer's
/// usage; Envoy's compressor may compress toward the client) and, when the instance has
/// auth, every client credential (the gateway owns the upstream credentials).
fn dropped_client_headers<'a>(config: &'a Config, up: &Upstream<'_>) -> Vec<&'a str> {
    let mut out = vec!["accept-encoding"];
    // Headers of the client's protocol mean nothing to an instance of the other.
    out.extend(up.foreign_headers);
    if up.drop_client_authorization {
        out.extend(["authorization", "api-key", "x-api-key"]);
        out.push(&config.consumer_header);
    }
    out
}

/// The provider's own headers (`anthropic-version`) that `auth.header` does not set.
fn preset_headers<'u>(
    up: &'u Upstream<'_>,
) -> impl Iterator<Item = (&'static str, &'static str)> + 'u {
    up.preset_headers
        .iter()
        .copied()
        .filter(|(n, _)| !up.auth_headers.iter().any(|(a, _)| a == n))
}

/// Client headers that never go to a fallback callout: pseudo-headers and framing (Envoy
/// sets its own), the routing header, Envoy's control headers, what the provider must not
/// see (above), and what the instance's auth replaces.
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
        || dropped_client_headers(config, up).contains(&name)
        || up.auth_headers.iter().any(|(n, _)| n == name)
        || up.preset_headers.iter().any(|(n, _)| *n == name))
}

/// The headers of a fallback callout: the request line for the instance, the client's
/// headers (as it sent them, so nothing of an earlier instance leaks), the instance's auth.
pub fn callout_headers(
    config: &Config,
    up: &Upstream<'_>,
    client_headers: &Headers,
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
            .map(|(n, v)| (n.to_string(), v.to_string())),
    );
    out.extend(up.auth_headers.iter().cloned());
    out.extend(preset_headers(up).map(|(n, v)| (n.to_string(), v.to_string())));
    out.push(("content-length".into(), body_len.to_string()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    #[test]
    fn json_media_types_read_as_by_a_lower_case_copy() {
        let by_copy = |ct: &str| {
            let media = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            media == "application/json"
                || (media.starts_with("application/") && media.ends_with("+json"))
        };
        for ct in [
            "application/json",
            "Application/JSON; charset=utf-8",
            " application/json ;x",
            "APPLICATION/VND.API+JSON",
            "application/+json",
            "application/json+",
            "application/jsonx",
            "applicationjson",
            "application/",
            "+json",
            "text/plain",
            "ápplication/json",
            "application/x+jsón",
            "",
            ";",
        ] {
            assert_eq!(is_json_media_type(ct), by_copy(ct), "{ct:?}");
        }
    }

    #[test]
    fn head_checks() {
        let c = config::parse(br#"{"provider":"openai","max_req_body_size":100}"#).unwrap();
        let ok = RequestHead {
            method: Some("POST"),
            content_type: Some("application/json"),
            content_length: Some("50"),
            end_of_stream: false,
        };
        let ct = |v| RequestHead {
            content_type: v,
            ..ok
        };
        let len = |v| RequestHead {
            content_length: v,
            ..ok
        };
        let cases: Vec<(&str, RequestHead, Option<u32>)> = vec![
            ("json", ok, None),
            (
                "json charset",
                ct(Some("Application/JSON; charset=utf-8")),
                None,
            ),
            ("vendor json", ct(Some("application/vnd.api+json")), None),
            ("no content type", ct(None), None),
            ("chunked", len(None), None),
            ("text", ct(Some("text/plain")), Some(415)),
            (
                "form",
                ct(Some("application/x-www-form-urlencoded")),
                Some(415),
            ),
            ("too long", len(Some("101")), Some(413)),
            ("at limit", len(Some("100")), None),
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
        for (name, head, want) in cases {
            let got = check_head(&c, &head).err().map(|e| e.status());
            assert_eq!(got, want, "{name}");
        }
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
        let req = protocol::read_request(br#"{"messages":[]}"#, &c, None).unwrap();
        let up = protocol::shape(&c.instances[1], &req).unwrap();
        let client = Headers::from_pairs(&[
            (":path", "/v1/chat/completions"),
            (":authority", "gw"),
            ("authorization", "Bearer client"),
            ("api-key", "client-key"),
            ("openai-beta", "assistants=v2"),
            ("content-length", "15"),
            ("x-envoy-upstream-rq-timeout-ms", "1"),
            ("x-ai-proxy-cluster", "evil"),
            ("accept", "application/json"),
            ("accept-encoding", "gzip"),
            ("x-api-key", "client-x-key"),
            ("x-consumer", "spoofed"),
        ]);
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
        assert!(get("accept-encoding").is_empty());
        assert!(get("x-api-key").is_empty());
        assert!(get("x-consumer").is_empty());
    }
}
