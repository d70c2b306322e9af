//! The wasm entry point and the root context: the only place, with `http` and `abi`, that
//! talks to Envoy. It reads the plugin configuration once and hands it to every request.

mod abi;
mod account;
mod http;
mod prober;

use std::cell::Cell;
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

use crate::balancer::hash_bytes;
use crate::balancer::RoundRobin;
use crate::config::{self, Config};
use crate::flow;
use crate::metrics::{self, name, Kind, Registry};
use crate::ratelimit::{self, Limit, SetError, Store};

thread_local! {
    /// Metric ids of this VM. Not per configuration: a configuration update must not define
    /// the same metrics again (each definition allocates a new id in Envoy).
    static METRICS: Cell<Registry> = Cell::new(Registry::default());
}

fn with_metrics<T>(f: impl FnOnce(&mut Registry) -> T) -> T {
    METRICS.with(|cell| {
        let mut reg = cell.take();
        let out = f(&mut reg);
        cell.set(reg);
        out
    })
}

/// Adds `by` to counter `name` (defined on first use).
pub fn count(name: &str, by: u64) {
    if by == 0 {
        return;
    }
    if let Some(id) = metric(Kind::Counter, name) {
        if let Err(s) = abi::increment_metric(id, by) {
            log::debug!("metric {name}: {s}");
        }
    }
}

/// Sets gauge `name` (defined on first use).
pub fn gauge(name: &str, value: u64) {
    if let Some(id) = metric(Kind::Gauge, name) {
        if let Err(s) = abi::record_metric(id, value) {
            log::debug!("metric {name}: {s}");
        }
    }
}

/// Records `value` in histogram `name` (defined on first use).
pub fn record(name: &str, value: u64) {
    if let Some(id) = metric(Kind::Histogram, name) {
        if let Err(s) = abi::record_metric(id, value) {
            log::debug!("metric {name}: {s}");
        }
    }
}

/// The stat-name label for a model (bounded; see `metrics::MAX_MODELS`).
pub fn model_label(model: &str) -> String {
    with_metrics(|reg| reg.model(model))
}

fn metric(kind: Kind, name: &str) -> Option<u32> {
    let abi_kind = match kind {
        Kind::Counter => abi::METRIC_COUNTER,
        Kind::Gauge => abi::METRIC_GAUGE,
        Kind::Histogram => abi::METRIC_HISTOGRAM,
    };
    with_metrics(|reg| {
        reg.id(name, |n| match abi::define_metric(abi_kind, n) {
            Ok(id) => Some(id),
            Err(s) => {
                log::warn!("envoy-ai-proxy: cannot define metric {n}: {s}");
                None
            }
        })
    })
}

/// What every request of this VM shares: the configuration, and this worker's round-robin
/// position (one VM per worker thread, so no locking).
pub struct Shared {
    pub config: Config,
    rr: Cell<RoundRobin>,
    /// Names this configuration's token counters in shared data.
    pub scope: String,
    /// Every token counter: (instance, consumer, key, limit).
    counters: Vec<(usize, Option<String>, String, Limit)>,
}

/// Envoy's shared data (one store for all VMs of the process) as a rate-limit store.
pub struct SharedData;

impl Store for SharedData {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), String> {
        abi::shared_data(key).map_err(|s| s.to_string())
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        abi::set_shared_data(key, value, cas).map_err(|s| {
            if s.0 == abi::CAS_MISMATCH {
                SetError::CasMismatch
            } else {
                SetError::Other(s.to_string())
            }
        })
    }
}

/// Seconds since the epoch, from the host's clock.
pub fn now_secs() -> u64 {
    abi::now_ns() / 1_000_000_000
}

impl Shared {
    /// Runs `f` with the round-robin state (taken out and put back: no borrow can fail).
    pub fn with_rr<T>(&self, f: impl FnOnce(&mut RoundRobin) -> T) -> T {
        let mut rr = self.rr.take();
        let out = f(&mut rr);
        self.rr.set(rr);
        out
    }
}

proxy_wasm::main! {{
    init_logging();
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { config: None, prober: None })
    });
}}

/// Routes the `log` crate to Envoy's log through the non-panicking ABI call.
struct HostLogger;

static LOGGER: HostLogger = HostLogger;

impl log::Log for HostLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Trace => 0,
            log::Level::Debug => 1,
            log::Level::Info => 2,
            log::Level::Warn => 3,
            log::Level::Error => 4,
        };
        abi::log(level, &record.args().to_string());
    }

    fn flush(&self) {}
}

fn init_logging() {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
    // With panic = "abort" a panic still kills the VM; at least say where.
    std::panic::set_hook(Box::new(|info| {
        abi::log(5, &format!("envoy-ai-proxy: {info}"))
    }));
}

/// Formats only what Envoy will print: follow the host's log level.
fn sync_log_level() {
    let filter = match abi::log_level() {
        Ok(0) => log::LevelFilter::Trace,
        Ok(1) => log::LevelFilter::Debug,
        Ok(2) => log::LevelFilter::Info,
        Ok(3) => log::LevelFilter::Warn,
        Ok(4) => log::LevelFilter::Error,
        Ok(_) => log::LevelFilter::Off,
        Err(_) => log::LevelFilter::Info,
    };
    log::set_max_level(filter);
}

struct Root {
    config: Option<Rc<Shared>>,
    /// Active health checks, when any instance has them.
    prober: Option<prober::Prober>,
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        if let (Some(p), Some(shared)) = (self.prober.as_mut(), self.config.as_ref()) {
            p.on_response(shared, token_id, body_size);
        }
    }
}

impl RootContext for Root {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        sync_log_level();
        true
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        sync_log_level();
        let bytes = match abi::buffer(abi::PLUGIN_CONFIGURATION, 0, usize::MAX) {
            Ok(b) => b.unwrap_or_default(),
            Err(s) => {
                log::error!("envoy-ai-proxy: cannot read the plugin configuration: {s}");
                return false;
            }
        };
        match config::parse(&bytes) {
            Ok(c) => {
                log::info!(
                    "envoy-ai-proxy: configured with {} instance(s)",
                    c.instances.len()
                );
                // Counters belong to this filter configuration: its plugin name and content.
                let plugin_name = abi::property(&["plugin_name"])
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                let mut id = plugin_name;
                id.push(0);
                id.extend_from_slice(&bytes);
                let scope = format!("{:016x}", hash_bytes(&id));
                let counters = flow::counters(&c, &scope);
                // Seed before any traffic, so every charge has a CAS token.
                for (_, _, key, _) in &counters {
                    if let Err(e) = ratelimit::seed(&SharedData, key) {
                        log::warn!("envoy-ai-proxy: cannot seed counter {key}: {e}");
                    }
                }
                let active = c.instances.iter().any(|i| i.active_check.is_some());
                let checks = active || c.instances.iter().any(|i| i.passive_check.is_some());
                let tick = if active {
                    prober::TICK_MS
                } else if checks || !counters.is_empty() {
                    1000
                } else {
                    0
                };
                if tick > 0 {
                    if let Err(s) = abi::set_tick_period_ms(tick) {
                        log::warn!("envoy-ai-proxy: no tick for probes and gauges: {s}");
                    }
                }
                let shared = Rc::new(Shared {
                    config: c,
                    rr: Cell::new(RoundRobin::default()),
                    scope,
                    counters,
                });
                if checks {
                    prober::Prober::seed(&shared);
                }
                self.prober = active.then(prober::Prober::new);
                self.config = Some(shared);
                true
            }
            Err(e) => {
                log::error!("envoy-ai-proxy: invalid plugin configuration: {e}");
                false
            }
        }
    }

    /// Every second, the token counters as gauges, read from shared data: every VM writes
    /// the same values, so the gauges show the shared counts.
    fn on_tick(&mut self) {
        let Some(shared) = self.config.clone() else {
            return;
        };
        if let Some(p) = self.prober.as_mut() {
            p.tick(&shared);
        }
        let down = flow::unhealthy(
            &shared.config,
            &shared.scope,
            &SharedData,
            abi::now_ns() / 1_000_000,
        );
        for (inst, down) in shared.config.instances.iter().zip(down) {
            if inst.active_check.is_some() || inst.passive_check.is_some() {
                gauge(
                    &name::healthy(&metrics::label(&inst.name)),
                    u64::from(!down),
                );
            }
        }
        let now = now_secs();
        for (index, consumer, key, limit) in &shared.counters {
            let used = ratelimit::read(&SharedData, key, now, limit.window_secs).used;
            let instance = shared
                .config
                .instances
                .get(*index)
                .map_or(String::new(), |i| metrics::label(&i.name));
            let consumer = consumer
                .as_deref()
                .map_or("all".to_string(), metrics::label);
            gauge(&name::ratelimit_used(&instance, &consumer), used);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Never `None`: the SDK panics on it. Without a configuration the filter fails closed.
        Some(Box::new(http::Filter::new(context_id, self.config.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
