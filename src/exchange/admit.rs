//! Admission of the first attempt: what the quotas say before picking, the pick, and, when
//! the quota backend must ask a service about the picked instance, waiting for its answer
//! (a spent instance is skipped or rejects; a service that cannot answer lets the request
//! through, or refuses it when configured to).

use super::pick::{pick, Availability};
use super::{Exchange, Phase, Plugin};
use crate::effect::{Effect, Host, Out};
use crate::error::ProxyError;
use crate::metrics::{self, name};
use crate::protocol;
use crate::quota::{Check, Verdict};

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
            let ctx = plugin.quota_ctx(self.consumer.as_deref());
            if let Check::Ask(callout) = q.check(&ctx, index, host) {
                self.phase = Phase::Admitting {
                    index,
                    token: None,
                    body,
                };
                return Out::hold(vec![Effect::Dispatch(callout)]);
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
                    let n = name::ratelimit_rejections(&metrics::label(&inst.name));
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
                log::warn!("envoy-ai-proxy: cannot call the rate limit service: {e}");
                self.checked(plugin, Verdict::Unknown, host)
            }
            _ => Out::go(Vec::new()),
        }
    }

    /// The quota service's answer about the picked instance.
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
        let ctx = plugin.quota_ctx(self.consumer.as_deref());
        let verdict = q.answer(&ctx, *index, status, &host.grpc_answer(size));
        self.checked(plugin, verdict, host)
    }

    fn checked(&mut self, plugin: &Plugin, verdict: Verdict, host: &dyn Host) -> Out {
        let Phase::Admitting { index, body, .. } =
            std::mem::replace(&mut self.phase, Phase::AwaitingBody)
        else {
            return Out::go(Vec::new());
        };
        let deny = plugin.quota.as_ref().is_some_and(|q| q.deny_on_failure());
        match verdict {
            Verdict::Admit(shown) => {
                if let (Some((quota, set)), Some(l)) = (shown, self.admission.as_mut()) {
                    l.learn(index, quota, set);
                    if let Some(slot) = self.shown.get_mut(index) {
                        *slot = l.shown(&plugin.config, index);
                    }
                }
                self.send_first(plugin, body, index, host)
            }
            Verdict::Exhausted(quota, set) => {
                if let Some(l) = self.admission.as_mut() {
                    l.learn(index, quota, set);
                }
                self.plan(plugin, body, true, host)
            }
            Verdict::Unknown if deny => self.refuse(plugin, &ProxyError::QuotaUnavailable),
            Verdict::Unknown => self.send_first(plugin, body, index, host),
        }
    }
}
