//! Health states in Envoy's shared data: their keys, which instances they take out now,
//! and the read-modify-write of a passive observation or a probe result, so every worker's
//! observations count and none is lost.

use super::{ActiveState, Outcome, PassiveState};
use crate::config::{Config, Instance};
use crate::effect::Effect;
use crate::metrics::name;
use crate::store::{self, Store};
use crate::text::join;

/// Every shared-data key of one configuration's health: the generation, the prober's lease,
/// and each instance's active state (written by the prober) and passive state (written by
/// the workers that see its answers). Made once per configuration, with its `Plugin`: a
/// request reads and writes by them without building a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    generation: String,
    lease: String,
    /// (active, passive), indexed like `Config::instances`.
    instances: Vec<(String, String)>,
}

impl Keys {
    pub fn new(config: &Config, scope: &str) -> Keys {
        let key =
            |instance: &str, which: &str| join(&["aiproxy.hc.", scope, ".", instance, ".", which]);
        Keys {
            generation: join(&["aiproxy.hc.", scope, ".generation"]),
            lease: join(&["aiproxy.hc.", scope, ".lease"]),
            instances: config
                .instances
                .iter()
                .map(|i| (key(&i.name, "active"), key(&i.name, "passive")))
                .collect(),
        }
    }

    /// The prober's lease (`prober`).
    pub fn lease(&self) -> &str {
        &self.lease
    }

    fn active(&self, index: usize) -> Option<&str> {
        self.instances.get(index).map(|(a, _)| a.as_str())
    }

    fn passive(&self, index: usize) -> Option<&str> {
        self.instances.get(index).map(|(_, p)| p.as_str())
    }
}

fn checked(inst: &Instance) -> bool {
    inst.active_check.is_some() || inst.passive_check.is_some()
}

/// Whether any instance has health checks.
pub fn any(config: &Config) -> bool {
    config.instances.iter().any(checked)
}

/// Creates every health key before traffic, so that later writes can use CAS.
pub fn seed(config: &Config, keys: &Keys, store: &dyn Store) {
    for (index, inst) in config.instances.iter().enumerate() {
        let mut seeds = Vec::new();
        if let (Some(_), Some(key)) = (&inst.active_check, keys.active(index)) {
            seeds.push((key, ActiveState::default().encode()));
        }
        if let (Some(_), Some(key)) = (&inst.passive_check, keys.passive(index)) {
            seeds.push((key, PassiveState::default().encode()));
        }
        for (key, value) in seeds {
            if let Err(e) = store::seed(store, key, &value) {
                log::warn!("envoy-ai-proxy: cannot seed {key}: {e}");
            }
        }
    }
}

/// The generation (`Keys::generation`): a key whose compare-and-swap token changes whenever
/// a health state of the configuration is written (each write of a state moves it on). A
/// worker that finds the token it saw last keeps the states it read then: one read per
/// request instead of two per checked instance, and never a stale state. Created at
/// configure time; without it every request reads every state.
pub fn seed_generation(keys: &Keys, store: &dyn Store) {
    if let Err(e) = store::seed(store, &keys.generation, b"0") {
        log::warn!("envoy-ai-proxy: cannot seed {}: {e}", keys.generation);
    }
}

/// A state was written: the generation moves on (when there is one).
fn next_generation(keys: &Keys, store: &dyn Store) {
    let key = &keys.generation;
    let moved = store::update(store, key, |value| {
        let n: u64 = std::str::from_utf8(value?).ok()?.parse().ok()?;
        Some((n.wrapping_add(1).to_string().into_bytes(), ()))
    });
    if let Err(e) = moved {
        log::debug!("envoy-ai-proxy: {key} not moved on: {e}");
    }
}

/// The health states of every instance, as stored (`None`: unchecked or unreadable).
type States = Vec<(Option<ActiveState>, Option<PassiveState>)>;

fn read_states(config: &Config, keys: &Keys, store: &dyn Store) -> States {
    config
        .instances
        .iter()
        .enumerate()
        .map(|(index, inst)| {
            let active = inst.active_check.as_ref().and_then(|_| {
                store::read(store, keys.active(index)?).and_then(|v| ActiveState::decode(&v))
            });
            let passive = inst.passive_check.as_ref().and_then(|_| {
                store::read(store, keys.passive(index)?).and_then(|v| PassiveState::decode(&v))
            });
            (active, passive)
        })
        .collect()
}

fn down(states: &States, now_ms: u64) -> Vec<bool> {
    states
        .iter()
        .map(|(active, passive)| {
            active.is_some_and(|s| !s.healthy) || passive.is_some_and(|s| s.down(now_ms))
        })
        .collect()
}

/// Which instances the health checks have taken out now (empty without checks).
pub fn unhealthy(config: &Config, keys: &Keys, store: &dyn Store, now_ms: u64) -> Vec<bool> {
    if !any(config) {
        return Vec::new();
    }
    down(&read_states(config, keys, store), now_ms)
}

/// The states one worker read last, and the generation they were read at.
#[derive(Debug, Default)]
pub struct Cache {
    generation: Option<u32>,
    states: States,
}

/// As [`unhealthy`], reading the states again only when the generation moved on since
/// `cache` was filled.
pub fn unhealthy_cached(
    config: &Config,
    keys: &Keys,
    store: &dyn Store,
    now_ms: u64,
    cache: &mut Cache,
) -> Vec<bool> {
    if !any(config) {
        return Vec::new();
    }
    let generation = store.get(&keys.generation).ok().and_then(|(_, cas)| cas);
    if generation.is_none() || generation != cache.generation {
        cache.states = read_states(config, keys, store);
        cache.generation = generation;
    }
    down(&cache.states, now_ms)
}

/// The health gauge of every checked instance: 1 in, 0 out.
pub fn gauges(config: &Config, keys: &Keys, store: &dyn Store, now_ms: u64) -> Vec<Effect> {
    let down = unhealthy(config, keys, store, now_ms);
    config
        .instances
        .iter()
        .zip(down)
        .filter(|(inst, _)| checked(inst))
        .map(|(inst, down)| Effect::gauge(name::healthy(&inst.label), u64::from(!down)))
        .collect()
}

/// A real answer from instance `index` feeds its passive check.
pub fn observe(
    config: &Config,
    keys: &Keys,
    store: &dyn Store,
    index: usize,
    outcome: Outcome,
    retry_after: Option<u64>,
    now_ms: u64,
) {
    let Some(inst) = config.instances.get(index) else {
        return;
    };
    let Some(check) = inst.passive_check.as_ref() else {
        return;
    };
    let Some(key) = keys.passive(index) else {
        return;
    };
    let written = store::update(store, key, |value| {
        let state = value.and_then(PassiveState::decode).unwrap_or_default();
        let (next, taken_out) = state.after(check, outcome, retry_after, now_ms)?;
        Some((next.encode(), (next, taken_out)))
    });
    if let Ok(Some(_)) = written {
        next_generation(keys, store);
    }
    match written {
        Ok(Some((next, true))) => log::warn!(
            "envoy-ai-proxy: instance {} taken out for {} ms after {outcome:?}",
            inst.name,
            next.down_until_ms.saturating_sub(now_ms)
        ),
        Ok(_) => {}
        Err(e) => log::debug!(
            "envoy-ai-proxy: passive health of {} not saved: {e}",
            inst.name
        ),
    }
}

/// A probe's result for instance `index` moves its active state.
pub fn record_probe(
    config: &Config,
    keys: &Keys,
    store: &dyn Store,
    index: usize,
    outcome: Outcome,
) {
    let Some(inst) = config.instances.get(index) else {
        return;
    };
    let Some(check) = inst.active_check.as_ref() else {
        return;
    };
    let Some(key) = keys.active(index) else {
        return;
    };
    let written = store::update(store, key, |value| {
        let state = value.and_then(ActiveState::decode).unwrap_or_default();
        let (next, flipped) = state.after(check, outcome);
        (next != state).then(|| (next.encode(), (next, flipped)))
    });
    if let Ok(Some(_)) = written {
        next_generation(keys, store);
    }
    match written {
        Ok(Some((next, true))) => {
            let now = if next.healthy { "healthy" } else { "unhealthy" };
            log::warn!(
                "envoy-ai-proxy: instance {} is now {now} (active probe: {outcome:?})",
                inst.name
            );
        }
        Ok(_) => {}
        Err(e) => log::debug!("envoy-ai-proxy: health of {} not saved: {e}", inst.name),
    }
}

/// Whether the active check has instance `index` healthy (unknown counts as healthy).
pub fn actively_healthy(keys: &Keys, store: &dyn Store, index: usize) -> bool {
    keys.active(index)
        .and_then(|key| store::read(store, key))
        .and_then(|v| ActiveState::decode(&v))
        .is_none_or(|s| s.healthy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::store::mem::Mem;

    fn cfg() -> Config {
        config::parse(
            br#"{"instances":[
                {"name":"a","provider":"openai","priority":1,
                 "checks":{"active":{"http_path":"/health","unhealthy":{"http_failures":2}},
                           "passive":{"unhealthy":{"http_failures":2},"cooldown":5}}},
                {"name":"b","provider":"openai"}]}"#,
        )
        .unwrap()
    }

    #[test]
    fn observations_and_probes_take_instances_out_and_back() {
        let c = cfg();
        let k = Keys::new(&c, "s");
        let store = Mem::default();
        let now = 5_000_000;
        seed(&c, &k, &store);
        assert_eq!(unhealthy(&c, &k, &store, now), vec![false, false]);
        // Passive: two 503s in a row take a out for the cooldown.
        for _ in 0..2 {
            observe(&c, &k, &store, 0, Outcome::Status(503), None, now);
        }
        assert_eq!(unhealthy(&c, &k, &store, now), vec![true, false]);
        assert_eq!(unhealthy(&c, &k, &store, now + 5000), vec![false, false]);
        // b has no checks: nothing is written for it.
        observe(&c, &k, &store, 1, Outcome::Status(503), None, now);
        assert_eq!(store.keys().len(), 2);
        // Active: two failed probes, then back after two successes (the default).
        for _ in 0..2 {
            record_probe(&c, &k, &store, 0, Outcome::ConnectFailure);
        }
        assert!(!actively_healthy(&k, &store, 0));
        assert_eq!(unhealthy(&c, &k, &store, now + 5000), vec![true, false]);
        assert_eq!(
            gauges(&c, &k, &store, now + 5000),
            vec![Effect::gauge(name::healthy("a"), 0)]
        );
        for _ in 0..2 {
            record_probe(&c, &k, &store, 0, Outcome::Status(200));
        }
        assert!(actively_healthy(&k, &store, 0));
        assert_eq!(unhealthy(&c, &k, &store, now + 5000), vec![false, false]);
    }

    #[test]
    fn keys_are_made_once_per_configuration() {
        let c = cfg();
        let k = Keys::new(&c, "s");
        assert_eq!(k.generation, "aiproxy.hc.s.generation");
        assert_eq!(k.lease(), "aiproxy.hc.s.lease");
        assert_eq!(k.active(0), Some("aiproxy.hc.s.a.active"));
        assert_eq!(k.passive(0), Some("aiproxy.hc.s.a.passive"));
        assert_eq!(k.active(1), Some("aiproxy.hc.s.b.active"));
        assert_eq!(k.passive(2), None);
        // What a request writes is what the configuration seeded.
        let store = Mem::default();
        seed(&c, &k, &store);
        seed_generation(&k, &store);
        assert_eq!(
            store.keys(),
            [
                "aiproxy.hc.s.a.active",
                "aiproxy.hc.s.a.passive",
                "aiproxy.hc.s.generation"
            ]
        );
    }

    /// Counts the reads that reach the store.
    struct Counting<'a>(&'a Mem, std::cell::Cell<usize>);

    impl Store for Counting<'_> {
        fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), store::StoreError> {
            self.1.set(self.1.get() + 1);
            self.0.get(key)
        }
        fn set(&self, key: &str, v: &[u8], cas: Option<u32>) -> Result<(), store::StoreError> {
            self.0.set(key, v, cas)
        }
    }

    #[test]
    fn a_worker_reads_the_states_again_only_when_one_was_written() {
        let c = cfg();
        let k = Keys::new(&c, "s");
        let mem = Mem::default();
        let now = 5_000_000;
        seed(&c, &k, &mem);
        seed_generation(&k, &mem);
        let store = Counting(&mem, std::cell::Cell::new(0));
        let mut cache = Cache::default();
        let reads = |now_ms: u64, cache: &mut Cache| {
            let before = store.1.get();
            let down = unhealthy_cached(&c, &k, &store, now_ms, cache);
            (down, store.1.get() - before)
        };
        // First: the generation and both states of a (b has no checks).
        assert_eq!(reads(now, &mut cache), (vec![false, false], 3));
        // Nothing written since: the generation only.
        assert_eq!(reads(now, &mut cache), (vec![false, false], 1));
        // Another worker's observations (same store): seen at once.
        for _ in 0..2 {
            observe(&c, &k, &mem, 0, Outcome::Status(503), None, now);
        }
        assert_eq!(reads(now, &mut cache), (vec![true, false], 3));
        assert_eq!(reads(now, &mut cache), (vec![true, false], 1));
        // The cooldown ends by the clock, without a write.
        assert_eq!(reads(now + 5000, &mut cache), (vec![false, false], 1));
        // A probe result moves the generation too.
        for _ in 0..2 {
            record_probe(&c, &k, &mem, 0, Outcome::ConnectFailure);
        }
        assert_eq!(reads(now + 5000, &mut cache), (vec![true, false], 3));
        // The same answers as reading everything every time.
        assert_eq!(
            unhealthy(&c, &k, &mem, now + 5000),
            reads(now + 5000, &mut cache).0
        );
        // Without a generation key (not seeded): every state, every time.
        let bare = Mem::default();
        seed(&c, &k, &bare);
        let store = Counting(&bare, std::cell::Cell::new(0));
        let mut cache = Cache::default();
        unhealthy_cached(&c, &k, &store, now, &mut cache);
        unhealthy_cached(&c, &k, &store, now, &mut cache);
        assert_eq!(store.1.get(), 6);
    }

    #[test]
    fn no_checks_no_reads() {
        let c = config::parse(br#"{"provider":"openai"}"#).unwrap();
        let k = Keys::new(&c, "s");
        let store = Mem::default();
        store.down.set(true);
        assert!(unhealthy(&c, &k, &store, 0).is_empty());
    }
}
