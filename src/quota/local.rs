//! Token counters in Envoy's shared data: one value per configuration and limit set (the
//! route's, or a consumer's) holding a counter per instance, read once at admission and
//! charged with compare-and-swap when an answer ends, so every worker of one Envoy sees the
//! same numbers and no charge is lost. With `reserve`, the request's upper-bound estimate is
//! added at admission only if it fits, and settled to the real usage at the end: concurrent
//! requests cannot overspend.

use super::{applicable_sets, Admission, Backend, Check, Ctx, Held, Hold, SetId, Verdict};
use crate::config::{Config, LimitSet};
use crate::effect::{Effect, Host};
use crate::metrics::{self, name};
use crate::ratelimit::{self, Counter, Limit, Quota};
use crate::store::{self, Store, StoreError};
use crate::usage::Usage;

/// The shared-data key of a limit set's counters: per filter configuration (`scope`) and
/// consumer (`*`: the route's limits). Its value holds one counter per instance, in the
/// configuration's order (see [`Counter::in_slot`]).
pub fn set_key(scope: &str, consumer: Option<&str>) -> String {
    let consumer = consumer.unwrap_or("*");
    crate::text::join(&["aiproxy.tokens.", scope, ".", consumer])
}

/// Where one token counter lives: its limit set's key, and its slot there (the instance's
/// index in the configuration).
#[derive(Debug, Clone, Copy)]
pub struct At<'a> {
    pub key: &'a str,
    pub slot: usize,
}

/// One limit set of a configuration, with a limit on at least one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetSpec {
    pub consumer: Option<String>,
    /// Its key is `Local::key(id)`.
    pub id: SetId,
    /// Indexed like `Config::instances`.
    pub limits: Vec<Option<Limit>>,
}

pub struct Local {
    sets: Vec<SetSpec>,
    /// Every limit set's key, made once (not per request): the route's, and each
    /// consumer's indexed like `rate_limits.consumers`.
    route_key: String,
    consumer_keys: Vec<String>,
    reserve: bool,
}

impl Local {
    pub fn new(config: &Config, scope: &str) -> Local {
        let mut sets = Vec::new();
        let route = config
            .rate_limits
            .route
            .iter()
            .map(|s| (None, SetId::Route, s));
        let consumers = config.rate_limits.consumers.iter().enumerate();
        let consumers = consumers.map(|(i, (n, s))| (Some(n), SetId::Consumer(i), s));
        for (consumer, id, set) in route.chain(consumers) {
            if limited(set) {
                sets.push(SetSpec {
                    consumer: consumer.cloned(),
                    id,
                    limits: set.per_instance.clone(),
                });
            }
        }
        Local {
            sets,
            route_key: set_key(scope, None),
            consumer_keys: config
                .rate_limits
                .consumers
                .iter()
                .map(|(n, _)| set_key(scope, Some(n)))
                .collect(),
            reserve: config.rate_limits.reserve,
        }
    }

    /// The key of limit set `id`.
    fn key(&self, id: SetId) -> Option<&str> {
        match id {
            SetId::Route => Some(&self.route_key),
            SetId::Consumer(i) => self.consumer_keys.get(i).map(String::as_str),
        }
    }
}

/// Whether a set limits any instance (one without has no counters to read).
fn limited(set: &LimitSet) -> bool {
    set.per_instance.iter().any(Option::is_some)
}

fn now_secs(host: &dyn Host) -> u64 {
    host.now_ns() / 1_000_000_000
}

/// The counter at `at`, as seen at `now`.
pub fn read(store: &dyn Store, at: At<'_>, now_secs: u64, window_secs: u64) -> Counter {
    let stored = store::read(store, at.key);
    Counter::at(
        Counter::in_slot(stored.as_deref(), at.slot),
        now_secs,
        window_secs,
    )
}

/// Adds `tokens` to the counter at `at`, starting a new window when the stored one is
/// over. Returns the new count.
pub fn charge(
    store: &dyn Store,
    at: At<'_>,
    now_secs: u64,
    window_secs: u64,
    tokens: u64,
) -> Result<Counter, StoreError> {
    let written = store::update(store, at.key, |value| {
        let current = Counter::at(Counter::in_slot(value, at.slot), now_secs, window_secs);
        let next = Counter {
            window_start: current.window_start,
            used: current.used.saturating_add(tokens),
        };
        Some((next.into_slot(value, at.slot), next))
    })?;
    written.ok_or(StoreError::CasMismatch)
}

/// Adds `tokens` only if the count stays within `limit`: `Ok(Some(counter))` when it was
/// added, `Ok(None)` when it does not fit (nothing changes).
pub fn reserve(
    store: &dyn Store,
    at: At<'_>,
    now_secs: u64,
    limit: Limit,
    tokens: u64,
) -> Result<Option<Counter>, StoreError> {
    store::update(store, at.key, |value| {
        let current = Counter::at(
            Counter::in_slot(value, at.slot),
            now_secs,
            limit.window_secs,
        );
        let used = current.used.checked_add(tokens)?;
        (used <= limit.limit).then(|| {
            let next = Counter {
                window_start: current.window_start,
                used,
            };
            (next.into_slot(value, at.slot), next)
        })
    })
}

/// Takes back `tokens` counted in the window starting at `window_start` (nothing when that
/// window is over).
pub fn give_back(
    store: &dyn Store,
    at: At<'_>,
    now_secs: u64,
    window_secs: u64,
    tokens: u64,
    window_start: u64,
) -> Result<(), StoreError> {
    store::update(store, at.key, |value| {
        let current = Counter::at(Counter::in_slot(value, at.slot), now_secs, window_secs);
        (current.window_start == window_start).then(|| {
            let next = Counter {
                window_start,
                used: current.used.saturating_sub(tokens),
            };
            (next.into_slot(value, at.slot), ())
        })
    })
    .map(|_| ())
}

impl Backend for Local {
    fn admission(&self, q: &Ctx<'_>, host: &dyn Host) -> Admission {
        let now = now_secs(host);
        let store = host.store();
        // One read per limit set that applies, whatever the number of instances, and one
        // pass over its slots; each instance's binding quota kept as the sets come (route,
        // then consumer: the first of equals binds, as `ratelimit::binding` picks).
        let mut per_instance = vec![None; q.config.instances.len()];
        for (_, id, set) in applicable_sets(q.config, q.consumer).filter(|s| limited(s.2)) {
            let Some(key) = self.key(id) else { continue };
            let stored = store::read(store, key).unwrap_or_default();
            let mut slots = stored.split(|b| *b == b',');
            for (i, binds) in per_instance.iter_mut().enumerate() {
                let slot = slots.next();
                let Some(limit) = set.per_instance.get(i).copied().flatten() else {
                    continue;
                };
                let counter = Counter::at(slot.and_then(Counter::decode), now, limit.window_secs);
                let quota = (Quota::of(limit, counter, now), id);
                *binds = ratelimit::binding(binds.take().into_iter().chain(Some(quota)));
            }
        }
        Admission { per_instance }
    }

    fn check(&self, q: &Ctx<'_>, index: usize, host: &dyn Host) -> Check {
        let (true, Some(estimate)) = (self.reserve, q.estimate) else {
            return Check::Now(Verdict::Admit(None, None));
        };
        if q.config.instances.get(index).is_none() {
            return Check::Now(Verdict::Unknown);
        }
        let now = now_secs(host);
        let mut held: Vec<Option<(u64, u64)>> = Vec::new();
        for (_, id, set) in applicable_sets(q.config, q.consumer) {
            let (Some(limit), Some(key)) =
                (set.per_instance.get(index).copied().flatten(), self.key(id))
            else {
                held.push(None);
                continue;
            };
            let tokens = set.strategy.tokens(&estimate);
            let at = At { key, slot: index };
            match reserve(host.store(), at, now, limit, tokens) {
                Ok(Some(c)) => held.push(Some((tokens, c.window_start))),
                Ok(None) => {
                    // Does not fit: what this request took from other limits goes back.
                    self.release(q, &hold(index, held), host);
                    let counter = read(host.store(), at, now, limit.window_secs);
                    let mut quota = Quota::of(limit, counter, now);
                    quota.remaining = 0;
                    return Check::Now(Verdict::Exhausted(quota, id));
                }
                Err(e) => {
                    log::warn!(
                        "envoy-ai-proxy: could not reserve {tokens} tokens on {key}[{index}]: {e}"
                    );
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
        if q.config.instances.get(index).is_none() {
            return Vec::new();
        }
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
        for (k, (_, id, set)) in applicable_sets(q.config, q.consumer).enumerate() {
            let (Some(limit), Some(key)) =
                (set.per_instance.get(index).copied().flatten(), self.key(id))
            else {
                continue;
            };
            let tokens = set.strategy.tokens(usage);
            let at = At { key, slot: index };
            let result = match held.get(k).copied().flatten() {
                Some((reserved, window)) if tokens < reserved => give_back(
                    host.store(),
                    at,
                    now,
                    limit.window_secs,
                    reserved.saturating_sub(tokens),
                    window,
                ),
                Some((reserved, _)) => {
                    charge_nonzero(host, at, now, limit, tokens.saturating_sub(reserved))
                }
                None => charge_nonzero(host, at, now, limit, tokens),
            };
            if let Err(e) = result {
                log::warn!(
                    "envoy-ai-proxy: could not charge {tokens} tokens to {key}[{index}]: {e}"
                );
            }
        }
        Vec::new()
    }

    fn release(&self, q: &Ctx<'_>, hold: &Hold, host: &dyn Host) -> Vec<Effect> {
        if q.config.instances.get(hold.index).is_none() {
            return Vec::new();
        }
        let now = now_secs(host);
        let held = counted(hold);
        for (k, (_, id, set)) in applicable_sets(q.config, q.consumer).enumerate() {
            let (Some(limit), Some(Some((tokens, window))), Some(key)) = (
                set.per_instance.get(hold.index).copied().flatten(),
                held.get(k).copied(),
                self.key(id),
            ) else {
                continue;
            };
            let at = At {
                key,
                slot: hold.index,
            };
            if let Err(e) = give_back(host.store(), at, now, limit.window_secs, tokens, window) {
                log::warn!(
                    "envoy-ai-proxy: could not give back {tokens} tokens to {key}[{}]: {e}",
                    hold.index
                );
            }
        }
        Vec::new()
    }

    fn start(&self, host: &dyn Host) {
        for set in &self.sets {
            // `0:0` (a counter at zero) in each limited slot.
            let mut seed: Vec<u8> = Vec::new();
            for (slot, limit) in set.limits.iter().enumerate() {
                if slot > 0 {
                    seed.push(b',');
                }
                if limit.is_some() {
                    seed.extend_from_slice(b"0:0");
                }
            }
            let Some(key) = self.key(set.id) else {
                continue;
            };
            if let Err(e) = store::seed(host.store(), key, &seed) {
                log::warn!("envoy-ai-proxy: cannot seed the counters {key}: {e}");
            }
        }
    }

    fn gauges(&self, config: &Config, host: &dyn Host) -> Vec<Effect> {
        let now = now_secs(host);
        let mut out = Vec::new();
        for set in &self.sets {
            let Some(key) = self.key(set.id) else {
                continue;
            };
            let stored = store::read(host.store(), key);
            let slots = Counter::all_slots(stored.as_deref());
            let consumer = set
                .consumer
                .as_deref()
                .map_or("all".to_string(), metrics::label);
            for (slot, limit) in set.limits.iter().enumerate() {
                let Some(limit) = limit else { continue };
                let counter = slots.get(slot).copied().flatten();
                let used = Counter::at(counter, now, limit.window_secs).used;
                let instance = config.instances.get(slot).map_or("", |i| &i.label);
                out.push(Effect::gauge(
                    name::ratelimit_used(instance, &consumer),
                    used,
                ));
            }
        }
        out
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
    at: At<'_>,
    now: u64,
    limit: Limit,
    tokens: u64,
) -> Result<(), StoreError> {
    if tokens == 0 {
        return Ok(());
    }
    charge(host.store(), at, now, limit.window_secs, tokens).map(|_| ())
}

#[cfg(test)]
mod tests;
