//! The per-request decisions, phase by phase, as plain functions over plain inputs: the
//! host layer reads what Envoy gives it, asks here what to do, and applies the answer.

use crate::balancer::RoundRobin;
use crate::body::JsonBody;
use crate::config::{Config, Instance, LimitSet};
use crate::error::ProxyError;
use crate::health;
use crate::provider::shape::{self, ClientRequest, Upstream};
use crate::provider::ApiKind;
use crate::ratelimit::{self, Limit, Quota, Store};
use crate::usage::Usage;

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

/// The shared-data key of a token counter: per filter configuration (`scope`), instance
/// and consumer (`*`: the route's limit).
pub fn counter_key(scope: &str, instance: &str, consumer: Option<&str>) -> String {
    format!("aiproxy.rl.{scope}.{instance}.{}", consumer.unwrap_or("*"))
}

/// Every counter a configuration uses, with its limit: what to seed, and to show as gauges.
/// (instance index, consumer, key, limit)
pub fn counters(config: &Config, scope: &str) -> Vec<(usize, Option<String>, String, Limit)> {
    let mut out = Vec::new();
    let sets = config.rate_limits.route.iter().map(|s| (None, s)).chain(
        config
            .rate_limits
            .consumers
            .iter()
            .map(|(n, s)| (Some(n.as_str()), s)),
    );
    for (consumer, set) in sets {
        for (i, (inst, limit)) in config.instances.iter().zip(&set.per_instance).enumerate() {
            if let Some(limit) = limit {
                let key = counter_key(scope, &inst.name, consumer);
                out.push((i, consumer.map(str::to_string), key, *limit));
            }
        }
    }
    out
}

/// The limits of one request, read once when it arrives: per instance, the binding quota
/// and the settings of the limit it comes from (`None`: no limit applies).
#[derive(Debug, Clone, Default)]
pub struct Admission<'c> {
    pub per_instance: Vec<Option<(Quota, &'c LimitSet)>>,
}

impl Admission<'_> {
    pub fn exhausted(&self, index: usize) -> bool {
        matches!(self.per_instance.get(index), Some(Some((q, _))) if q.exhausted())
    }

    /// The quota to show for an instance, when its limit set shows headers.
    pub fn shown(&self, index: usize) -> Option<Quota> {
        match self.per_instance.get(index) {
            Some(Some((q, set))) if set.show_headers => Some(*q),
            _ => None,
        }
    }
}

pub fn admission<'c>(
    config: &'c Config,
    scope: &str,
    consumer: Option<&str>,
    store: &dyn Store,
    now_secs: u64,
) -> Admission<'c> {
    let per_instance = config
        .instances
        .iter()
        .enumerate()
        .map(|(i, inst)| {
            let mut applicable: Vec<(Quota, &LimitSet)> = Vec::new();
            for (who, set) in applicable_sets(config, consumer) {
                if let Some(Some(limit)) = set.per_instance.get(i) {
                    let key = counter_key(scope, &inst.name, who);
                    let counter = ratelimit::read(store, &key, now_secs, limit.window_secs);
                    applicable.push((Quota::of(*limit, counter, now_secs), set));
                }
            }
            ratelimit::binding(applicable)
        })
        .collect();
    Admission { per_instance }
}

/// What answering a request costs, per counter: (key, limit, tokens).
pub fn charges(
    config: &Config,
    scope: &str,
    consumer: Option<&str>,
    index: usize,
    usage: &Usage,
) -> Vec<(String, Limit, u64)> {
    let Some(inst) = config.instances.get(index) else {
        return Vec::new();
    };
    applicable_sets(config, consumer)
        .filter_map(|(who, set)| {
            let limit = set.per_instance.get(index).copied().flatten()?;
            Some((
                counter_key(scope, &inst.name, who),
                limit,
                set.strategy.tokens(usage),
            ))
        })
        .collect()
}

/// The limit sets that apply to a request: the route's, then its consumer's (with the
/// consumer's name, which keys its counters).
fn applicable_sets<'c, 'a>(
    config: &'c Config,
    consumer: Option<&'a str>,
) -> impl Iterator<Item = (Option<&'a str>, &'c LimitSet)> {
    let consumer_set = consumer.and_then(|c| config.rate_limits.consumer(c).map(|s| (Some(c), s)));
    config
        .rate_limits
        .route
        .iter()
        .map(|s| (None, s))
        .chain(consumer_set)
}

/// `X-AI-RateLimit-{Limit,Remaining,Reset}-<instance>`.
pub fn quota_headers(instance: &str, q: &Quota) -> [(String, String); 3] {
    [
        (
            format!("x-ai-ratelimit-limit-{instance}"),
            q.limit.to_string(),
        ),
        (
            format!("x-ai-ratelimit-remaining-{instance}"),
            q.remaining.to_string(),
        ),
        (
            format!("x-ai-ratelimit-reset-{instance}"),
            q.reset_secs.to_string(),
        ),
    ]
}

fn rate_limited(config: &Config, limits: &Admission<'_>, index: usize) -> ProxyError {
    let (status, message, retry_after) = match limits.per_instance.get(index) {
        Some(Some((q, set))) => (set.rejected_code, set.rejected_msg.clone(), q.reset_secs),
        _ => (429, None, 1),
    };
    let name = config.instances.get(index).map_or("", |i| i.name.as_str());
    ProxyError::RateLimited {
        status,
        message: message
            .unwrap_or_else(|| format!("token rate limit exceeded for instance {name}")),
        retry_after,
    }
}

/// What keeps instances from being picked for this attempt.
#[derive(Debug, Clone, Copy, Default)]
pub struct Availability<'a, 'c> {
    /// Instances already tried for this request.
    pub tried: &'a [bool],
    /// The token limits, when configured.
    pub limits: Option<&'a Admission<'c>>,
    /// Instances the health checks have taken out.
    pub unhealthy: &'a [bool],
}

/// Picks the instance for the next attempt among those not tried that offer this kind of
/// request. `hash` is the request's key hash (consistent hashing only). Unhealthy instances
/// are skipped unless every candidate is unhealthy. With limits, an instance whose quota is
/// spent is skipped when rate-limit fallback is on, and rejects the request when it is off.
pub fn pick(
    config: &Config,
    rr: &mut RoundRobin,
    hash: u64,
    kind: ApiKind,
    avail: &Availability<'_, '_>,
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
    let flag = |v: &[bool], i: usize| v.get(i).copied().unwrap_or(false);
    let limits = avail.limits;
    let untried = |i: usize| offers(i) && !flag(avail.tried, i);
    let exhausted = |i: usize| limits.is_some_and(|l| l.exhausted(i));
    let skip_exhausted = config.fallback.rate_limiting;
    let candidate = |i: usize| untried(i) && !(skip_exhausted && exhausted(i));
    let picked = config
        .balancer
        .pick(rr, hash, |i| candidate(i) && !flag(avail.unhealthy, i))
        // Every candidate is unhealthy: better to try one than to refuse.
        .or_else(|| config.balancer.pick(rr, hash, candidate));
    match picked {
        Some(i) if exhausted(i) => Err(limits.map_or(ProxyError::NoInstanceAvailable, |l| {
            rate_limited(config, l, i)
        })),
        Some(i) => Ok(i),
        None => {
            // Everything left is out of quota: say so, with the soonest reset.
            let soonest = (0..config.instances.len())
                .filter(|&i| untried(i) && exhausted(i))
                .min_by_key(|&i| {
                    limits
                        .and_then(|l| l.per_instance.get(i).copied().flatten())
                        .map_or(u64::MAX, |(q, _)| q.reset_secs)
                });
            match (soonest, limits) {
                (Some(i), Some(l)) => Err(rate_limited(config, l, i)),
                _ => Err(ProxyError::NoInstanceAvailable),
            }
        }
    }
}

/// The shared-data keys of an instance's health: active (written by the prober) and
/// passive (written by the workers that see its answers).
pub fn health_keys(scope: &str, instance: &str) -> (String, String) {
    (
        format!("aiproxy.hc.{scope}.{instance}.active"),
        format!("aiproxy.hc.{scope}.{instance}.passive"),
    )
}

/// Which instances the health checks have taken out, read from the store.
pub fn unhealthy(config: &Config, scope: &str, store: &dyn Store, now_ms: u64) -> Vec<bool> {
    config
        .instances
        .iter()
        .map(|inst| {
            let (active_key, passive_key) = health_keys(scope, &inst.name);
            let read = |key: &str| store.get(key).ok().and_then(|(v, _)| v);
            let active_down = inst.active_check.is_some()
                && read(&active_key)
                    .and_then(|v| health::ActiveState::decode(&v))
                    .is_some_and(|s| !s.healthy);
            let passive_down = inst.passive_check.is_some()
                && read(&passive_key)
                    .and_then(|v| health::PassiveState::decode(&v))
                    .is_some_and(|s| s.down(now_ms));
            active_down || passive_down
        })
        .collect()
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
        let i = pick(
            c,
            &mut RoundRobin::default(),
            0,
            req.client.kind,
            &Availability::default(),
        )?;
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
        let mut pick_tried = |kind, tried: &[bool]| {
            let avail = Availability {
                tried,
                ..Default::default()
            };
            pick(&c, &mut rr, 0, kind, &avail)
        };
        assert_eq!(pick_tried(ApiKind::Chat, &[]), Ok(0));
        assert_eq!(pick_tried(ApiKind::Chat, &[true]), Ok(1));
        assert_eq!(pick_tried(ApiKind::Embeddings, &[]), Ok(1));
        assert_eq!(pick_tried(ApiKind::Embeddings, &[false, true]), Ok(2));
        assert_eq!(
            pick_tried(ApiKind::Chat, &[true, true, true]),
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

    /// A plain in-memory store for admission tests.
    #[derive(Default)]
    struct Mem(std::cell::RefCell<std::collections::HashMap<String, Vec<u8>>>);

    impl Store for Mem {
        fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), String> {
            Ok((self.0.borrow().get(key).cloned(), Some(1)))
        }
        fn set(&self, key: &str, value: &[u8], _: Option<u32>) -> Result<(), ratelimit::SetError> {
            self.0.borrow_mut().insert(key.into(), value.to_vec());
            Ok(())
        }
    }

    fn limited(fallback: bool) -> Config {
        let mut cfg = serde_json::json!({
            "instances": [
                {"name": "a", "provider": "openai", "priority": 1},
                {"name": "b", "provider": "openai"}
            ],
            "rate_limiting": {"instances": [{"name": "a", "limit": 10, "time_window": 60}],
                              "rejected_msg": "over quota"},
            "consumers": [{"name": "john", "rate_limiting": {
                "instances": [{"name": "b", "limit": 5, "time_window": 30}],
                "limit_strategy": "completion_tokens", "rejected_code": 403}}]
        });
        if fallback {
            cfg["fallback_strategy"] = "instance_health_and_rate_limiting".into();
        }
        config::parse(cfg.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn quotas_steer_picking() {
        let store = Mem::default();
        let now = 1_000_000;
        for fallback in [true, false] {
            let c = limited(fallback);
            let mut rr = RoundRobin::default();
            let adm = admission(&c, "s", None, &store, now);
            assert_eq!(adm.shown(0).map(|q| q.remaining), Some(10));
            assert_eq!(
                pick(
                    &c,
                    &mut rr,
                    0,
                    ApiKind::Chat,
                    &Availability {
                        tried: &[],
                        limits: Some(&adm),
                        ..Default::default()
                    }
                ),
                Ok(0)
            );
        }
        // Spend a's quota.
        ratelimit::charge(&store, &counter_key("s", "a", None), now, 60, 31).unwrap();

        let c = limited(true);
        let adm = admission(&c, "s", None, &store, now);
        assert!(adm.exhausted(0));
        assert_eq!(adm.shown(0).map(|q| q.remaining), Some(0));
        let mut rr = RoundRobin::default();
        assert_eq!(
            pick(
                &c,
                &mut rr,
                0,
                ApiKind::Chat,
                &Availability {
                    tried: &[],
                    limits: Some(&adm),
                    ..Default::default()
                }
            ),
            Ok(1)
        );
        // b tried and failed: nothing left but a spent quota.
        match pick(
            &c,
            &mut rr,
            0,
            ApiKind::Chat,
            &Availability {
                tried: &[false, true],
                limits: Some(&adm),
                ..Default::default()
            },
        ) {
            Err(ProxyError::RateLimited {
                status,
                message,
                retry_after,
            }) => {
                assert_eq!((status, message.as_str()), (429, "over quota"));
                assert_eq!(retry_after, ratelimit::reset_in(now, 60));
            }
            other => panic!("{other:?}"),
        }

        // Without rate-limit fallback the spent instance rejects.
        let c = limited(false);
        let adm = admission(&c, "s", None, &store, now);
        assert!(matches!(
            pick(
                &c,
                &mut rr,
                0,
                ApiKind::Chat,
                &Availability {
                    tried: &[],
                    limits: Some(&adm),
                    ..Default::default()
                }
            ),
            Err(ProxyError::RateLimited { status: 429, .. })
        ));
    }

    #[test]
    fn consumer_limits_bind_for_their_consumer_only() {
        let store = Mem::default();
        let now = 1_000_000;
        let c = limited(true);
        ratelimit::charge(&store, &counter_key("s", "a", None), now, 60, 3).unwrap();
        ratelimit::charge(&store, &counter_key("s", "b", Some("john")), now, 30, 5).unwrap();
        let john = admission(&c, "s", Some("john"), &store, now);
        assert_eq!(john.shown(0).map(|q| (q.limit, q.remaining)), Some((10, 7)));
        assert!(john.exhausted(1));
        let jane = admission(&c, "s", Some("jane"), &store, now);
        assert!(!jane.exhausted(1) && jane.per_instance[1].is_none());
        // John's consumer limit inherits the route's message, not its status.
        let mut rr = RoundRobin::default();
        match pick(
            &c,
            &mut rr,
            0,
            ApiKind::Chat,
            &Availability {
                tried: &[true, false],
                limits: Some(&john),
                ..Default::default()
            },
        ) {
            Err(ProxyError::RateLimited {
                status, message, ..
            }) => {
                assert_eq!((status, message.as_str()), (403, "over quota"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn charges_follow_each_limits_strategy() {
        let c = limited(true);
        let u = Usage {
            prompt_tokens: 3,
            completion_tokens: 4,
            total_tokens: 7,
            ..Usage::default()
        };
        let keys = |consumer, i| {
            charges(&c, "s", consumer, i, &u)
                .into_iter()
                .map(|(k, _, t)| (k, t))
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(None, 0), vec![("aiproxy.rl.s.a.*".to_string(), 7)]);
        assert_eq!(keys(None, 1), vec![]);
        assert_eq!(
            keys(Some("john"), 1),
            vec![("aiproxy.rl.s.b.john".to_string(), 4)]
        );
        assert_eq!(keys(Some("nobody"), 1), vec![]);
        assert_eq!(counters(&c, "s").len(), 2);
    }

    #[test]
    fn unhealthy_instances_are_skipped_unless_all_are() {
        let c = config::parse(
            br#"{"instances":[
                {"name":"a","provider":"openai","priority":1,
                 "checks":{"active":{"http_path":"/health"},"passive":{}}},
                {"name":"b","provider":"openai"}]}"#,
        )
        .unwrap();
        let store = Mem::default();
        let now = 5_000_000;
        assert_eq!(unhealthy(&c, "s", &store, now), vec![false, false]);
        let (active, passive) = health_keys("s", "a");
        let down = health::ActiveState {
            healthy: false,
            ..Default::default()
        };
        store.set(&active, &down.encode(), None).unwrap();
        assert_eq!(unhealthy(&c, "s", &store, now), vec![true, false]);
        store
            .set(&active, &health::ActiveState::default().encode(), None)
            .unwrap();
        let out = health::PassiveState {
            down_until_ms: now + 1,
            ..Default::default()
        };
        store.set(&passive, &out.encode(), None).unwrap();
        assert_eq!(unhealthy(&c, "s", &store, now), vec![true, false]);
        assert_eq!(unhealthy(&c, "s", &store, now + 1), vec![false, false]);

        let mut rr = RoundRobin::default();
        let pick_with = |rr: &mut RoundRobin, unhealthy: &[bool]| {
            pick(
                &c,
                rr,
                0,
                ApiKind::Chat,
                &Availability {
                    unhealthy,
                    ..Default::default()
                },
            )
        };
        assert_eq!(pick_with(&mut rr, &[false, false]), Ok(0));
        assert_eq!(pick_with(&mut rr, &[true, false]), Ok(1));
        // All unhealthy: all are used, in their usual order.
        assert_eq!(pick_with(&mut rr, &[true, true]), Ok(0));
    }
}
