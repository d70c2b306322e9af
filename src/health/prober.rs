//! Active health probes, decided purely from the clock and shared data: every VM ticks, but
//! only the holder of a lease in shared data probes, so an Envoy with N workers sends one
//! probe per interval per instance, not N+1. Probes go to the instance's cluster with its
//! auth; their results move the shared state every worker reads when picking.

use super::shared;
use crate::config::Config;
use crate::effect::{Callout, Effect, Purpose};
use crate::outcome;
use crate::store::{self, Store};

/// How long a lease lasts without renewal; the holder renews it on every tick.
const LEASE_MS: u64 = 1000;
/// The tick period while any instance has active checks.
pub const TICK_MS: u32 = 200;

/// The lease after `me` claims it at `now_ms` (`owner:expiry`), or `None` while another
/// VM holds it.
pub fn claim(stored: Option<&[u8]>, me: &str, now_ms: u64) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(stored.unwrap_or_default());
    let (owner, expiry) = text.split_once(':').unwrap_or(("", "0"));
    let expiry: u64 = expiry.parse().unwrap_or(0);
    if owner != me && now_ms < expiry {
        return None;
    }
    Some(format!("{me}:{}", now_ms.saturating_add(LEASE_MS)).into_bytes())
}

pub struct Prober {
    /// This VM's identity in the lease.
    id: String,
    /// When each instance is next due a probe (ms since the epoch).
    next_due_ms: Vec<u64>,
    /// Callout token -> instance.
    in_flight: Vec<(u32, usize)>,
}

impl Prober {
    pub fn new(id: String) -> Prober {
        Prober {
            id,
            next_due_ms: Vec::new(),
            in_flight: Vec::new(),
        }
    }

    /// Creates the lease key before any VM ticks, so every claim can use CAS.
    pub fn seed(keys: &shared::Keys, store: &dyn Store) {
        if let Err(e) = store::seed(store, keys.lease(), b"none:0") {
            log::warn!("envoy-ai-proxy: cannot seed the prober lease: {e}");
        }
    }

    /// Takes or renews the lease; whether this VM probes now.
    fn lead(&self, keys: &shared::Keys, store: &dyn Store, now_ms: u64) -> bool {
        let me = self.id.as_str();
        matches!(
            store::update(store, keys.lease(), |v| claim(v, me, now_ms)
                .map(|l| (l, ()))),
            Ok(Some(()))
        )
    }

    /// The probes due now, when this VM holds the lease.
    pub fn tick(
        &mut self,
        config: &Config,
        keys: &shared::Keys,
        store: &dyn Store,
        now_ms: u64,
    ) -> Vec<Effect> {
        if !self.lead(keys, store, now_ms) {
            // Another VM probes; start afresh if this one takes over later.
            self.next_due_ms.clear();
            return Vec::new();
        }
        let instances = &config.instances;
        if self.next_due_ms.len() != instances.len() {
            self.next_due_ms = vec![now_ms; instances.len()];
        }
        let mut out = Vec::new();
        for (index, inst) in instances.iter().enumerate() {
            let Some(check) = inst.active_check.as_ref() else {
                continue;
            };
            let due = self.next_due_ms.get(index).copied().unwrap_or(now_ms);
            if now_ms < due || self.in_flight.iter().any(|(_, i)| *i == index) {
                continue;
            }
            let healthy = shared::actively_healthy(keys, store, index);
            let interval = check.interval_ms(healthy);
            if let Some(d) = self.next_due_ms.get_mut(index) {
                // Interval 0: no probes in this state; look again in a second.
                *d = now_ms.saturating_add(if interval == 0 { 1000 } else { interval });
            }
            if interval == 0 {
                continue;
            }
            let authority = check.host.as_deref().unwrap_or(&inst.target.authority);
            let mut headers = vec![
                (":method".to_string(), check.method.clone()),
                (":path".to_string(), check.path.clone()),
                (":authority".to_string(), authority.to_string()),
            ];
            headers.extend(check.headers.iter().cloned());
            if let Some(body) = &check.body {
                if !headers.iter().any(|(n, _)| n == "content-type") {
                    headers.push(("content-type".into(), "application/json".into()));
                }
                headers.push(("content-length".into(), body.len().to_string()));
            }
            out.push(Effect::Dispatch(Callout {
                purpose: Purpose::Probe(index),
                cluster: inst.cluster.clone(),
                headers,
                body: check.body.clone(),
                timeout_ms: check.timeout_ms,
                grpc: None,
            }));
        }
        out
    }

    /// What came of dispatching a probe: its token, or a failure that counts as one.
    pub fn dispatched(
        &mut self,
        index: usize,
        result: Result<u32, String>,
        config: &Config,
        keys: &shared::Keys,
        store: &dyn Store,
    ) {
        match result {
            Ok(token) => self.in_flight.push((token, index)),
            Err(e) => {
                let name = config.instances.get(index).map_or("", |i| i.name.as_str());
                log::debug!("envoy-ai-proxy: probe of {name} not sent: {e}");
                let cause = outcome::Cause::DispatchFailed;
                shared::record_probe(config, keys, store, index, cause.health());
            }
        }
    }

    /// A probe's answer; the instance it probed, when this prober sent it.
    pub fn answer(
        &mut self,
        token: u32,
        status: u32,
        body: &[u8],
        config: &Config,
        keys: &shared::Keys,
        store: &dyn Store,
    ) -> Option<usize> {
        let at = self.in_flight.iter().position(|(t, _)| *t == token)?;
        let (_, index) = self.in_flight.swap_remove(at);
        let cause = outcome::of_callout(status, body);
        shared::record_probe(config, keys, store, index, cause.health());
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::store::mem::Mem;

    fn cfg() -> Config {
        config::parse(
            br#"{"instances":[
                {"name":"a","provider":"openai","auth":{"header":{"Authorization":"Bearer k"}},
                 "checks":{"active":{"http_path":"/health","healthy":{"interval":2},
                                     "unhealthy":{"interval":1,"tcp_failures":1}}}},
                {"name":"b","provider":"openai"}]}"#,
        )
        .unwrap()
    }

    #[test]
    fn the_lease_elects_one_vm_until_it_lapses() {
        assert!(claim(Some(b"none:0"), "x", 5).is_some());
        let held = claim(None, "x", 100).unwrap();
        assert_eq!(held, b"x:1100");
        assert_eq!(claim(Some(&held), "y", 1099), None);
        assert!(claim(Some(&held), "x", 1099).is_some(), "the holder renews");
        assert!(
            claim(Some(&held), "y", 1100).is_some(),
            "a lapsed lease is taken"
        );
    }

    #[test]
    fn only_the_lease_holder_probes_on_schedule_with_the_instance_auth() {
        let c = cfg();
        let k = shared::Keys::new(&c, "s");
        let store = Mem::default();
        Prober::seed(&k, &store);
        shared::seed(&c, &k, &store);
        let mut one = Prober::new("one".into());
        let mut two = Prober::new("two".into());
        let probes = one.tick(&c, &k, &store, 10_000);
        assert_eq!(probes.len(), 1, "b has no active check");
        let Effect::Dispatch(call) = &probes[0] else {
            panic!("{probes:?}")
        };
        assert_eq!(call.purpose, Purpose::Probe(0));
        assert_eq!(call.cluster, "a");
        assert!(call
            .headers
            .contains(&("authorization".to_string(), "Bearer k".to_string())));
        assert!(call
            .headers
            .contains(&(":path".to_string(), "/health".to_string())));
        assert!(
            two.tick(&c, &k, &store, 10_100).is_empty(),
            "not the holder"
        );
        one.dispatched(0, Ok(7), &c, &k, &store);
        // In flight: not probed again, even when due.
        assert!(one.tick(&c, &k, &store, 12_000).is_empty());
        one.answer(7, 503, b"upstream connect error", &c, &k, &store);
        assert!(!shared::actively_healthy(&k, &store, 0));
        // Overdue: probed at once; unhealthy, the next one a second later.
        assert_eq!(one.tick(&c, &k, &store, 12_500).len(), 1);
        one.dispatched(0, Ok(8), &c, &k, &store);
        one.answer(8, 503, b"upstream connect error", &c, &k, &store);
        assert!(one.tick(&c, &k, &store, 13_000).is_empty());
        assert_eq!(one.tick(&c, &k, &store, 13_500).len(), 1);
        // The holder stops ticking: after the lease lapses the other VM takes over.
        assert!(two.tick(&c, &k, &store, 14_499).is_empty());
        assert_eq!(two.tick(&c, &k, &store, 14_501).len(), 1);
        assert!(one.tick(&c, &k, &store, 14_600).is_empty());
    }

    #[test]
    fn a_probe_that_cannot_be_sent_counts_as_a_failure() {
        let c = cfg();
        let k = shared::Keys::new(&c, "s");
        let store = Mem::default();
        shared::seed(&c, &k, &store);
        let mut p = Prober::new("p".into());
        p.dispatched(0, Err("BadArgument".into()), &c, &k, &store);
        assert!(!shared::actively_healthy(&k, &store, 0));
        // An answer nobody waits for changes nothing.
        p.answer(99, 200, b"", &c, &k, &store);
        assert!(!shared::actively_healthy(&k, &store, 0));
    }
}
