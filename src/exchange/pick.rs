//! Picking the instance for an attempt: among those not tried that offer the request's API,
//! skipping unhealthy ones (unless all are) and, with rate-limit fallback, those whose quota
//! is spent; without it, a spent quota rejects the request.

use crate::balancer::RoundRobin;
use crate::config::Config;
use crate::error::ProxyError;
use crate::provider::ApiKind;
use crate::quota::Admission;

/// What keeps instances from being picked for this attempt.
#[derive(Debug, Clone, Copy, Default)]
pub struct Availability<'a> {
    /// Instances already tried for this request.
    pub tried: &'a [bool],
    /// The token limits, when configured.
    pub limits: Option<&'a Admission>,
    /// Instances the health checks have taken out.
    pub unhealthy: &'a [bool],
}

/// Picks the instance for the next attempt. `hash` is the request's key hash (consistent
/// hashing only).
pub fn pick(
    config: &Config,
    rr: &mut RoundRobin,
    hash: u64,
    kind: ApiKind,
    avail: &Availability<'_>,
) -> Result<usize, ProxyError> {
    let offers = |i: usize| {
        config.instances.get(i).is_some_and(|inst| {
            let api = crate::protocol::upstream_api(kind, inst.provider.wire());
            inst.target.path(api).is_some()
        })
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
        Some(i) if exhausted(i) => {
            Err(limits.map_or(ProxyError::NoInstanceAvailable, |l| l.rejection(config, i)))
        }
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
                (Some(i), Some(l)) => Err(l.rejection(config, i)),
                _ => Err(ProxyError::NoInstanceAvailable),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::quota::{local, Backend, Ctx};
    use crate::ratelimit;
    use crate::testing::FakeHost;

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
        let ds = config::parse(br#"{"provider":"deepseek"}"#).unwrap();
        assert_eq!(
            pick(
                &ds,
                &mut rr,
                0,
                ApiKind::Embeddings,
                &Availability::default()
            )
            .unwrap_err()
            .code(),
            "unsupported_request_kind"
        );
    }

    fn limited(fallback: bool) -> Config {
        let mut cfg = serde_json::json!({
            "instances": [
                {"name": "a", "provider": "openai", "priority": 1},
                {"name": "b", "provider": "openai"}
            ],
            "rate_limiting": {"instances": [{"name": "a", "limit": 10, "time_window": 60}],
                              "rejected_msg": "over quota"}
        });
        if fallback {
            cfg["fallback_strategy"] = "instance_health_and_rate_limiting".into();
        }
        config::parse(cfg.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn quotas_steer_picking() {
        let host = FakeHost::at_ms(1_000_000_000);
        let now = 1_000_000;
        fn admit(c: &Config, host: &FakeHost) -> Admission {
            let q = Ctx {
                config: c,
                scope: "s",
                consumer: None,
                estimate: None,
            };
            local::Local::new(c, "s").admission(&q, host)
        }
        let pick_with = |c: &Config, adm: &Admission, tried: &[bool]| {
            let avail = Availability {
                tried,
                limits: Some(adm),
                ..Default::default()
            };
            pick(c, &mut RoundRobin::default(), 0, ApiKind::Chat, &avail)
        };
        for fallback in [true, false] {
            let c = limited(fallback);
            assert_eq!(pick_with(&c, &admit(&c, &host), &[]), Ok(0));
        }
        // Spend a's quota.
        let key = local::set_key("s", None);
        let a = local::At { key: &key, slot: 0 };
        local::charge(&host.store, a, now, 60, 31).unwrap();

        let c = limited(true);
        let adm = admit(&c, &host);
        assert!(adm.exhausted(0));
        assert_eq!(pick_with(&c, &adm, &[]), Ok(1));
        // b tried and failed: nothing left but a spent quota.
        match pick_with(&c, &adm, &[false, true]) {
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
        assert!(matches!(
            pick_with(&c, &admit(&c, &host), &[]),
            Err(ProxyError::RateLimited { status: 429, .. })
        ));
    }

    #[test]
    fn unhealthy_instances_are_skipped_unless_all_are() {
        let c = config::parse(
            br#"{"instances":[
                {"name":"a","provider":"openai","priority":1},
                {"name":"b","provider":"openai"}]}"#,
        )
        .unwrap();
        let mut rr = RoundRobin::default();
        let mut pick_with = |unhealthy: &[bool]| {
            let avail = Availability {
                unhealthy,
                ..Default::default()
            };
            pick(&c, &mut rr, 0, ApiKind::Chat, &avail)
        };
        assert_eq!(pick_with(&[false, false]), Ok(0));
        assert_eq!(pick_with(&[true, false]), Ok(1));
        // All unhealthy: all are used, in their usual order.
        assert_eq!(pick_with(&[true, true]), Ok(0));
    }
}
