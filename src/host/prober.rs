//! Active health probes. Every VM ticks, but only the holder of a lease in shared data
//! probes, so an Envoy with N workers sends one probe per interval per instance, not N+1.
//! Probes go to the instance's cluster with its auth; results update the shared state that
//! every worker reads when picking.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::time::Duration;

use super::{abi, Shared, SharedData};
use crate::flow;
use crate::health::{self, ActiveState};
use crate::ratelimit::{self, Store};

/// How long a lease lasts without renewal; the holder renews it on every tick.
const LEASE_MS: u64 = 1000;
pub const TICK_MS: u32 = 200;

pub struct Prober {
    /// This VM's identity in the lease.
    id: String,
    /// When each instance is next due a probe (ms since the epoch).
    next_due_ms: Vec<u64>,
    /// Callout token -> instance.
    in_flight: HashMap<u32, usize>,
}

impl Prober {
    pub fn new() -> Prober {
        // Random per VM (WASI random), so two VMs never share an identity.
        let id = std::collections::hash_map::RandomState::new().hash_one(abi::now_ns());
        Prober {
            id: format!("{id:016x}"),
            next_due_ms: Vec::new(),
            in_flight: HashMap::new(),
        }
    }

    pub fn lease_key(scope: &str) -> String {
        format!("aiproxy.hc.{scope}.lease")
    }

    /// Creates the shared keys before any traffic, so every later write can use CAS.
    pub fn seed(shared: &Shared) {
        let mut keys = vec![(Prober::lease_key(&shared.scope), b"none:0".to_vec())];
        for inst in &shared.config.instances {
            let (active, passive) = flow::health_keys(&shared.scope, &inst.name);
            if inst.active_check.is_some() {
                keys.push((active, ActiveState::default().encode()));
            }
            if inst.passive_check.is_some() {
                keys.push((passive, health::PassiveState::default().encode()));
            }
        }
        for (key, value) in keys {
            if let Ok((None, _)) = SharedData.get(&key) {
                if let Err(e) = SharedData.set(&key, &value, None) {
                    log::warn!("envoy-ai-proxy: cannot seed {key}: {e:?}");
                }
            }
        }
    }

    /// Takes or renews the lease; whether this VM probes now.
    fn lead(&self, scope: &str, now_ms: u64) -> bool {
        let key = Prober::lease_key(scope);
        let Ok((value, cas)) = SharedData.get(&key) else {
            return false;
        };
        let value = value.unwrap_or_default();
        let text = String::from_utf8_lossy(&value);
        let (owner, expiry) = text.split_once(':').unwrap_or(("", "0"));
        let expiry: u64 = expiry.parse().unwrap_or(0);
        if owner != self.id && now_ms < expiry {
            return false;
        }
        let lease = format!("{}:{}", self.id, now_ms + LEASE_MS);
        SharedData.set(&key, lease.as_bytes(), cas).is_ok()
    }

    pub fn tick(&mut self, shared: &Shared) {
        let now_ms = abi::now_ns() / 1_000_000;
        if !self.lead(&shared.scope, now_ms) {
            // Another VM probes; start afresh if this one takes over later.
            self.next_due_ms.clear();
            return;
        }
        let instances = &shared.config.instances;
        if self.next_due_ms.len() != instances.len() {
            self.next_due_ms = vec![now_ms; instances.len()];
        }
        for (index, inst) in instances.iter().enumerate() {
            let Some(check) = inst.active_check.as_ref() else {
                continue;
            };
            let due = self.next_due_ms.get(index).copied().unwrap_or(now_ms);
            if now_ms < due || self.in_flight.values().any(|i| *i == index) {
                continue;
            }
            let (key, _) = flow::health_keys(&shared.scope, &inst.name);
            let healthy = read_active(&key).healthy;
            let interval = check.interval_ms(healthy);
            if let Some(d) = self.next_due_ms.get_mut(index) {
                // Interval 0: no probes in this state; look again in a second.
                *d = now_ms + if interval == 0 { 1000 } else { interval };
            }
            if interval == 0 {
                continue;
            }
            let authority = check.host.as_deref().unwrap_or(&inst.target.authority);
            let mut headers: Vec<(&str, &str)> = vec![
                (":method", "GET"),
                (":path", &check.path),
                (":authority", authority),
            ];
            headers.extend(check.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
            let timeout = Duration::from_millis(check.timeout_ms);
            match proxy_wasm::hostcalls::dispatch_http_call(
                &inst.cluster,
                headers,
                None,
                vec![],
                timeout,
            ) {
                Ok(token) => {
                    self.in_flight.insert(token, index);
                }
                Err(s) => {
                    log::debug!("envoy-ai-proxy: probe of {} not sent: {s:?}", inst.name);
                    self.record(shared, index, health::Outcome::ConnectFailure);
                }
            }
        }
    }

    /// A probe's answer.
    pub fn on_response(&mut self, shared: &Shared, token: u32, body_size: usize) {
        let Some(index) = self.in_flight.remove(&token) else {
            return;
        };
        let status = abi::header(abi::CALL_RESPONSE_HEADERS, ":status")
            .ok()
            .flatten()
            .and_then(|s| s.parse::<u32>().ok())
            .unwrap_or(0);
        let body = abi::buffer(abi::CALL_RESPONSE_BODY, 0, body_size.min(256))
            .ok()
            .flatten()
            .unwrap_or_default();
        self.record(shared, index, health::classify_callout(status, &body));
    }

    fn record(&mut self, shared: &Shared, index: usize, outcome: health::Outcome) {
        let Some(inst) = shared.config.instances.get(index) else {
            return;
        };
        let Some(check) = inst.active_check.as_ref() else {
            return;
        };
        let (key, _) = flow::health_keys(&shared.scope, &inst.name);
        for _ in 0..ratelimit::MAX_CAS_RETRIES {
            let Ok((value, cas)) = SharedData.get(&key) else {
                return;
            };
            let state = value
                .as_deref()
                .and_then(ActiveState::decode)
                .unwrap_or_default();
            let (next, flipped) = state.after(check, outcome);
            if next == state {
                return;
            }
            match SharedData.set(&key, &next.encode(), cas) {
                Ok(()) => {
                    if flipped {
                        let now = if next.healthy { "healthy" } else { "unhealthy" };
                        log::warn!(
                            "envoy-ai-proxy: instance {} is now {now} (active probe: {outcome:?})",
                            inst.name
                        );
                    }
                    return;
                }
                Err(ratelimit::SetError::CasMismatch) => continue,
                Err(e) => {
                    log::debug!("envoy-ai-proxy: health of {} not saved: {e:?}", inst.name);
                    return;
                }
            }
        }
    }
}

fn read_active(key: &str) -> ActiveState {
    SharedData
        .get(key)
        .ok()
        .and_then(|(v, _)| v)
        .and_then(|v| ActiveState::decode(&v))
        .unwrap_or_default()
}
