//! Token counters in a rate limit service, so that many Envoys share one budget: a check
//! (gRPC) for the picked instance while the request waits, a fire-and-forget charge of the
//! real usage when the answer ends, and a per-Envoy note of instances known spent until
//! their reset (skipped without a call). Protocols: Limitador's `CheckRateLimit` / `Report`
//! (admit while at least 1 token is left; `Reserve` / `Commit` to reserve), or Envoy RLS v3
//! `ShouldRateLimit` (admit with a hit of 1, or of the estimate, and charge the rest).
//! Descriptors: `instance=<name>` for the route's limits, `instance=<name>,
//! consumer=<consumer>` for a consumer's.

use std::cell::Cell;

use super::proto::{self, Code, Descriptor};
use super::Verdict;
use super::{applicable_sets, service_failure, Admission, Backend, Check, Ctx, Held, Hold, SetId};
use crate::config::{Config, RlsProtocol, Service};
use crate::effect::{Callout, Effect, Grpc, Host, Purpose};
use crate::ratelimit::{self, Limit, Quota, Strategy};
use crate::store;
use crate::usage::Usage;

const KUADRANT: &str = "kuadrant.service.ratelimit.v1.RateLimitService";
const ENVOY: &str = "envoy.service.ratelimit.v3.RateLimitService";

/// How long an instance the service said is spent is skipped when the service gives no
/// reset time (Limitador's `CheckRateLimit` gives none), at most.
pub const SPENT_NOTE_SECS: u64 = 1;

/// The longest a reservation is held by the service (Limitador caps it at 60 s).
const MAX_RESERVATION_SECS: u64 = 60;

pub struct Remote {
    service: Service,
    reserve: bool,
    /// The last failure log line (ms) and the failures kept quiet since.
    quiet: Cell<(u64, u64)>,
}

/// One limit that applies to a request on an instance.
struct Applied {
    set: SetId,
    limit: Limit,
    strategy: Strategy,
    descriptor: Descriptor,
    /// Shared-data key of the per-Envoy "spent until" note.
    note: String,
}

fn applied(q: &Ctx<'_>, index: usize) -> Vec<Applied> {
    let Some(inst) = q.config.instances.get(index) else {
        return Vec::new();
    };
    applicable_sets(q.config, q.consumer)
        .filter_map(|(who, set_id, set)| {
            let limit = set.per_instance.get(index).copied().flatten()?;
            let mut entries = vec![("instance".to_string(), inst.name.clone())];
            if let Some(c) = who {
                entries.push(("consumer".to_string(), c.to_string()));
            }
            Some(Applied {
                set: set_id,
                limit,
                strategy: set.strategy,
                descriptor: Descriptor {
                    entries,
                    hits: None,
                },
                note: format!(
                    "aiproxy.rlx.{}.{}.{}",
                    q.scope,
                    inst.name,
                    who.unwrap_or("*")
                ),
            })
        })
        .collect()
}

fn now_secs(host: &dyn Host) -> u64 {
    host.now_ns() / 1_000_000_000
}

impl Remote {
    pub fn new(service: Service, reserve: bool) -> Remote {
        Remote {
            service,
            reserve,
            quiet: Cell::new((0, 0)),
        }
    }

    fn call(&self, purpose: Purpose, service: &str, method: &str, body: Vec<u8>) -> Callout {
        Callout {
            purpose,
            cluster: self.service.cluster.clone(),
            headers: Vec::new(),
            body: Some(body),
            timeout_ms: self.service.timeout_ms,
            grpc: Some(Grpc {
                service: service.to_string(),
                method: method.to_string(),
            }),
        }
    }

    fn descriptors(
        applied: &[Applied],
        mut hits: impl FnMut(&Applied) -> Option<u64>,
    ) -> Vec<Descriptor> {
        applied
            .iter()
            .map(|a| Descriptor {
                entries: a.descriptor.entries.clone(),
                hits: hits(a),
            })
            .collect()
    }

    /// Notes that `a` is spent for `secs` (this Envoy skips it without asking meanwhile).
    fn note_spent(a: &Applied, until: u64, host: &dyn Host) {
        if let Err(e) = store::update(host.store(), &a.note, |_| {
            Some((until.to_string().into_bytes(), ()))
        }) {
            log::debug!("envoy-ai-proxy: cannot note {} as spent: {e}", a.note);
        }
    }

    /// The verdict on an over-limit answer: the limit that is spent (the first over-limit
    /// status, else the first limit), noted until its reset unless only a reservation did
    /// not fit (`note`: false; a smaller request may still fit).
    fn spent(
        applied: &[Applied],
        statuses: &[proto::Status],
        note: bool,
        host: &dyn Host,
    ) -> Verdict {
        let over = statuses.iter().position(|s| s.code == Code::OverLimit);
        let Some(a) = applied.get(over.unwrap_or(0)) else {
            return Verdict::Unknown;
        };
        let reset = over
            .and_then(|i| statuses.get(i))
            .and_then(|s| s.reset_secs)
            .unwrap_or_else(|| SPENT_NOTE_SECS.min(a.limit.window_secs));
        if note {
            Self::note_spent(a, now_secs(host).saturating_add(reset.max(1)), host);
        }
        let quota = Quota {
            limit: a.limit.limit,
            remaining: 0,
            reset_secs: reset.max(1),
        };
        Verdict::Exhausted(quota, a.set)
    }

    /// The quota to show from RLS statuses (one per descriptor, in order): the binding one,
    /// as it was before this request's `hits`.
    fn shown(
        applied: &[Applied],
        statuses: &[proto::Status],
        hits: &[u64],
    ) -> Option<(Quota, SetId)> {
        let quotas = applied
            .iter()
            .zip(statuses)
            .zip(hits)
            .filter_map(|((a, s), h)| {
                let limit = s.limit?;
                let quota = Quota {
                    limit,
                    remaining: s.remaining.saturating_add(*h).min(limit),
                    reset_secs: s.reset_secs.unwrap_or(a.limit.window_secs),
                };
                Some((quota, a.set))
            });
        ratelimit::binding(quotas)
    }

    /// The settlement calls: `extra` tokens per applied limit (0: nothing to charge).
    fn charges(&self, applied: &[Applied], extra: &[u64], hold: Option<&str>) -> Vec<Effect> {
        let domain = &self.service.domain;
        let mut out = Vec::new();
        match self.service.protocol {
            RlsProtocol::Envoy => {
                // Per-descriptor hits: one call charges each limit its own share.
                let charged: Vec<(&Applied, u64)> = applied
                    .iter()
                    .zip(extra)
                    .filter(|(_, n)| **n > 0)
                    .map(|(a, n)| (a, *n))
                    .collect();
                let Some(max) = charged.iter().map(|(_, n)| *n).max() else {
                    return out;
                };
                let descriptors: Vec<Descriptor> = charged
                    .iter()
                    .map(|(a, n)| Descriptor {
                        entries: a.descriptor.entries.clone(),
                        hits: Some(*n),
                    })
                    .collect();
                let body = proto::rate_limit_request(domain, &descriptors, max);
                out.push(Effect::Dispatch(self.call(
                    Purpose::Settle,
                    ENVOY,
                    "ShouldRateLimit",
                    body,
                )));
            }
            RlsProtocol::Limitador => {
                // Report and Commit take one amount for all their descriptors: one call per
                // distinct amount.
                // A reservation is committed even at 0: that releases what it holds.
                let mut amounts: Vec<u64> = extra
                    .iter()
                    .copied()
                    .filter(|n| *n > 0 || hold.is_some())
                    .collect();
                crate::sort::sort_small(&mut amounts, |a, b| a < b);
                amounts.dedup();
                for n in amounts {
                    let group: Vec<Descriptor> = applied
                        .iter()
                        .zip(extra)
                        .filter(|(_, e)| **e == n)
                        .map(|(a, _)| a.descriptor.clone())
                        .collect();
                    let call = match hold {
                        Some(id) => {
                            let body = proto::commit_request(domain, &group, id, n);
                            self.call(Purpose::Settle, KUADRANT, "Commit", body)
                        }
                        None => {
                            let body = proto::rate_limit_request(domain, &group, n);
                            self.call(Purpose::Settle, KUADRANT, "Report", body)
                        }
                    };
                    out.push(Effect::Dispatch(call));
                }
            }
        }
        out
    }
}

/// The tokens a request reserves against each limit: its strategy's share of the estimate.
fn reserved(applied: &[Applied], estimate: &Usage) -> Vec<u64> {
    applied
        .iter()
        .map(|a| a.strategy.tokens(estimate).max(1))
        .collect()
}

impl Backend for Remote {
    fn admission(&self, q: &Ctx<'_>, host: &dyn Host) -> Admission {
        let now = now_secs(host);
        let per_instance = (0..q.config.instances.len())
            .map(|i| {
                let spent = applied(q, i).into_iter().filter_map(|a| {
                    let until: u64 = store::read(host.store(), &a.note)
                        .and_then(|v| String::from_utf8(v).ok())
                        .and_then(|s| s.parse().ok())?;
                    (until > now).then(|| {
                        let quota = Quota {
                            limit: a.limit.limit,
                            remaining: 0,
                            reset_secs: until.saturating_sub(now),
                        };
                        (quota, a.set)
                    })
                });
                ratelimit::binding(spent)
            })
            .collect();
        Admission { per_instance }
    }

    fn check(&self, q: &Ctx<'_>, index: usize, _host: &dyn Host) -> Check {
        let applied = applied(q, index);
        if applied.is_empty() {
            return Check::Now(Verdict::Admit(None, None));
        }
        let domain = &self.service.domain;
        let estimate = q.estimate.filter(|_| self.reserve);
        let purpose = Purpose::Quota(index);
        let call = match (self.service.protocol, estimate) {
            (RlsProtocol::Limitador, None) => {
                let body =
                    proto::rate_limit_request(domain, &Remote::descriptors(&applied, |_| None), 1);
                self.call(purpose, KUADRANT, "CheckRateLimit", body)
            }
            (RlsProtocol::Limitador, Some(e)) => {
                let amount = reserved(&applied, &e).into_iter().max().unwrap_or(1);
                let descriptors = Remote::descriptors(&applied, |_| None);
                let body =
                    proto::reserve_request(domain, &descriptors, amount, MAX_RESERVATION_SECS);
                self.call(purpose, KUADRANT, "Reserve", body)
            }
            (RlsProtocol::Envoy, estimate) => {
                let hits =
                    estimate.map_or_else(|| vec![1; applied.len()], |e| reserved(&applied, &e));
                let max = hits.iter().copied().max().unwrap_or(1);
                let mut each = hits.iter();
                let descriptors = Remote::descriptors(&applied, |_| each.next().copied());
                let body = proto::rate_limit_request(domain, &descriptors, max);
                self.call(purpose, ENVOY, "ShouldRateLimit", body)
            }
        };
        Check::Ask(call)
    }

    fn answer(
        &self,
        q: &Ctx<'_>,
        index: usize,
        status: u32,
        message: &[u8],
        host: &dyn Host,
    ) -> Verdict {
        if status != 0 {
            return Verdict::Unknown;
        }
        let applied = applied(q, index);
        let estimate = q.estimate.filter(|_| self.reserve);
        let hold = |held: Held| Some(Hold { index, held });
        match (self.service.protocol, estimate) {
            (RlsProtocol::Limitador, Some(_)) => match proto::reserved(message) {
                Some(r) if r.code == Code::Ok && !r.id.is_empty() => {
                    Verdict::Admit(None, hold(Held::Reservation(r.id)))
                }
                Some(r) if r.code == Code::OverLimit => Remote::spent(&applied, &[], false, host),
                _ => Verdict::Unknown,
            },
            (protocol, estimate) => match proto::response(message) {
                Some(r) if r.code == Code::Ok => {
                    let hits = match (protocol, estimate) {
                        (RlsProtocol::Limitador, _) => return Verdict::Admit(None, None),
                        (RlsProtocol::Envoy, Some(e)) => reserved(&applied, &e),
                        (RlsProtocol::Envoy, None) => vec![1; applied.len()],
                    };
                    let shown = Remote::shown(&applied, &r.statuses, &hits);
                    let now = now_secs(host);
                    let counted = hits.iter().map(|h| Some((*h, now))).collect();
                    Verdict::Admit(shown, hold(Held::Counted(counted)))
                }
                Some(r) if r.code == Code::OverLimit => {
                    Remote::spent(&applied, &r.statuses, estimate.is_none(), host)
                }
                _ => Verdict::Unknown,
            },
        }
    }

    fn deny_on_failure(&self) -> bool {
        self.service.failure_mode_deny
    }

    fn settle(
        &self,
        q: &Ctx<'_>,
        index: usize,
        usage: &Usage,
        hold: Option<&Hold>,
        host: &dyn Host,
    ) -> Vec<Effect> {
        let applied = applied(q, index);
        let tokens: Vec<u64> = applied.iter().map(|a| a.strategy.tokens(usage)).collect();
        let mut out = match hold {
            Some(h) if h.index != index => self.release(q, h, host),
            _ => Vec::new(),
        };
        out.extend(match hold.filter(|h| h.index == index).map(|h| &h.held) {
            // Counted at the check (1, or the estimate): charge the rest, when there is more.
            Some(Held::Counted(counted)) => {
                let extra: Vec<u64> = tokens
                    .iter()
                    .zip(counted.iter().chain(std::iter::repeat(&None)))
                    .map(|(t, c)| t.saturating_sub(c.map_or(0, |(n, _)| n)))
                    .collect();
                self.charges(&applied, &extra, None)
            }
            Some(Held::Reservation(id)) => self.charges(&applied, &tokens, Some(id)),
            None => self.charges(&applied, &tokens, None),
        });
        out
    }

    fn release(&self, q: &Ctx<'_>, hold: &Hold, _host: &dyn Host) -> Vec<Effect> {
        match &hold.held {
            // Released by committing nothing; tokens already counted stay counted (RLS
            // cannot take hits back).
            Held::Reservation(id) => {
                let applied = applied(q, hold.index);
                self.charges(&applied, &vec![0; applied.len()], Some(id))
            }
            Held::Counted(_) => Vec::new(),
        }
    }

    fn start(&self, _host: &dyn Host) {}

    fn gauges(&self, _config: &Config, _host: &dyn Host) -> Vec<Effect> {
        Vec::new()
    }

    fn failure(&self, what: &str, host: &dyn Host) -> Vec<Effect> {
        vec![service_failure(
            &self.quiet,
            what,
            host.now_ns() / 1_000_000,
        )]
    }
}

#[cfg(test)]
mod tests;
