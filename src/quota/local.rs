//! Token counters in Envoy's shared data: one key per configuration, instance and consumer,
//! read at admission and charged with compare-and-swap when an answer ends, so every worker
//! of one Envoy sees the same numbers and no charge is lost. With `reserve`, the request's
//! upper-bound estimate is added at admission only if it fits, and settled to the real
//! usage at the end: concurrent requests cannot overspend.

use super::{applicable_sets, Admission, Backend, Check, Ctx, Held, Hold, Verdict};
use crate::config::Config;
use crate::effect::{Effect, Host};
use crate::metrics::{self, name};
use crate::ratelimit::{self, Counter, Limit, Quota};
use crate::store::{self, Store, StoreError};
use crate::usage::Usage;

/// The shared-data key of a token counter: per filter configuration (`scope`), instance
/// and consumer (`*`: the route's limit).
pub fn counter_key(scope: &str, instance: &str, consumer: Option<&str>) -> String {
    let consumer = consumer.unwrap_or("*");
    crate::text::join(&["aiproxy.rl.", scope, ".", instance, ".", consumer])
}

/// One counter of a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterSpec {
    pub instance: usize,
    pub consumer: Option<String>,
    pub key: String,
    pub limit: Limit,
}

pub struct Local {
    counters: Vec<CounterSpec>,
    reserve: bool,
}

impl Local {
    pub fn new(config: &Config, scope: &str) -> Local {
        let mut counters = Vec::new();
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
                    counters.push(CounterSpec {
                        instance: i,
                        consumer: consumer.map(str::to_string),
                        key: counter_key(scope, &inst.name, consumer),
                        limit: *limit,
                    });
                }
            }
        }
        Local {
            counters,
            reserve: config.rate_limits.reserve,
        }
    }
}

fn now_secs(host: &dyn Host) -> u64 {
    host.now_ns() / 1_000_000_000
}

/// The counter stored at `key`, as seen at `now`.
pub fn read(store: &dyn Store, key: &str, now_secs: u64, window_secs: u64) -> Counter {
    let stored = store::read(store, key).and_then(|v| Counter::decode(&v));
    Counter::at(stored, now_secs, window_secs)
}

/// Adds `tokens` to the counter at `key`, starting a new window when the stored one is
/// over. Returns the new count.
pub fn charge(
    store: &dyn Store,
    key: &str,
    now_secs: u64,
    window_secs: u64,
    tokens: u64,
) -> Result<Counter, StoreError> {
    let written = store::update(store, key, |value| {
        let current = Counter::at(value.and_then(Counter::decode), now_secs, window_secs);
        let next = Counter {
            window_start: current.window_start,
            used: current.used.saturating_add(tokens),
        };
        Some((next.encode(), next))
    })?;
    written.ok_or(StoreError::CasMismatch)
}

/// Adds `tokens` only if the count stays within `limit`: `Ok(Some(counter))` when it was
/// added, `Ok(None)` when it does not fit (nothing changes).
pub fn reserve(
    store: &dyn Store,
    key: &str,
    now_secs: u64,
    limit: Limit,
    tokens: u64,
) -> Result<Option<Counter>, StoreError> {
    store::update(store, key, |value| {
        let current = Counter::at(value.and_then(Counter::decode), now_secs, limit.window_secs);
        let used = current.used.checked_add(tokens)?;
        (used <= limit.limit).then(|| {
            let next = Counter {
                window_start: current.window_start,
                used,
            };
            (next.encode(), next)
        })
    })
}

/// Takes back `tokens` counted in the window starting at `window_start` (nothing when that
/// window is over).
pub fn give_back(
    store: &dyn Store,
    key: &str,
    now_secs: u64,
    window_secs: u64,
    tokens: u64,
    window_start: u64,
) -> Result<(), StoreError> {
    store::update(store, key, |value| {
        let current = Counter::at(value.and_then(Counter::decode), now_secs, window_secs);
        (current.window_start == window_start).then(|| {
            let next = Counter {
                window_start,
                used: current.used.saturating_sub(tokens),
            };
            (next.encode(), ())
        })
    })
    .map(|_| ())
}

impl Backend for Local {
    fn admission(&self, q: &Ctx<'_>, host: &dyn Host) -> Admission {
        let now = now_secs(host);
        let store = host.store();
        let per_instance = q
            .config
            .instances
            .iter()
            .enumerate()
            .map(|(i, inst)| {
                let applicable =
                    applicable_sets(q.config, q.consumer).filter_map(|(who, id, set)| {
                        let limit = set.per_instance.get(i).copied().flatten()?;
                        let key = counter_key(q.scope, &inst.name, who);
                        let counter = read(store, &key, now, limit.window_secs);
                        Some((Quota::of(limit, counter, now), id))
                    });
                ratelimit::binding(applicable)
            })
            .collect();
        Admission { per_instance }
    }

    fn check(&self, q: &Ctx<'_>, index: usize, host: &dyn Host) -> Check {
        let (true, Some(estimate)) = (self.reserve, q.estimate) else {
            return Check::Now(Verdict::Admit(None, None));
        };
        let Some(inst) = q.config.instances.get(index) else {
            return Check::Now(Verdict::Unknown);
        };
        let now = now_secs(host);
        let mut held: Vec<Option<(u64, u64)>> = Vec::new();
        for (who, id, set) in applicable_sets(q.config, q.consumer) {
            let Some(limit) = set.per_instance.get(index).copied().flatten() else {
                held.push(None);
                continue;
            };
            let tokens = set.strategy.tokens(&estimate);
            let key = counter_key(q.scope, &inst.name, who);
            match reserve(host.store(), &key, now, limit, tokens) {
                Ok(Some(c)) => held.push(Some((tokens, c.window_start))),
                Ok(None) => {
                    // Does not fit: what this request took from other limits goes back.
                    self.release(q, &hold(index, held), host);
                    let counter = read(host.store(), &key, now, limit.window_secs);
                    let mut quota = Quota::of(limit, counter, now);
                    quota.remaining = 0;
                    return Check::Now(Verdict::Exhausted(quota, id));
                }
                Err(e) => {
                    log::warn!("envoy-ai-proxy: could not reserve {tokens} tokens on {key}: {e}");
                    self.release(q, &hold(index, held), host);
                    return Check::Now(Verdict::Unknown);
                }
            }
        }
        Check::Now(Verdict::Admit(None, Some(hold(index, held))))
    }

    fn settle(
        &self,
        q: &Ctx<'_>,
        index: usize,
        usage: &Usage,
        hold: Option<&Hold>,
        host: &dyn Host,
    ) -> Vec<Effect> {
        let Some(inst) = q.config.instances.get(index) else {
            return Vec::new();
        };
        // What was held on another instance (a fallback answered) goes back first.
        let held = match hold {
            Some(h) if h.index == index => counted(h),
            Some(h) => {
                self.release(q, h, host);
                &[]
            }
            None => &[],
        };
        let now = now_secs(host);
        for (k, (who, _, set)) in applicable_sets(q.config, q.consumer).enumerate() {
            let Some(limit) = set.per_instance.get(index).copied().flatten() else {
                continue;
            };
            let tokens = set.strategy.tokens(usage);
            let key = counter_key(q.scope, &inst.name, who);
            let result = match held.get(k).copied().flatten() {
                Some((reserved, window)) if tokens < reserved => give_back(
                    host.store(),
                    &key,
                    now,
                    limit.window_secs,
                    reserved.saturating_sub(tokens),
                    window,
                ),
                Some((reserved, _)) => {
                    charge_nonzero(host, &key, now, limit, tokens.saturating_sub(reserved))
                }
                None => charge_nonzero(host, &key, now, limit, tokens),
            };
            if let Err(e) = result {
                log::warn!("envoy-ai-proxy: could not charge {tokens} tokens to {key}: {e}");
            }
        }
        Vec::new()
    }

    fn release(&self, q: &Ctx<'_>, hold: &Hold, host: &dyn Host) -> Vec<Effect> {
        let Some(inst) = q.config.instances.get(hold.index) else {
            return Vec::new();
        };
        let now = now_secs(host);
        let held = counted(hold);
        for (k, (who, _, set)) in applicable_sets(q.config, q.consumer).enumerate() {
            let (Some(limit), Some(Some((tokens, window)))) = (
                set.per_instance.get(hold.index).copied().flatten(),
                held.get(k).copied(),
            ) else {
                continue;
            };
            let key = counter_key(q.scope, &inst.name, who);
            if let Err(e) = give_back(host.store(), &key, now, limit.window_secs, tokens, window) {
                log::warn!("envoy-ai-proxy: could not give back {tokens} tokens to {key}: {e}");
            }
        }
        Vec::new()
    }

    fn start(&self, host: &dyn Host) {
        for c in &self.counters {
            if let Err(e) = store::seed(host.store(), &c.key, &Counter::default().encode()) {
                log::warn!("envoy-ai-proxy: cannot seed counter {}: {e}", c.key);
            }
        }
    }

    fn gauges(&self, config: &Config, host: &dyn Host) -> Vec<Effect> {
        let now = now_secs(host);
        self.counters
            .iter()
            .map(|c| {
                let used = read(host.store(), &c.key, now, c.limit.window_secs).used;
                let instance = config
                    .instances
                    .get(c.instance)
                    .map_or(String::new(), |i| metrics::label(&i.name));
                let consumer = c
                    .consumer
                    .as_deref()
                    .map_or("all".to_string(), metrics::label);
                Effect::gauge(name::ratelimit_used(&instance, &consumer), used)
            })
            .collect()
    }
}

fn hold(index: usize, counted: Vec<Option<(u64, u64)>>) -> Hold {
    Hold {
        index,
        held: Held::Counted(counted),
    }
}

/// What a hold counted, per applicable limit (nothing for a service's reservation).
fn counted(hold: &Hold) -> &[Option<(u64, u64)>] {
    match &hold.held {
        Held::Counted(c) => c,
        Held::Reservation(_) => &[],
    }
}

fn charge_nonzero(
    host: &dyn Host,
    key: &str,
    now: u64,
    limit: Limit,
    tokens: u64,
) -> Result<(), StoreError> {
    if tokens == 0 {
        return Ok(());
    }
    charge(host.store(), key, now, limit.window_secs, tokens).map(|_| ())
}

#[cfg(test)]
mod tests;
