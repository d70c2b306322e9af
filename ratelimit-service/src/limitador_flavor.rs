//! The Limitador flavor: the limiter (in memory or Redis, as limitador-server 2.x builds it),
//! its limits file (a YAML list of `limitador::limit::Limit`, as the server reads it), and the
//! answers of the released server: Envoy RLS v3 `ShouldRateLimit` and Kuadrant's
//! `CheckRateLimit`/`Report`, plus `Reserve`/`Commit` from Limitador's newer proto. The
//! request → `Context` mapping and every answer follow limitador-server's
//! `envoy_rls/server.rs` and `envoy_rls/kuadrant_service.rs`.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use limitador::limit::{Context, Limit, Namespace};
use limitador::reservation::ReservationId;
use limitador::storage::redis::AsyncRedisStorage;
use limitador::storage::AsyncStorage;
use limitador::{AsyncRateLimiter, AsyncRateLimiterBuilder, RateLimiter, RateLimiterBuilder};
use tonic::{Request, Response, Status};

use crate::kuadrant::{
    CommitRequest, CommitResponse, KuadrantRls, ReserveRequest, ReserveResponse,
};
use crate::rls::{self, Code, RateLimitDescriptor, RateLimitRequest, RateLimitResponse};

/// In-memory counters kept (limitador-server guesses from the memory size; a test needs few).
const IN_MEMORY_CACHE_SIZE: u64 = 10_000;

/// The limiter, blocking (in memory) or async (Redis), as limitador-server holds it.
pub enum Limiter {
    Blocking(RateLimiter),
    Async(AsyncRateLimiter),
}

impl Limiter {
    /// Redis (`AsyncRedisStorage`, no local cache: limitador-server's default for a Redis URL)
    /// or in memory. Redis is reached through redis-rs 0.27's `ConnectionManager` with its
    /// defaults, as limitador-server 2.4 does: a lost connection is retried at once, then after
    /// 1-2 s, then every 60-120 s (6 retries), and calls wait for it meanwhile; at start it
    /// waits the same way for Redis (minutes) before failing.
    pub async fn new(redis_url: Option<&str>) -> Result<Limiter, String> {
        Ok(match redis_url {
            Some(url) => {
                let storage = AsyncRedisStorage::new(url)
                    .await
                    .map_err(|e| format!("failed to connect to Redis at {url}: {e}"))?;
                let storage = AsyncStorage::with_counter_storage(Box::new(storage));
                Limiter::Async(AsyncRateLimiterBuilder::new(storage).build())
            }
            None => Limiter::Blocking(RateLimiterBuilder::new(IN_MEMORY_CACHE_SIZE).build()),
        })
    }

    /// Loads Limitador's limits file: a YAML list of limits (`namespace`, `max_value`,
    /// `seconds`, `name`, `conditions`, `variables`), as limitador-server reads it.
    pub async fn load_limits(&self, path: &Path) -> Result<usize, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("couldn't read file '{}': {e}", path.display()))?;
        let limits = parse_limits(&text)?;
        let n = limits.len();
        self.configure(limits).await?;
        Ok(n)
    }

    /// Replaces the limits (counters of limits that stay are kept).
    pub async fn configure(&self, limits: Vec<Limit>) -> Result<(), String> {
        match self {
            Limiter::Blocking(l) => l.configure_with(limits),
            Limiter::Async(l) => l.configure_with(limits).await,
        }
        .map_err(|e| format!("couldn't apply the limits: {e}"))
    }
}

/// Parses Limitador's limits YAML.
pub fn parse_limits(yaml: &str) -> Result<Vec<Limit>, String> {
    serde_yaml::from_str(yaml).map_err(|e| format!("couldn't parse: {e}"))
}

/// The request's descriptors bound as a list of maps named `descriptors`, so that a limit's
/// conditions read them as `descriptors[0]['key']` or `{'k': 'v'} in descriptors`.
pub fn context(descriptors: &[RateLimitDescriptor]) -> Context<'static> {
    let values: Vec<HashMap<String, String>> = descriptors
        .iter()
        .map(|d| {
            d.entries
                .iter()
                .map(|e| (e.key.clone(), e.value.clone()))
                .collect()
        })
        .collect();
    let mut ctx = Context::default();
    ctx.list_binding("descriptors".to_string(), values);
    ctx
}

/// "hits_addend" is optional and should default to 1; proto3 gives 0 when unset.
fn hits(hits_addend: u32) -> u64 {
    u64::from(hits_addend.max(1))
}

/// What limitador-server answers for every storage error: UNAVAILABLE, so that Envoy's
/// `failure_mode_deny` decides.
fn unavailable(e: impl std::fmt::Display) -> Status {
    eprintln!("ai-ratelimit-service: storage error: {e}");
    Status::unavailable("Service unavailable")
}

/// The Limitador-flavored service: both protocols over one limiter.
pub struct LimitadorService {
    limiter: Limiter,
    /// `--rate-limit-headers DRAFT_VERSION_03`: answer `X-RateLimit-*` headers in
    /// `ShouldRateLimit`'s `response_headers_to_add`, as the server's flag does.
    draft03_headers: bool,
}

impl LimitadorService {
    pub fn new(limiter: Limiter, draft03_headers: bool) -> Self {
        Self {
            limiter,
            draft03_headers,
        }
    }

    /// Envoy RLS v3 `ShouldRateLimit`: check and charge the request-level `hits_addend` (0
    /// counts as 1) on every limit that applies; over any limit charges nothing. No statuses.
    pub async fn should_rate_limit(
        &self,
        req: RateLimitRequest,
    ) -> Result<RateLimitResponse, Status> {
        if req.domain.is_empty() {
            return Ok(rls::bare_response(Code::Unknown));
        }
        let ns = Namespace::from(req.domain.as_str());
        let ctx = context(&req.descriptors);
        let delta = hits(req.hits_addend);
        let mut result = match &self.limiter {
            Limiter::Blocking(l) => l.check_rate_limited_and_update(&ns, &ctx, delta),
            Limiter::Async(l) => l.check_rate_limited_and_update(&ns, &ctx, delta).await,
        }
        .map_err(unavailable)?;
        let code = if result.limited {
            Code::OverLimit
        } else {
            Code::Ok
        };
        let mut response = rls::bare_response(code);
        if self.draft03_headers {
            let mut headers: Vec<_> = result
                .response_header()
                .into_iter()
                .map(
                    |(key, value)| envoy_types::pb::envoy::config::core::v3::HeaderValue {
                        key,
                        value,
                        ..Default::default()
                    },
                )
                .collect();
            headers.sort_by(|a, b| a.key.cmp(&b.key));
            response.response_headers_to_add = headers;
        }
        Ok(response)
    }
}

#[tonic::async_trait]
impl rls::RateLimitService for LimitadorService {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        LimitadorService::should_rate_limit(self, request.into_inner())
            .await
            .map(Response::new)
    }
}

#[tonic::async_trait]
impl KuadrantRls for LimitadorService {
    /// Is at least 1 left on every limit that applies? Charges nothing; no statuses.
    async fn check_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let req = request.into_inner();
        if req.domain.is_empty() {
            return Ok(Response::new(rls::bare_response(Code::Unknown)));
        }
        let ns = Namespace::from(req.domain.as_str());
        let ctx = context(&req.descriptors);
        let result = match &self.limiter {
            Limiter::Blocking(l) => l.is_rate_limited(&ns, &ctx, 1),
            Limiter::Async(l) => l.is_rate_limited(&ns, &ctx, 1).await,
        }
        .map_err(unavailable)?;
        let code = if result.limited {
            Code::OverLimit
        } else {
            Code::Ok
        };
        Ok(Response::new(rls::bare_response(code)))
    }

    /// Adds the request-level `hits_addend` (0 counts as 1) to every limit that applies,
    /// unconditionally. Always OK.
    async fn report(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let req = request.into_inner();
        if req.domain.is_empty() {
            return Ok(Response::new(rls::bare_response(Code::Unknown)));
        }
        let ns = Namespace::from(req.domain.as_str());
        let ctx = context(&req.descriptors);
        let delta = hits(req.hits_addend);
        match &self.limiter {
            Limiter::Blocking(l) => l.update_counters(&ns, &ctx, delta),
            Limiter::Async(l) => l.update_counters(&ns, &ctx, delta).await,
        }
        .map_err(unavailable)?;
        Ok(Response::new(rls::bare_response(Code::Ok)))
    }

    /// Holds `amount` on every limit that applies if it fits beside their value and the other
    /// live reservations (one Lua script on Redis: atomic); else OVER_LIMIT, nothing held.
    /// `ttl` is capped at 60 s (limitador's default `max_ttl`), 60 s when unset.
    async fn reserve(
        &self,
        request: Request<ReserveRequest>,
    ) -> Result<Response<ReserveResponse>, Status> {
        let req = request.into_inner();
        if req.domain.is_empty() {
            return Ok(Response::new(ReserveResponse {
                code: Code::Unknown.into(),
                reservation_id: String::new(),
            }));
        }
        let ns = Namespace::from(req.domain.as_str());
        let ctx = context(&req.descriptors);
        let ttl = req.ttl.and_then(|d| {
            let secs = u64::try_from(d.seconds).ok()?;
            let nanos = u32::try_from(d.nanos).ok()?;
            Some(Duration::new(secs, nanos))
        });
        let result = match &self.limiter {
            Limiter::Blocking(l) => l.reserve(&ns, &ctx, req.amount, ttl),
            Limiter::Async(l) => l.reserve(&ns, &ctx, req.amount, ttl).await,
        }
        .map_err(unavailable)?;
        let (code, reservation_id) = if result.limited {
            (Code::OverLimit, String::new())
        } else {
            let id = result.reservation_id.map(|id| id.to_string());
            (Code::Ok, id.unwrap_or_default())
        };
        Ok(Response::new(ReserveResponse {
            code: code.into(),
            reservation_id,
        }))
    }

    /// Adds `actual_amount` to every limit that applies, unconditionally, and releases the
    /// reservation's hold if it is still live (`reservation_released`).
    async fn commit(
        &self,
        request: Request<CommitRequest>,
    ) -> Result<Response<CommitResponse>, Status> {
        let req = request.into_inner();
        if req.domain.is_empty() {
            return Ok(Response::new(CommitResponse::default()));
        }
        let ns = Namespace::from(req.domain.as_str());
        let ctx = context(&req.descriptors);
        let id = (!req.reservation_id.is_empty()).then(|| ReservationId::from(req.reservation_id));
        let result = match &self.limiter {
            Limiter::Blocking(l) => l.commit_reservation(&ns, &ctx, id.as_ref(), req.actual_amount),
            Limiter::Async(l) => {
                l.commit_reservation(&ns, &ctx, id.as_ref(), req.actual_amount)
                    .await
            }
        }
        .map_err(unavailable)?;
        Ok(Response::new(CommitResponse {
            reservation_released: result.reservation_released,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rls::descriptor;

    const LIMITS: &str = r#"
- namespace: ai-proxy
  name: instance a
  max_value: 100
  seconds: 60
  conditions: ["{'instance': 'a'} in descriptors"]
  variables: []
- namespace: ai-proxy
  name: alice on a
  max_value: 30
  seconds: 60
  conditions: ["{'instance': 'a', 'consumer': 'alice'} in descriptors"]
  variables: []
"#;

    async fn service(limits: &str) -> LimitadorService {
        let limiter = Limiter::new(None).await.unwrap();
        limiter
            .configure(parse_limits(limits).unwrap())
            .await
            .unwrap();
        LimitadorService::new(limiter, true)
    }

    /// Remaining per limit name, for the limits that have a counter.
    fn remaining(svc: &LimitadorService) -> HashMap<String, u64> {
        let Limiter::Blocking(l) = &svc.limiter else {
            panic!("in-memory limiter expected")
        };
        l.get_counters(&Namespace::from("ai-proxy"))
            .unwrap()
            .into_iter()
            .map(|c| {
                (
                    c.limit().name().unwrap_or("").to_string(),
                    c.remaining().unwrap(),
                )
            })
            .collect()
    }

    fn request(descriptors: &[&[(&str, &str)]], hits: u32) -> Request<RateLimitRequest> {
        Request::new(RateLimitRequest {
            domain: "ai-proxy".into(),
            descriptors: descriptors.iter().map(|d| descriptor(d)).collect(),
            hits_addend: hits,
        })
    }

    const INSTANCE: &[(&str, &str)] = &[("instance", "a")];
    const ALICE: &[(&str, &str)] = &[("instance", "a"), ("consumer", "alice")];
    const BOB: &[(&str, &str)] = &[("instance", "a"), ("consumer", "bob")];

    #[tokio::test]
    async fn each_limit_is_charged_once_by_its_own_descriptor() {
        let svc = service(LIMITS).await;
        svc.report(request(&[INSTANCE, ALICE], 10)).await.unwrap();
        let r = remaining(&svc);
        assert_eq!((r["instance a"], r["alice on a"]), (100 - 10, 30 - 10));
        // The consumer descriptor alone does not touch the instance limit...
        svc.report(request(&[ALICE], 5)).await.unwrap();
        let r = remaining(&svc);
        assert_eq!((r["instance a"], r["alice on a"]), (100 - 10, 30 - 15));
        // ...and another consumer's request charges the instance, not alice.
        svc.report(request(&[INSTANCE, BOB], 7)).await.unwrap();
        let r = remaining(&svc);
        assert_eq!((r["instance a"], r["alice on a"]), (100 - 17, 30 - 15));
    }

    #[tokio::test]
    async fn looser_conditions_would_charge_the_instance_for_a_consumer_descriptor() {
        // Why the generated limits use `{...} in descriptors`: a condition on the `instance`
        // entry alone also matches a request whose only descriptor is a consumer's.
        let limits = LIMITS.replace(
            "{'instance': 'a'} in descriptors",
            "descriptors[0]['instance'] == 'a'",
        );
        let svc = service(&limits).await;
        svc.report(request(&[ALICE], 5)).await.unwrap();
        assert_eq!(remaining(&svc).get("instance a"), Some(&(100 - 5)));
    }

    #[tokio::test]
    async fn a_comprehension_condition_never_applies() {
        // limitador requires every variable a condition references to be bound, and counts
        // a comprehension's own variable (`d`) among them: `exists` never matches.
        let limits = LIMITS.replace(
            "{'instance': 'a'} in descriptors",
            "descriptors.exists(d, d.instance == 'a')",
        );
        let svc = service(&limits).await;
        svc.report(request(&[INSTANCE], 5)).await.unwrap();
        assert_eq!(remaining(&svc).get("instance a"), None);
    }

    #[tokio::test]
    async fn check_charges_nothing_and_report_charges_its_hits() {
        let svc = service(LIMITS).await;
        let code = |r: Response<RateLimitResponse>| r.into_inner().overall_code;
        for _ in 0..3 {
            assert_eq!(
                code(svc.check_rate_limit(request(&[ALICE], 10)).await.unwrap()),
                i32::from(Code::Ok)
            );
            svc.report(request(&[ALICE], 10)).await.unwrap();
        }
        let over = svc
            .check_rate_limit(request(&[ALICE], 10))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(over.overall_code, i32::from(Code::OverLimit));
        assert!(over.statuses.is_empty());
        svc.check_rate_limit(request(&[INSTANCE], 50))
            .await
            .unwrap();
        let left = remaining(&svc).get("instance a").copied();
        assert!(
            matches!(left, None | Some(100)),
            "a check charged: {left:?}"
        );
        svc.report(request(&[INSTANCE], 0)).await.unwrap(); // 0 counts as 1
        assert_eq!(remaining(&svc)["instance a"], 100 - 1);
    }

    #[tokio::test]
    async fn should_rate_limit_refuses_what_does_not_fit_and_charges_nothing_then() {
        let svc = service(LIMITS).await;
        let mut codes = Vec::new();
        for hits in [20, 20, 10] {
            let r = svc
                .should_rate_limit(request(&[ALICE], hits).into_inner())
                .await
                .unwrap();
            codes.push(r.overall_code);
        }
        let ok = i32::from(Code::Ok);
        assert_eq!(codes, vec![ok, i32::from(Code::OverLimit), ok]);
        let r = svc
            .should_rate_limit(request(&[ALICE], 0).into_inner())
            .await
            .unwrap();
        assert_eq!(r.overall_code, i32::from(Code::OverLimit));
        // DRAFT_VERSION_03 headers name the most restrictive limit's remaining count.
        let remaining = r
            .response_headers_to_add
            .iter()
            .find(|h| h.key == "X-RateLimit-Remaining");
        assert_eq!(remaining.map(|h| h.value.as_str()), Some("0"));
        assert_eq!(
            svc.should_rate_limit(request(&[INSTANCE], 1).into_inner())
                .await
                .unwrap()
                .overall_code,
            ok
        );
    }

    #[tokio::test]
    async fn an_empty_domain_is_unknown() {
        let svc = service(LIMITS).await;
        let mut req = request(&[ALICE], 1);
        req.get_mut().domain.clear();
        let r = svc.check_rate_limit(req).await.unwrap().into_inner();
        assert_eq!(r.overall_code, i32::from(Code::Unknown));
    }
}
