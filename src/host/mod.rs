//! The only code that talks to Envoy: the wasm entry point, the root context, and the
//! interpreter of the core's effects. It reads what a callback offers, hands it to the core
//! (`root::Root`, `exchange::Exchange`) and applies what comes back; it decides nothing.

mod abi;
mod entry;
mod http;

use std::cell::{Cell, RefCell};
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use crate::ablate;
use crate::batch::{self, Kept};
use crate::effect::{Effect, Host, Input, Map, Out, Step};
use crate::headers::Headers;
use crate::metrics::{Kind, Registry};
use crate::root::Root;
use crate::store::{Store, StoreError};
use crate::wire::{
    body_buffer, envoy_level, header_map, log_filter, status_name, CALL_RESPONSE_BODY,
    CALL_RESPONSE_HEADERS, CAS_MISMATCH, GRPC_RECEIVE_BUFFER, NOT_FOUND, PLUGIN_CONFIGURATION,
};

thread_local! {
    /// Metric ids of this VM: each definition allocates a new id in Envoy, so define once.
    static METRICS: RefCell<Registry> = RefCell::new(Registry::default());
}

fn metric(kind: Kind, name: &str, value: u64) -> Result<(), abi::Status> {
    let id = METRICS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut reg) => reg.id(name, |n| abi::define_metric(kind.abi(), n).ok()),
        Err(_) => None,
    });
    match (id, kind) {
        (None, _) => Err(abi::Status(NOT_FOUND)),
        (Some(id), Kind::Counter) => abi::increment_metric(id, value),
        (Some(id), _) => abi::record_metric(id, value),
    }
}

/// Envoy's shared data (one store for all VMs of the process).
struct SharedData;

impl Store for SharedData {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
        if !ablate::reads(key) {
            return Ok((None, None));
        }
        abi::shared_data(key).map_err(|s| StoreError::Unavailable(s.to_string()))
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        abi::set_shared_data(key, value, cas).map_err(|s| match s.0 {
            CAS_MISMATCH => StoreError::CasMismatch,
            _ => StoreError::Unavailable(s.to_string()),
        })
    }
}

/// The core's reads, as host calls, for one context. The clock is read once per callback
/// (the core asks for it several times; no duration it keeps is shorter than a callback).
/// The request's header map is kept as read and edited, so that a callback's edits are one
/// write of the whole map (`batch`).
#[derive(Default)]
struct Env {
    now_ns: Cell<u64>,
    kept: RefCell<Kept>,
}

impl Env {
    /// A new callback: the clock moves on.
    fn callback(&self) -> &Env {
        self.now_ns.set(0);
        self
    }
}

impl Host for Env {
    fn now_ns(&self) -> u64 {
        if self.now_ns.get() == 0 {
            self.now_ns.set(abi::now_ns());
        }
        self.now_ns.get()
    }
    fn store(&self) -> &dyn Store {
        &SharedData
    }
    fn headers(&self, map: Map) -> Headers {
        let headers = abi::headers(header_map(map)).unwrap_or_default();
        if map == Map::Request {
            self.kept.borrow_mut().request = Some(headers.clone());
        }
        headers
    }
    fn body(&self, map: Map, size: usize) -> Result<Vec<u8>, String> {
        if map == Map::Response && !ablate::meters() {
            return Ok(Vec::new());
        }
        abi::buffer(body_buffer(map), 0, size)
            .map(Option::unwrap_or_default)
            .map_err(|s| s.to_string())
    }
    fn callout_answer(&self, body_size: usize) -> (Headers, Vec<u8>) {
        let headers = abi::headers(CALL_RESPONSE_HEADERS).unwrap_or_default();
        (headers, abi::bytes(CALL_RESPONSE_BODY, body_size))
    }
    fn grpc_answer(&self, size: usize) -> Vec<u8> {
        abi::bytes(GRPC_RECEIVE_BUFFER, size)
    }
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        if !ablate::reads_property(path) {
            return None;
        }
        abi::property(path).ok().flatten()
    }
    fn env(&self, name: &str) -> Option<String> {
        // WASI's environment: what vm_config.environment_variables gives the VM.
        std::env::var(name).ok()
    }
}

impl batch::Apply for Env {
    fn apply(&self, effect: &Effect) -> Result<Option<Input>, String> {
        let done = match effect {
            Effect::SetHeader(map, n, v) => abi::set_header(header_map(*map), n, v),
            Effect::RemoveHeader(map, n) => abi::remove_header(header_map(*map), n),
            Effect::ReplaceBody { map, size, bytes } => {
                abi::set_buffer(body_buffer(*map), 0, *size, bytes)
            }
            Effect::Reply(r) => abi::send_response(r.status, &r.headers, &r.body),
            Effect::FilterState(n, v) => abi::set_property(n, v.as_bytes()),
            Effect::Metric { kind, name, value } => metric(*kind, name, *value),
            Effect::TickPeriod(ms) => abi::set_tick_period_ms(*ms),
            Effect::Resume => abi::resume_request(),
            Effect::Dispatch(c) => {
                // Envoy's refusals come back as values, named as the SDK named them.
                let (cluster, body) = (&c.cluster, c.body.as_deref());
                let timeout = u32::try_from(c.timeout_ms).unwrap_or(u32::MAX);
                let headers = &c.headers[..];
                let result = match &c.grpc {
                    None => abi::http_call(cluster, headers, body, timeout),
                    Some(g) => {
                        abi::grpc_call(cluster, &g.service, &g.method, headers, body, timeout)
                    }
                };
                if let Ok(token) = result {
                    // Its answer comes back to the context running now.
                    entry::dispatched(token);
                }
                let result = result.map_err(|s| status_name(s.0).to_string());
                return Ok(Some(Input::Dispatched {
                    purpose: c.purpose,
                    result,
                }));
            }
        };
        done.map(|()| None).map_err(|s| s.to_string())
    }

    fn set_request_headers(&self, map: &batch::Headers) -> Result<(), String> {
        abi::set_headers(header_map(Map::Request), map).map_err(|s| s.to_string())
    }
}

/// Applies the core's answer (`batch::drive`) and returns the last step.
fn drive(out: Out, env: &Env, again: impl FnMut(Input) -> Out) -> Step {
    batch::drive(out, env, &env.kept, again)
}

/// Routes the `log` crate to Envoy's log through the non-panicking ABI call.
struct HostLogger;

static LOGGER: HostLogger = HostLogger;

impl log::Log for HostLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) && ablate::logs(record.level()) {
            abi::log(envoy_level(record.level()), &record.args().to_string());
        }
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
    log::set_max_level(log_filter(abi::log_level().ok()));
}

/// A plugin's root context: its configuration, health checks, callouts and tick.
struct RootCtx(Root, Env);

impl RootCtx {
    fn new() -> RootCtx {
        // Random per VM (WASI random), so two VMs never share an identity.
        let id = RandomState::new().hash_one(abi::now_ns());
        RootCtx(Root::new(format!("{id:016x}")), Env::default())
    }

    /// What a new request's filter shares (none until configured: it fails closed).
    fn plugin(&self) -> Option<std::rc::Rc<crate::exchange::Plugin>> {
        self.0.plugin()
    }

    fn drive(&mut self, out: impl FnOnce(&mut Root, &Env) -> Out) {
        let env = self.1.callback();
        let out = out(&mut self.0, env);
        drive(out, env, |i| self.0.on(i, env));
    }

    /// A callout's answer.
    fn on(&mut self, input: Input) {
        self.drive(|root, env| root.on(input, env));
    }

    fn on_vm_start(&mut self) -> bool {
        sync_log_level();
        true
    }

    fn on_configure(&mut self) -> bool {
        sync_log_level();
        let raw = match abi::buffer(PLUGIN_CONFIGURATION, 0, usize::MAX) {
            Ok(b) => b.unwrap_or_default(),
            Err(s) => {
                log::error!("envoy-ai-proxy: cannot read the plugin configuration: {s}");
                return false;
            }
        };
        let name = abi::property(&["plugin_name"]).ok().flatten();
        match self.0.configure(&raw, &name.unwrap_or_default(), &self.1) {
            Ok(effects) => {
                self.drive(|_, _| Out::go(effects));
                true
            }
            Err(e) => {
                log::error!("envoy-ai-proxy: invalid plugin configuration: {e}");
                false
            }
        }
    }

    fn on_tick(&mut self) {
        self.drive(|root, env| Out::go(root.tick(env)));
    }
}
