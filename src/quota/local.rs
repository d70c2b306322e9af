//! Token counters in Envoy's shared data: one key per configuration, instance and consumer,
//! read at admission and charged with compare-and-swap when an answer ends, so every worker
//! of one Envoy sees the same numbers and no charge is lost.

use super::{applicable_sets, Admission, Backend, Ctx};
use crate::config::Config;
use crate::effect::{Effect, Host};
use crate::metrics::{self, name};
use crate::ratelimit::{self, Counter, Limit, Quota};
use crate::store::{self, Store, StoreError};
use crate::usage::Usage;

/// The shared-data key of a token counter: per filter configuration (`scope`), instance
/// and consumer (`*`: the route's limit).
pub fn counter_key(scope: &str, instance: &str, consumer: Option<&str>) -> String {
    format!("aiproxy.rl.{scope}.{instance}.{}", consumer.unwrap_or("*"))
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
        Local { counters }
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

    fn settle(&self, q: &Ctx<'_>, index: usize, usage: &Usage, host: &dyn Host) -> Vec<Effect> {
        let Some(inst) = q.config.instances.get(index) else {
            return Vec::new();
        };
        let now = now_secs(host);
        for (who, _, set) in applicable_sets(q.config, q.consumer) {
            let Some(limit) = set.per_instance.get(index).copied().flatten() else {
                continue;
            };
            let tokens = set.strategy.tokens(usage);
            if tokens == 0 {
                continue;
            }
            let key = counter_key(q.scope, &inst.name, who);
            if let Err(e) = charge(host.store(), &key, now, limit.window_secs, tokens) {
                log::warn!("envoy-ai-proxy: could not charge {tokens} tokens to {key}: {e}");
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

#[cfg(test)]
mod tests;
