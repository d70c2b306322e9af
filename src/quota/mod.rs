//! The quota seam: which token limits apply to a request, what is known of them at
//! admission, what is held for it (reservations), and charging an answer's real usage when
//! it ends. A backend keeps the counters: Envoy's shared data (`local`, one Envoy) or a
//! rate limit service (`remote`, many Envoys); adding one is one new file plus one arm in
//! [`backend`].

pub mod local;
pub mod proto;
pub mod remote;

use std::cell::Cell;

use crate::config::{Config, LimitSet};
use crate::effect::{Callout, Effect, Host};
use crate::error::ProxyError;
use crate::metrics::name;
use crate::ratelimit::Quota;
use crate::usage::Usage;

/// Who a request's limits are counted for.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    pub config: &'a Config,
    /// Names this configuration's counters.
    pub scope: &'a str,
    pub consumer: Option<&'a str>,
    /// The request's upper-bound usage, when the configuration reserves
    /// (`rate_limiting.reserve`); each limit takes its strategy's share of it.
    pub estimate: Option<Usage>,
}

/// Which limit set: the route's, or a consumer's (its index in `rate_limits.consumers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetId {
    Route,
    Consumer(usize),
}

impl SetId {
    pub fn of(self, config: &Config) -> Option<&LimitSet> {
        match self {
            SetId::Route => config.rate_limits.route.as_ref(),
            SetId::Consumer(i) => config.rate_limits.consumers.get(i).map(|(_, s)| s),
        }
    }
}

/// The limits of one request, known at admission: per instance, the binding quota and the
/// limit set it comes from (`None`: no limit applies, or nothing is known yet).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admission {
    pub per_instance: Vec<Option<(Quota, SetId)>>,
}

impl Admission {
    pub fn exhausted(&self, index: usize) -> bool {
        matches!(self.per_instance.get(index), Some(Some((q, _))) if q.exhausted())
    }

    /// Records what was learned of an instance's quota (a remote check's answer).
    pub fn learn(&mut self, index: usize, quota: Quota, set: SetId) {
        if self.per_instance.len() <= index {
            self.per_instance.resize(index.saturating_add(1), None);
        }
        if let Some(slot) = self.per_instance.get_mut(index) {
            *slot = Some((quota, set));
        }
    }

    /// The quota to show for an instance, when its limit set shows headers.
    pub fn shown(&self, config: &Config, index: usize) -> Option<Quota> {
        match self.per_instance.get(index) {
            Some(Some((q, set))) if set.of(config).is_some_and(|s| s.show_headers) => Some(*q),
            _ => None,
        }
    }

    /// The rejection for an instance whose quota is spent: its limit's status and message.
    pub fn rejection(&self, config: &Config, index: usize) -> ProxyError {
        let (status, message, retry_after) = match self.per_instance.get(index) {
            Some(Some((q, id))) => {
                let set = id.of(config);
                (
                    set.map_or(429, |s| s.rejected_code),
                    set.and_then(|s| s.rejected_msg.clone()),
                    q.reset_secs,
                )
            }
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

/// Whether the picked instance may take the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Known now.
    Now(Verdict),
    /// Ask a service first; its answer goes to [`Backend::answer`].
    Ask(Callout),
}

/// What was held for a request at admission: released, or settled to the real usage, when
/// the request ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// The instance it was held on.
    pub index: usize,
    pub held: Held,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    /// Tokens already counted, per limit that applies (in [`applicable_sets`] order, `None`
    /// where the set has no limit for the instance), with the window they went to.
    Counted(Vec<Option<(u64, u64)>>),
    /// A reservation the service keeps until it is committed or expires.
    Reservation(String),
}

/// What is known of the picked instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Admitted; the quota to show when one is known, and what was held.
    Admit(Option<(Quota, SetId)>, Option<Hold>),
    /// Its quota is spent.
    Exhausted(Quota, SetId),
    /// The service could not say (refused, timed out, failed): the configured failure
    /// mode decides.
    Unknown,
}

/// A place where token counters live.
pub trait Backend {
    /// What is known now of every instance's quota for this request.
    fn admission(&self, q: &Ctx<'_>, host: &dyn Host) -> Admission;

    /// Whether instance `index`, picked with what `admission` knew, may take the request.
    fn check(&self, _q: &Ctx<'_>, _index: usize, _host: &dyn Host) -> Check {
        Check::Now(Verdict::Admit(None, None))
    }

    /// The answer to a check's callout (gRPC status and message).
    fn answer(
        &self,
        _q: &Ctx<'_>,
        _index: usize,
        _status: u32,
        _message: &[u8],
        _host: &dyn Host,
    ) -> Verdict {
        Verdict::Unknown
    }

    /// Whether a request is refused when the service could not answer.
    fn deny_on_failure(&self) -> bool {
        false
    }

    /// The answer of instance `index` ended: charge its usage to every limit that applies,
    /// settling what `hold` kept for the request.
    fn settle(
        &self,
        q: &Ctx<'_>,
        index: usize,
        usage: &Usage,
        hold: Option<&Hold>,
        host: &dyn Host,
    ) -> Vec<Effect>;

    /// The request ended without an answer to charge: give back what was held.
    fn release(&self, _q: &Ctx<'_>, _hold: &Hold, _host: &dyn Host) -> Vec<Effect> {
        Vec::new()
    }

    /// The service could not be asked or did not answer (`what` says how): the effects
    /// that count it.
    fn failure(&self, _what: &str, _host: &dyn Host) -> Vec<Effect> {
        Vec::new()
    }

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
    Some(match &config.rate_limits.service {
        Some(service) => Box::new(remote::Remote::new(
            service.clone(),
            config.rate_limits.reserve,
        )),
        None => Box::new(local::Local::new(config, scope)),
    })
}

/// A failure to reach the rate limit service: one count in the failure metric, and a log
/// line, at most one per [`QUIET_MS`] per VM (saying how many were kept quiet).
pub fn service_failure(quiet: &Cell<(u64, u64)>, what: &str, now_ms: u64) -> Effect {
    let (last, kept) = quiet.get();
    if last == 0 || now_ms.saturating_sub(last) >= QUIET_MS {
        let more = if kept > 0 {
            format!(" ({kept} more since the last line)")
        } else {
            String::new()
        };
        log::warn!("envoy-ai-proxy: rate limit service: {what}{more}");
        quiet.set((now_ms.max(1), 0));
    } else {
        quiet.set((last, kept.saturating_add(1)));
    }
    Effect::counter(name::rate_limit_service_failures(), 1)
}

/// The quiet time between two log lines about the rate limit service.
pub const QUIET_MS: u64 = 10_000;

/// The limit sets that apply to a request: the route's, then its consumer's (with the
/// consumer's name, which keys its counters).
pub fn applicable_sets<'c, 'a>(
    config: &'c Config,
    consumer: Option<&'a str>,
) -> impl Iterator<Item = (Option<&'a str>, SetId, &'c LimitSet)> {
    let consumer_set = consumer.and_then(|c| {
        let list = &config.rate_limits.consumers;
        let i = list.iter().position(|(n, _)| n == c)?;
        list.get(i).map(|(_, s)| (Some(c), SetId::Consumer(i), s))
    });
    config
        .rate_limits
        .route
        .iter()
        .map(|s| (None, SetId::Route, s))
        .chain(consumer_set)
}

/// `X-AI-RateLimit-{Limit,Remaining,Reset}-<instance>`: the names (made once per instance,
/// `Instance::quota_header_names`).
pub fn quota_header_names(instance: &str) -> [String; 3] {
    use crate::text::join;
    [
        join(&["x-ai-ratelimit-limit-", instance]),
        join(&["x-ai-ratelimit-remaining-", instance]),
        join(&["x-ai-ratelimit-reset-", instance]),
    ]
}

/// An instance's quota headers: its names (`Instance::quota_header_names`) and the values.
pub fn quota_headers(names: &[String; 3], q: &Quota) -> [(String, String); 3] {
    use crate::text::num;
    let [limit, remaining, reset] = names;
    [
        (limit.clone(), num(q.limit)),
        (remaining.clone(), num(q.remaining)),
        (reset.clone(), num(q.reset_secs)),
    ]
}
