//! `--flavor envoy-ratelimit`: `ShouldRateLimit` with envoyproxy/ratelimit's semantics
//! (`src/service/ratelimit.go`, `src/limiter/base_limiter.go`, `src/utils/utilities.go`):
//! each descriptor's hits are its own `hits_addend` when set (0 allowed: check only), else the
//! request's, where 0 counts as 1; the hits are ALWAYS counted; a descriptor is OVER_LIMIT
//! when its count after the hits exceeds `requests_per_unit`; every descriptor gets a status
//! (`current_limit`, `limit_remaining`, `duration_until_reset`); the overall code is
//! OVER_LIMIT when any descriptor is. Windows are fixed and aligned to the epoch
//! (`now / unit * unit`), keys are `<domain>_<key>_<value>_..._<window start>`.

use std::time::{SystemTime, UNIX_EPOCH};

use tonic::{Request, Response, Status};

use crate::envoy_config::{unit_seconds, ConfiguredLimit, RateLimitConfig};
use crate::envoy_store::{Increment, Store};
use crate::rls::{
    self, Code, DescriptorStatus, RateLimit, RateLimitDescriptor, RateLimitRequest,
    RateLimitResponse,
};

pub struct EnvoyRatelimitService {
    config: RateLimitConfig,
    store: Store,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The descriptor's hits (upstream's `GetHitsAddends`).
pub fn hits_of(request_hits: u32, descriptor: &RateLimitDescriptor) -> u64 {
    match &descriptor.hits_addend {
        Some(v) => v.value,
        None => u64::from(request_hits.max(1)),
    }
}

/// The cache key of a limited descriptor in the window that holds `now`.
pub fn cache_key(
    domain: &str,
    descriptor: &RateLimitDescriptor,
    window_secs: u64,
    now: u64,
) -> String {
    let mut key = format!("{domain}_");
    for e in &descriptor.entries {
        key.push_str(&e.key);
        key.push('_');
        key.push_str(&e.value);
        key.push('_');
    }
    key.push_str(&(now / window_secs * window_secs).to_string());
    key
}

/// The status of a limited descriptor whose count is `after` once its hits are added.
pub fn status_of(
    limit: &ConfiguredLimit,
    after: u64,
    window_secs: u64,
    now: u64,
) -> DescriptorStatus {
    let max = u64::from(limit.requests_per_unit);
    let (code, remaining) = if after > max {
        (Code::OverLimit, 0)
    } else {
        (Code::Ok, u32::try_from(max - after).unwrap_or(u32::MAX))
    };
    DescriptorStatus {
        code: code.into(),
        current_limit: Some(RateLimit {
            name: limit.name.clone(),
            requests_per_unit: limit.requests_per_unit,
            unit: limit.unit.into(),
        }),
        limit_remaining: remaining,
        duration_until_reset: Some(rls::Duration {
            seconds: i64::try_from(window_secs - now % window_secs).unwrap_or(i64::MAX),
            nanos: 0,
        }),
        quota: None,
    }
}

impl EnvoyRatelimitService {
    pub fn new(config: RateLimitConfig, store: Store) -> Self {
        Self { config, store }
    }

    pub async fn should_rate_limit(
        &self,
        req: RateLimitRequest,
    ) -> Result<RateLimitResponse, Status> {
        // Upstream panics with a serviceError, which grpc-go answers as UNKNOWN.
        if req.domain.is_empty() {
            return Err(Status::unknown("rate limit domain must not be empty"));
        }
        if req.descriptors.is_empty() {
            return Err(Status::unknown(
                "rate limit descriptor list must not be empty",
            ));
        }
        let now = now_secs();
        // Per descriptor: (limit, window) when it is counted; unlimited and unmatched are not.
        let mut counted = Vec::with_capacity(req.descriptors.len());
        let mut increments = Vec::new();
        let mut statuses = Vec::with_capacity(req.descriptors.len());
        for d in &req.descriptors {
            let limit = self.config.get_limit(&req.domain, d);
            let status = match &limit {
                None => DescriptorStatus {
                    code: Code::Ok.into(),
                    ..Default::default()
                },
                Some(l) if l.unlimited => DescriptorStatus {
                    code: Code::Ok.into(),
                    limit_remaining: u32::MAX,
                    ..Default::default()
                },
                Some(l) => {
                    let window = unit_seconds(l.unit)
                        .ok_or_else(|| Status::unknown("limit without a unit"))?;
                    increments.push(Increment {
                        key: cache_key(&req.domain, d, window, now),
                        hits: hits_of(req.hits_addend, d),
                        expire_secs: window,
                    });
                    counted.push((statuses.len(), l.clone(), window));
                    DescriptorStatus::default()
                }
            };
            statuses.push(status);
        }
        // A Redis error is a RedisError panic upstream, also answered as UNKNOWN.
        let counts = self.store.increment(&increments).await.map_err(|e| {
            eprintln!("ai-ratelimit-service: {e}");
            Status::unknown(e)
        })?;
        for ((i, limit, window), after) in counted.into_iter().zip(counts) {
            statuses[i] = status_of(&limit, after, window, now);
        }
        let over = statuses
            .iter()
            .any(|s| s.code == i32::from(Code::OverLimit));
        Ok(RateLimitResponse {
            overall_code: if over { Code::OverLimit } else { Code::Ok }.into(),
            statuses,
            ..Default::default()
        })
    }
}

#[tonic::async_trait]
impl rls::RateLimitService for EnvoyRatelimitService {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        EnvoyRatelimitService::should_rate_limit(self, request.into_inner())
            .await
            .map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rls::{descriptor, UInt64Value, Unit};

    fn limit(rpu: u32) -> ConfiguredLimit {
        ConfiguredLimit {
            requests_per_unit: rpu,
            unit: Unit::Minute,
            unlimited: false,
            name: String::new(),
        }
    }

    #[test]
    fn hits_follow_the_descriptor_then_the_request_with_zero_as_one() {
        let mut d = descriptor(&[("instance", "a")]);
        assert_eq!(hits_of(0, &d), 1);
        assert_eq!(hits_of(7, &d), 7);
        d.hits_addend = Some(UInt64Value { value: 0 });
        assert_eq!(hits_of(7, &d), 0);
    }

    #[test]
    fn keys_name_the_entries_and_the_window_start() {
        let d = descriptor(&[("instance", "a"), ("consumer", "x")]);
        let now = 1_000_000_123;
        let key = cache_key("ai-proxy", &d, 60, now);
        assert_eq!(
            key,
            format!("ai-proxy_instance_a_consumer_x_{}", now - now % 60)
        );
        assert_ne!(key, cache_key("ai-proxy", &d, 60, now + 60));
    }

    #[test]
    fn over_limit_only_past_the_limit_and_reset_counts_down() {
        let now = 6_000 + 15;
        let at = status_of(&limit(30), 30, 60, now);
        assert_eq!(at.code, i32::from(Code::Ok));
        assert_eq!(at.limit_remaining, 0);
        assert_eq!(at.duration_until_reset.map(|d| d.seconds), Some(60 - 15));
        let under = status_of(&limit(30), 21, 60, now);
        assert_eq!(
            (under.code, under.limit_remaining),
            (i32::from(Code::Ok), 30 - 21)
        );
        let past = status_of(&limit(30), 31, 60, now);
        assert_eq!(
            (past.code, past.limit_remaining),
            (i32::from(Code::OverLimit), 0)
        );
        assert_eq!(past.current_limit.map(|l| l.requests_per_unit), Some(30));
    }
}
