//! The life of one request as a pure state machine: each proxy-wasm callback becomes an
//! `Input`, and the machine answers with `Effect`s and Continue or Pause. The request side
//! (`request`) checks, picks and shapes; the response side (`response`) meters, falls back
//! and rewrites Envoy's own replies; `account` keeps the books. The host only applies what
//! comes out.

mod account;
mod admit;
pub mod pick;
mod request;
mod response;

use std::cell::Cell;
use std::rc::Rc;

use crate::balancer::{hash_bytes, RoundRobin};
use crate::config::Config;
use crate::effect::{Effect, Host, Input, LocalReply, Out, Purpose};
use crate::error::ProxyError;
use crate::fallback::Failure;
use crate::headers::Headers;
use crate::health;
use crate::metrics::Models;
use crate::outcome::Cause;
use crate::protocol;
use crate::provider::ApiKind;
use crate::quota::{self, Admission, Ctx, Hold};
use crate::ratelimit::Quota;
use crate::usage::Usage;

use account::Accounting;

/// One filter configuration in one VM: the parsed configuration, the names of its shared
/// state, its quota backend, and this worker's round-robin position and model labels (one
/// VM per worker thread, so no locking).
pub struct Plugin {
    pub config: Config,
    /// Names this configuration's counters and health in shared data: its plugin name and
    /// content.
    pub scope: String,
    pub quota: Option<Box<dyn quota::Backend>>,
    rr: Cell<RoundRobin>,
    models: Cell<Models>,
    consumers: Cell<Models>,
    /// The keys of its health states in shared data, made once.
    pub health_keys: health::shared::Keys,
    /// The health states this worker read last (see `health::shared::seed_generation`).
    health: Cell<health::shared::Cache>,
}

impl Plugin {
    pub fn new(config: Config, plugin_name: &[u8], raw_config: &[u8]) -> Plugin {
        let mut id = plugin_name.to_vec();
        id.push(0);
        id.extend_from_slice(raw_config);
        let scope = format!("{:016x}", hash_bytes(&id));
        let quota = quota::backend(&config, &scope);
        let health_keys = health::shared::Keys::new(&config, &scope);
        Plugin {
            config,
            scope,
            quota,
            health_keys,
            rr: Cell::new(RoundRobin::default()),
            models: Cell::new(Models::default()),
            consumers: Cell::new(Models::default()),
            health: Cell::default(),
        }
    }

    /// Runs `f` with the round-robin state (taken out and put back: no borrow can fail).
    fn with_rr<T>(&self, f: impl FnOnce(&mut RoundRobin) -> T) -> T {
        let mut rr = self.rr.take();
        let out = f(&mut rr);
        self.rr.set(rr);
        out
    }

    /// The stat-name label for a model (bounded; see `metrics::MAX_MODELS`).
    pub fn model_label(&self, model: &str) -> String {
        label_in(&self.models, model)
    }

    /// The stat-name label for a consumer (bounded the same way).
    pub fn consumer_label(&self, consumer: &str) -> String {
        label_in(&self.consumers, consumer)
    }

    fn quota_ctx<'a>(&'a self, consumer: Option<&'a str>, estimate: Option<Usage>) -> Ctx<'a> {
        Ctx {
            config: &self.config,
            scope: &self.scope,
            consumer,
            estimate,
        }
    }

    /// This request's token limits (`None` without limits).
    fn admission(&self, consumer: Option<&str>, host: &dyn Host) -> Option<Admission> {
        let q = self.quota.as_ref()?;
        Some(q.admission(&self.quota_ctx(consumer, None), host))
    }

    fn unhealthy(&self, host: &dyn Host) -> Vec<bool> {
        let now_ms = host.now_ns() / 1_000_000;
        let mut cache = self.health.take();
        let store = host.store();
        let out = health::shared::unhealthy_cached(
            &self.config,
            &self.health_keys,
            store,
            now_ms,
            &mut cache,
        );
        self.health.set(cache);
        out
    }

    /// A real answer (or a failure to get one) from instance `index` feeds its passive check.
    fn observe(&self, index: usize, cause: Cause, retry_after: Option<u64>, host: &dyn Host) {
        let now_ms = host.now_ns() / 1_000_000;
        let store = host.store();
        health::shared::observe(
            &self.config,
            &self.health_keys,
            store,
            index,
            cause.health(),
            retry_after,
            now_ms,
        );
    }
}

fn label_in(cell: &Cell<Models>, value: &str) -> String {
    let mut m = cell.take();
    let l = m.label(value);
    cell.set(m);
    l
}

enum Phase {
    /// Nothing seen yet.
    Start,
    /// Headers accepted and paused; buffering the body.
    AwaitingBody,
    /// The quota service is asked whether this instance may take the request (its token,
    /// once dispatched); the request waits, paused.
    Admitting {
        index: usize,
        token: Option<u32>,
        body: Vec<u8>,
    },
    /// The request went upstream through the route, to this instance.
    Forwarded(usize),
    /// A fallback callout to this instance is under way (its token, once dispatched); the
    /// failed answer is held.
    FallingBack { index: usize, token: Option<u32> },
    /// The filter answered the client itself.
    Replied,
    /// Envoy answered for the upstream (timeout, refused connection): the plain-text body is
    /// being replaced by this error.
    RewritingLocalReply(ProxyError),
    /// The exchange is over; late callout answers are ignored.
    Done,
}

/// The route's failed answer, held while a fallback is being started: passed on if no
/// other attempt can be made.
struct Held {
    index: usize,
    status: u32,
    cause: Cause,
    content_type: Option<String>,
    end_of_stream: bool,
}

/// What a fallback needs from the original request. Kept only when the configuration can
/// retry an answer.
struct Retry {
    body: Vec<u8>,
    client_headers: Headers,
    tried: Vec<bool>,
    failures: Vec<Failure>,
    /// Failures already counted in the fallback metric.
    counted: usize,
    attempt_started_ns: u64,
    held: Option<Held>,
    /// The last failed callout answer's content type and body (a 502 carries them).
    last: (Option<String>, Vec<u8>),
}

pub struct Exchange {
    plugin: Option<Rc<Plugin>>,
    phase: Phase,
    /// Consistent-hashing key hash of this request (0 for round robin).
    hash: u64,
    /// The consumer, from `consumer_header` (set by an authenticating filter).
    consumer: Option<String>,
    /// The client sent the body chunked (no content-length).
    chunked: bool,
    /// The path the client called (the upstream's may differ, and carry a key).
    client_path: String,
    /// The API the path named (`None`: the body decides).
    api: Option<ApiKind>,
    /// Client headers as sent, when a fallback may need them.
    client_headers: Headers,
    retry: Option<Retry>,
    /// What is known of the quotas (with limits).
    admission: Option<Admission>,
    acct: Accounting,
    /// Per instance, the quota to show in the response headers (from admission).
    shown: Vec<Option<Quota>>,
    /// The request's upper-bound usage, when the configuration reserves.
    estimate: Option<Usage>,
    /// What the quota backend holds for the request until it is settled or released.
    hold: Option<Hold>,
    charged: bool,
}

impl Exchange {
    pub fn new(plugin: Option<Rc<Plugin>>) -> Exchange {
        Exchange {
            plugin,
            phase: Phase::Start,
            hash: 0,
            consumer: None,
            chunked: false,
            client_path: String::new(),
            api: None,
            client_headers: Headers::default(),
            retry: None,
            admission: None,
            acct: Accounting::default(),
            shown: Vec::new(),
            estimate: None,
            hold: None,
            charged: false,
        }
    }

    /// One input; what to do about it.
    pub fn on(&mut self, input: Input, host: &dyn Host) -> Out {
        let Some(plugin) = self.plugin.clone() else {
            // Never expected: Envoy refuses a configuration the filter refused.
            return match input {
                Input::RequestHeaders { .. } => self.reply(None, &ProxyError::NotConfigured),
                _ => Out::go(Vec::new()),
            };
        };
        let p = plugin.as_ref();
        match input {
            Input::RequestHeaders { end_of_stream } => self.request_headers(p, end_of_stream, host),
            Input::RequestBody {
                size,
                end_of_stream,
            } => self.request_body(p, size, end_of_stream, host),
            Input::RequestTrailers => self.request_trailers(p, host),
            Input::ResponseHeaders { end_of_stream } => {
                self.response_headers(p, end_of_stream, host)
            }
            Input::ResponseBody {
                size,
                end_of_stream,
            } => self.response_body(p, size, end_of_stream, host),
            Input::CalloutAnswer { token, body_size } => {
                self.callout_answer(p, token, body_size, host)
            }
            Input::GrpcAnswer {
                token,
                status,
                size,
            } => self.check_answer(p, token, status, size, host),
            Input::Dispatched {
                purpose: Purpose::Fallback(index),
                result,
            } => self.dispatched(p, index, result, host),
            Input::Dispatched {
                purpose: Purpose::Quota(_),
                result,
            } => self.check_dispatched(p, result, host),
            Input::Dispatched {
                purpose: Purpose::Settle,
                result: Err(e),
            } => Out::go(p.quota.as_ref().map_or_else(Vec::new, |q| {
                q.failure(&format!("cannot send a settlement: {e}"), host)
            })),
            Input::Dispatched { .. } => Out::go(Vec::new()),
            Input::Failed(why) => {
                let err = ProxyError::Internal(format!("could not shape the request ({why})"));
                log::error!("envoy-ai-proxy: {}", err.message());
                self.reply(Some(p), &err)
            }
            Input::Log => {
                // An answer cut before it ended is still accounted for, and charged.
                let mut effects = Vec::new();
                if matches!(self.phase, Phase::Forwarded(_)) && !self.acct.is_complete() {
                    self.acct.cut = true;
                    effects = self.completed(p, host);
                }
                self.phase = Phase::Done;
                // Held for a request that got no answer to charge: given back.
                if let (Some(hold), Some(q)) = (self.hold.take(), p.quota.as_ref()) {
                    let ctx = p.quota_ctx(self.consumer.as_deref(), None);
                    effects.extend(q.release(&ctx, &hold, host));
                }
                effects.extend(self.acct.finish(p, host));
                Out::go(effects)
            }
        }
    }

    /// The filter answers the client itself. The phase changes first: the reply passes
    /// through this filter's response callbacks too.
    fn reply(&mut self, plugin: Option<&Plugin>, err: &ProxyError) -> Out {
        log::debug!(
            "envoy-ai-proxy: answering {} ({})",
            err.status(),
            err.code()
        );
        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        headers.extend(err.headers().into_iter().map(|(n, v)| (n.to_string(), v)));
        if let (ProxyError::RateLimited { .. }, Some(p)) = (err, plugin) {
            // Every limited instance's quota, so the client sees what ran out.
            for (inst, q) in p.config.instances.iter().zip(&self.shown) {
                if let Some(q) = q {
                    headers.extend(quota::quota_headers(&inst.quota_header_names, q));
                }
            }
        }
        let body = protocol::of(protocol::client_wire(self.api)).error_body(err);
        let mut out = self.send(err.status(), headers, body);
        out.effects
            .insert(0, Effect::state("llm_error_code", err.code()));
        out
    }

    fn send(&mut self, status: u32, headers: Vec<(String, String)>, body: Vec<u8>) -> Out {
        self.phase = Phase::Replied;
        self.acct.status = status;
        Out::hold(vec![Effect::Reply(LocalReply {
            status,
            headers,
            body,
        })])
    }

    /// The quota headers of the instance that answers.
    fn answer_quota_headers(&self, plugin: &Plugin, index: usize) -> Vec<(String, String)> {
        let Some(Some(q)) = self.shown.get(index) else {
            return Vec::new();
        };
        plugin
            .config
            .instances
            .get(index)
            .map(|inst| quota::quota_headers(&inst.quota_header_names, q).to_vec())
            .unwrap_or_default()
    }

    /// The answer is complete: account for it, and charge its tokens to the limits of the
    /// instance that gave it (exactly once).
    fn completed(&mut self, plugin: &Plugin, host: &dyn Host) -> Vec<Effect> {
        let mut out = self.acct.complete(plugin, host.now_ns());
        if self.charged {
            return out;
        }
        self.charged = true;
        let (Some(q), Some(answer)) = (plugin.quota.as_ref(), self.acct.answer.as_ref()) else {
            return out;
        };
        let usage = self.acct.usage();
        let ctx = plugin.quota_ctx(self.consumer.as_deref(), None);
        let hold = self.hold.take();
        out.extend(q.settle(&ctx, answer.index, &usage, hold.as_ref(), host));
        out
    }
}

#[cfg(test)]
mod tests;
