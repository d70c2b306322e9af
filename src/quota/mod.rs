//! The quota seam: which token limits apply to a request, what is known of them at
//! admission, and charging an answer's real usage when it ends. A backend keeps the
//! counters (Envoy's shared data today); adding one is one new file plus one arm in
//! [`backend`].

pub mod local;

use crate::config::{Config, LimitSet};
use crate::effect::{Effect, Host};
use crate::error::ProxyError;
use crate::ratelimit::Quota;
use crate::usage::Usage;

/// Who a request's limits are counted for.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'c, 'a> {
    pub config: &'c Config,
    /// Names this configuration's counters.
    pub scope: &'a str,
    pub consumer: Option<&'a str>,
}

/// The limits of one request, known at admission: per instance, the binding quota and the
/// settings of the limit it comes from (`None`: no limit applies).
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

    /// The rejection for an instance whose quota is spent: its limit's status and message.
    pub fn rejection(&self, config: &Config, index: usize) -> ProxyError {
        let (status, message, retry_after) = match self.per_instance.get(index) {
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
}

/// A place where token counters live.
pub trait Backend {
    /// What is known now of every instance's quota for this request.
    fn admission<'c>(&self, q: &Ctx<'c, '_>, host: &dyn Host) -> Admission<'c>;

    /// The answer of instance `index` ended: charge its usage to every limit that applies.
    fn settle(&self, q: &Ctx<'_, '_>, index: usize, usage: &Usage, host: &dyn Host) -> Vec<Effect>;

    /// Configure time: create what the counters need.
    fn start(&self, host: &dyn Host);

    /// Every tick: the counters as gauges.
    fn gauges(&self, config: &Config, host: &dyn Host) -> Vec<Effect>;
}

/// The backend a configuration uses (`None`: no limits at all).
pub fn backend(config: &Config, scope: &str) -> Option<Box<dyn Backend>> {
    if !config.rate_limits.any() {
        return None;
    }
    Some(Box::new(local::Local::new(config, scope)))
}

/// The limit sets that apply to a request: the route's, then its consumer's (with the
/// consumer's name, which keys its counters).
pub fn applicable_sets<'c, 'a>(
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
