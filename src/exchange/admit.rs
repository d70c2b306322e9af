//! Admission of the first attempt: what the quotas say before picking, the pick, and, when
//! the quota backend must ask a service about the picked instance, waiting for its answer
//! (a spent instance is skipped or rejects; a service that cannot answer lets the request
//! through, or refuses it when configured to).

use super::account::CHARS_PER_TOKEN;
use super::pick::{pick, Availability};
use super::{Exchange, Phase, Plugin};
use crate::config::Config;
use crate::effect::{Effect, Host, Out};
use crate::error::ProxyError;
use crate::metrics::name;
use crate::protocol::{self, Request};
use crate::quota::{Check, Hold, SetId, Verdict};
use crate::ratelimit::Quota;
use crate::usage::Usage;

/// The members that bound a request's completion (chat, Anthropic, Responses).
const MAX_TOKENS: [&str; 3] = ["max_completion_tokens", "max_tokens", "max_output_tokens"];

/// The request's upper-bound usage (`rate_limiting.reserve`): the prompt from the body's
/// size, the completion from the largest bound the client or an instance's `options` set,
/// else `default_reserve`.
pub fn estimate(req: &Request<'_>, body_len: usize, config: &Config) -> Usage {
    let client = MAX_TOKENS
        .iter()
        .filter_map(|k| req.body.raw(k)?.parse::<u64>().ok());
    let options = config.instances.iter().flat_map(|i| {
        i.options
            .iter()
            .filter(|(k, _)| MAX_TOKENS.contains(&k.as_str()))
            .filter_map(|(_, v)| v.parse::<u64>().ok())
    });
    let completion = client
        .chain(options)
        .max()
        .unwrap_or(config.rate_limits.default_reserve);
    let prompt = u64::try_from(body_len)
        .unwrap_or(u64::MAX)
        .div_ceil(CHARS_PER_TOKEN);
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt.saturating_add(completion),
        ..Usage::default()
    }
}

impl Exchange {
    /// The whole body is buffered: read the quotas, then pick.
    pub(super) fn admit(&mut self, plugin: &Plugin, body: Vec<u8>, host: &dyn Host) -> Out {
        self.admission = plugin.admission(self.consumer.as_deref(), host);
        self.plan(plugin, body, false, host)
    }

    /// Picks the first attempt's instance and sends the request there, or first asks the
    /// quota service about it. `paused`: as for [`Exchange::sent_first`].
    fn plan(&mut self, plugin: &Plugin, body: Vec<u8>, paused: bool, host: &dyn Host) -> Out {
        let config = &plugin.config;
        if let Some(l) = &self.admission {
            self.shown = (0..config.instances.len())
                .map(|i| l.shown(config, i))
                .collect();
        }
        let unhealthy = plugin.unhealthy(host);
        let req = match protocol::read_request(&body, config, self.api) {
            Ok(r) => r,
            Err(e) => return self.refuse(plugin, &e),
        };
        let avail = Availability {
            tried: &[],
            limits: self.admission.as_ref(),
            unhealthy: &unhealthy,
        };
        let kind = req.client.kind;
        let index = match plugin.with_rr(|rr| pick(config, rr, self.hash, kind, &avail)) {
            Ok(i) => i,
            Err(e) => return self.refuse(plugin, &e),
        };
        if let Some(q) = plugin.quota.as_ref() {
            if config.rate_limits.reserve && self.estimate.is_none() {
                self.estimate = Some(estimate(&req, body.len(), config));
            }
            let ctx = plugin.quota_ctx(self.consumer.as_deref(), self.estimate);
            match q.check(&ctx, index, host) {
                // Known at once (shared-data counters): the body parsed above goes on.
                Check::Now(Verdict::Admit(shown, hold)) => {
                    self.admitted(plugin, index, shown, hold)
                }
                check => {
                    self.phase = Phase::Admitting {
                        index,
                        token: None,
                        body,
                    };
                    return match check {
                        Check::Ask(callout) => Out::hold(vec![Effect::Dispatch(callout)]),
                        Check::Now(verdict) => self.checked(plugin, verdict, paused, host),
                    };
                }
            }
        }
        match self.shape_first(plugin, &req, body.len(), index) {
            Ok(effects) => self.sent_first(plugin, body, index, effects, paused, host),
            Err(e) => self.refuse(plugin, &e),
        }
    }

    /// The filter refuses the request; a spent quota counts in the rejection metric.
    pub(super) fn refuse(&mut self, plugin: &Plugin, err: &ProxyError) -> Out {
        let mut effects = Vec::new();
        if matches!(err, ProxyError::RateLimited { .. }) {
            let spent = self.admission.as_ref();
            for (i, inst) in plugin.config.instances.iter().enumerate() {
                if spent.is_some_and(|l| l.exhausted(i)) {
                    let n = name::ratelimit_rejections(&inst.label);
                    effects.push(Effect::counter(n, 1));
                }
            }
        }
        let mut reply = self.reply(Some(plugin), err);
        effects.append(&mut reply.effects);
        reply.effects = effects;
        reply
    }

    /// What came of dispatching a quota check.
    #[inline(never)] // compiled on its own: see "Round 5" in docs/performance.md
    pub(super) fn check_dispatched(
        &mut self,
        plugin: &Plugin,
        result: Result<u32, String>,
        host: &dyn Host,
    ) -> Out {
        match (&mut self.phase, result) {
            (Phase::Admitting { token, .. }, Ok(t)) => {
                *token = Some(t);
                Out::hold(Vec::new())
            }
            (Phase::Admitting { .. }, Err(e)) => {
                let what = format!("cannot call it: {e}");
                let failed = plugin.quota.as_ref().map(|q| q.failure(&what, host));
                let out = self.checked(plugin, Verdict::Unknown, true, host);
                out.preceded_by(failed.unwrap_or_default())
            }
            _ => Out::go(Vec::new()),
        }
    }

    /// The quota service's answer about the picked instance.
    #[inline(never)] // compiled on its own: see "Round 5" in docs/performance.md
    pub(super) fn check_answer(
        &mut self,
        plugin: &Plugin,
        token: u32,
        status: u32,
        size: usize,
        host: &dyn Host,
    ) -> Out {
        let (
            Phase::Admitting {
                index,
                token: Some(expected),
                ..
            },
            Some(q),
        ) = (&self.phase, plugin.quota.as_ref())
        else {
            return Out::go(Vec::new());
        };
        if token != *expected {
            return Out::go(Vec::new());
        }
        let ctx = plugin.quota_ctx(self.consumer.as_deref(), self.estimate);
        let verdict = q.answer(&ctx, *index, status, &host.grpc_answer(size), host);
        let failed = (verdict == Verdict::Unknown).then(|| {
            let what = match status {
                0 => "its answer could not be read".to_string(),
                s => format!("the check failed with gRPC status {s}"),
            };
            q.failure(&what, host)
        });
        let out = self.checked(plugin, verdict, true, host);
        out.preceded_by(failed.unwrap_or_default())
    }

    /// Instance `index` may take the request: what was learned of its quota, and held.
    fn admitted(
        &mut self,
        plugin: &Plugin,
        index: usize,
        shown: Option<(Quota, SetId)>,
        hold: Option<Hold>,
    ) {
        if let (Some((quota, set)), Some(l)) = (shown, self.admission.as_mut()) {
            l.learn(index, quota, set);
            if let Some(slot) = self.shown.get_mut(index) {
                *slot = l.shown(&plugin.config, index);
            }
        }
        self.hold = hold;
    }

    /// What is known of the picked instance decides. `paused`: the request waits since an
    /// earlier callback (a service was asked) and must be resumed explicitly.
    fn checked(&mut self, plugin: &Plugin, verdict: Verdict, paused: bool, host: &dyn Host) -> Out {
        let Phase::Admitting { index, body, .. } =
            std::mem::replace(&mut self.phase, Phase::AwaitingBody)
        else {
            return Out::go(Vec::new());
        };
        let deny = plugin.quota.as_ref().is_some_and(|q| q.deny_on_failure());
        match verdict {
            Verdict::Admit(shown, hold) => {
                self.admitted(plugin, index, shown, hold);
                self.send_first(plugin, body, index, paused, host)
            }
            Verdict::Exhausted(quota, set) => {
                if let Some(l) = self.admission.as_mut() {
                    l.learn(index, quota, set);
                }
                self.plan(plugin, body, paused, host)
            }
            Verdict::Unknown if deny => self.refuse(plugin, &ProxyError::QuotaUnavailable),
            Verdict::Unknown => self.send_first(plugin, body, index, paused, host),
        }
    }
}
