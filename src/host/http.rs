//! The per-request context: reads what each phase offers, asks `flow` what to do, and applies
//! the answer with non-panicking host calls. The first attempt goes through the route;
//! fallbacks are callouts whose answer replaces the failed one.

use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use super::abi::{self, Status};
use super::account::{request_payload, set_state_value, Accounting, Answer};
use super::{count, now_secs, Shared, SharedData};
use crate::balancer::key::{self, RequestAttrs};
use crate::balancer::{hash_bytes, Algorithm};
use crate::config::Config;
use crate::error::ProxyError;
use crate::fallback::{self, Failure, GiveUp};
use crate::flow::{self, Availability, RequestHead};
use crate::health::{self, Outcome, PassiveState};
use crate::metrics::{self, name};
use crate::provider::shape::Upstream;
use crate::ratelimit::{self, Quota};

/// Envoy's total timeout for the request; the filter's value replaces any client's.
const TIMEOUT_HEADER: &str = "x-envoy-upstream-rq-timeout-ms";

enum State {
    /// Nothing seen yet.
    Start,
    /// Headers accepted and paused; buffering the body.
    AwaitingBody,
    /// The request went upstream through the route, to this instance.
    Forwarded(usize),
    /// A fallback callout to this instance is under way; the failed answer is held.
    FallingBack(usize),
    /// The filter answered the client itself.
    Replied,
    /// Envoy answered for the upstream (timeout, refused connection): the plain-text body is
    /// being replaced by this error.
    RewritingLocalReply(ProxyError),
}

/// What a fallback needs from the original request. Kept only when the configuration can
/// retry an answer.
struct Retry {
    body: Vec<u8>,
    client_headers: Vec<(String, String)>,
    tried: Vec<bool>,
    failures: Vec<Failure>,
    /// Failures already counted in the fallback metric.
    counted: usize,
    attempt_started_ns: u64,
}

pub struct Filter {
    id: u32,
    shared: Option<Rc<Shared>>,
    state: State,
    /// Consistent-hashing key hash of this request (0 for round robin).
    hash: u64,
    /// Client headers, captured before any change, when a fallback may need them.
    client_headers: Vec<(String, String)>,
    retry: Option<Retry>,
    acct: Accounting,
    /// The consumer, from `consumer_header` (set by an authenticating filter).
    consumer: Option<String>,
    /// Per instance, the quota to show in the response headers (from admission).
    shown: Vec<Option<Quota>>,
    charged: bool,
    /// The client sent the body chunked (no content-length).
    chunked: bool,
}

impl Filter {
    pub fn new(id: u32, shared: Option<Rc<Shared>>) -> Filter {
        Filter {
            id,
            shared,
            state: State::Start,
            hash: 0,
            client_headers: Vec::new(),
            retry: None,
            acct: Accounting::default(),
            consumer: None,
            shown: Vec::new(),
            charged: false,
            chunked: false,
        }
    }

    fn reply(&mut self, err: &ProxyError) -> Action {
        log::debug!("[{}] answering {} ({})", self.id, err.status(), err.code());
        let mut owned: Vec<(String, String)> = err
            .headers()
            .into_iter()
            .map(|(n, v)| (n.to_string(), v))
            .collect();
        if matches!(err, ProxyError::RateLimited { .. }) {
            // Every limited instance's quota, so the client sees what ran out.
            if let Some(shared) = self.shared.as_ref() {
                for (inst, q) in shared.config.instances.iter().zip(&self.shown) {
                    if let Some(q) = q {
                        owned.extend(flow::quota_headers(&inst.name, q));
                    }
                }
            }
        }
        let mut headers = vec![("content-type", "application/json")];
        headers.extend(owned.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        self.send(err.status(), &headers, &err.body());
        Action::Pause
    }

    /// This request's token limits, read from shared data (`None` without limits).
    fn admission<'c>(&self, shared: &'c Shared) -> Option<flow::Admission<'c>> {
        let config = &shared.config;
        config.rate_limits.any().then(|| {
            flow::admission(
                config,
                &shared.scope,
                self.consumer.as_deref(),
                &SharedData,
                now_secs(),
            )
        })
    }

    /// The quota headers of the instance that answers.
    fn answer_quota_headers(&self, index: usize) -> Vec<(String, String)> {
        let (Some(shared), Some(Some(q))) = (self.shared.as_ref(), self.shown.get(index)) else {
            return Vec::new();
        };
        shared
            .config
            .instances
            .get(index)
            .map(|inst| flow::quota_headers(&inst.name, q).to_vec())
            .unwrap_or_default()
    }

    /// The answer is complete: account for it, and charge its tokens to the limits of the
    /// instance that gave it.
    fn completed(&mut self) {
        self.acct.complete();
        if self.charged {
            return;
        }
        self.charged = true;
        let (Some(shared), Some(answer)) = (self.shared.as_ref(), self.acct.answer.as_ref()) else {
            return;
        };
        let config = &shared.config;
        if !config.rate_limits.any() {
            return;
        }
        let usage = self.acct.usage();
        let now = now_secs();
        for (key, limit, tokens) in flow::charges(
            config,
            &shared.scope,
            self.consumer.as_deref(),
            answer.index,
            &usage,
        ) {
            if tokens == 0 {
                continue;
            }
            if let Err(e) = ratelimit::charge(&SharedData, &key, now, limit.window_secs, tokens) {
                log::warn!(
                    "[{}] could not charge {tokens} tokens to {key}: {e}",
                    self.id
                );
            }
        }
    }

    /// Sends a local reply. The state changes first: the reply passes through this
    /// filter's response callbacks too.
    fn send(&mut self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        self.state = State::Replied;
        self.acct.status = status;
        if let Err(s) = abi::send_response(status, headers, body) {
            log::warn!("[{}] could not send the {status} reply: {s}", self.id);
        }
    }

    /// The whole body is buffered: pick an instance, shape the request, send it on.
    fn forward(&mut self, shared: &Shared, body_size: usize) -> Action {
        let config = &shared.config;
        let body = match abi::buffer(abi::REQUEST_BODY, 0, body_size) {
            Ok(b) => b.unwrap_or_default(),
            Err(s) => return self.reply(&internal("read the request body", s)),
        };
        let tried = vec![false; config.instances.len()];
        let payloads = config.logging.payloads;
        let limits = self.admission(shared);
        if let Some(l) = &limits {
            self.shown = (0..config.instances.len()).map(|i| l.shown(i)).collect();
        }
        let unhealthy = health_now(shared);
        let planned = flow::read_request(&body).and_then(|req| {
            let avail = Availability {
                tried: &tried,
                limits: limits.as_ref(),
                unhealthy: &unhealthy,
            };
            let index =
                shared.with_rr(|rr| flow::pick(config, rr, self.hash, req.client.kind, &avail))?;
            let (instance, up) = flow::shape_for(config, index, &req)?;
            apply(config, &up, body.len(), self.chunked)?;
            log::debug!(
                "[{}] {} request to instance {} (cluster {})",
                self.id,
                req.client.kind.name(),
                instance.name,
                up.cluster
            );
            let answer = Answer::new(index, &req.client, instance, &up, 1, String::new());
            let payload = payloads
                .then(|| request_payload(req.body.raw("messages").or(req.body.raw("input"))))
                .flatten();
            Ok((index, answer, payload))
        });
        let (index, answer, payload) = match planned {
            Ok(p) => p,
            Err(e) => {
                if matches!(e, ProxyError::Internal(_)) {
                    log::error!("[{}] {}", self.id, e.message());
                }
                if matches!(e, ProxyError::RateLimited { .. }) {
                    for (i, inst) in config.instances.iter().enumerate() {
                        if limits.as_ref().is_some_and(|l| l.exhausted(i)) {
                            count(&name::ratelimit_rejections(&metrics::label(&inst.name)), 1);
                        }
                    }
                }
                return self.reply(&e);
            }
        };
        answer.record_request();
        self.acct.answer = Some(answer);
        self.acct.request_payload = payload;
        let now = abi::now_ns();
        self.acct.first_sent_ns = now;
        self.acct.sent_ns = now;
        if config.fallback.retries_answers() && config.instances.len() > 1 {
            self.retry = Some(Retry {
                body,
                client_headers: std::mem::take(&mut self.client_headers),
                tried,
                failures: Vec::new(),
                counted: 0,
                attempt_started_ns: now,
            });
        }
        self.state = State::Forwarded(index);
        Action::Continue
    }

    /// Records a failed attempt and starts the next one if the policy and the instances
    /// allow. Returns whether a callout is now under way.
    fn try_next(&mut self, shared: &Shared, failure: Failure) -> bool {
        let Some(mut retry) = self.retry.take() else {
            return false;
        };
        let next = self.start_next(shared, &mut retry, failure);
        self.retry = Some(retry);
        match next {
            Some(index) => {
                self.state = State::FallingBack(index);
                true
            }
            None => false,
        }
    }

    fn start_next(&self, shared: &Shared, retry: &mut Retry, failure: Failure) -> Option<usize> {
        let config = &shared.config;
        let now = abi::now_ns();
        let attempt_ms = now.saturating_sub(retry.attempt_started_ns) / 1_000_000;
        if let Some(t) = retry.tried.get_mut(failure.instance) {
            *t = true;
        }
        log::debug!(
            "[{}] instance {} failed ({}) after {attempt_ms} ms",
            self.id,
            failure.instance,
            failure.reason
        );
        retry.failures.push(failure);
        let req = flow::read_request(&retry.body).ok()?;
        let mut retries_done =
            u32::try_from(retry.failures.len().saturating_sub(1)).unwrap_or(u32::MAX);
        let mut may = config.fallback.may_retry(retries_done, attempt_ms);
        let limits = self.admission(shared);
        let unhealthy = health_now(shared);
        while may {
            let avail = Availability {
                tried: &retry.tried,
                limits: limits.as_ref(),
                unhealthy: &unhealthy,
            };
            let index = shared
                .with_rr(|rr| flow::pick(config, rr, self.hash, req.client.kind, &avail))
                .ok()?;
            let (instance, up) = flow::shape_for(config, index, &req).ok()?;
            let body = up
                .body
                .as_deref()
                .map_or(retry.body.as_slice(), str::as_bytes);
            let headers = flow::callout_headers(config, &up, &retry.client_headers, body.len());
            let header_refs: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            let timeout = Duration::from_millis(config.timeout_ms);
            // Through the SDK, which must register the token to route the answer here; it
            // returns Envoy's failures for callouts (BadArgument, InternalFailure) as values.
            match self.dispatch_http_call(up.cluster, header_refs, Some(body), vec![], timeout) {
                Ok(_) => {
                    retry.attempt_started_ns = now;
                    log::debug!("[{}] falling back to instance {}", self.id, instance.name);
                    for f in retry.failures.iter().skip(retry.counted) {
                        let failed = config.instances.get(f.instance).map_or("", |i| &i.name);
                        count(
                            &name::fallbacks(&metrics::label(failed), &metrics::label(&f.reason)),
                            1,
                        );
                    }
                    retry.counted = retry.failures.len();
                    return Some(index);
                }
                Err(s) => {
                    log::warn!(
                        "[{}] cannot call cluster {} of instance {}: {s:?}",
                        self.id,
                        up.cluster,
                        instance.name
                    );
                    if let Some(t) = retry.tried.get_mut(index) {
                        *t = true;
                    }
                    observe(shared, self.id, index, Outcome::ConnectFailure, None);
                    retry.failures.push(Failure {
                        instance: index,
                        status: 503,
                        retry_after: None,
                        reason: "callout_failed".into(),
                    });
                    retries_done = retries_done.saturating_add(1);
                    may = config.fallback.may_retry(retries_done, 0);
                }
            }
        }
        None
    }

    /// Every attempt failed and no other may be made: 429 if all said 429, else 502 with
    /// the last answer.
    fn give_up(&mut self, last_headers: &[(String, String)], last_body: &[u8]) {
        let Some(retry) = self.retry.as_ref() else {
            return;
        };
        let attempts = retry.failures.len();
        let reasons = reasons(&retry.failures);
        set_state_value("llm_attempts", &attempts.to_string());
        set_state_value("llm_fallback_reason", &reasons);
        match fallback::give_up(&retry.failures) {
            GiveUp::AllRateLimited { retry_after } => {
                let ra = retry_after.map(|s| s.to_string());
                let mut headers = vec![("content-type", "application/json")];
                if let Some(ra) = ra.as_deref() {
                    headers.push(("retry-after", ra));
                }
                self.send(429, &headers, &fallback::all_rate_limited_body(attempts));
            }
            GiveUp::BadGateway => {
                let headers: Vec<(&str, &str)> = last_headers
                    .iter()
                    .filter(|(n, _)| n == "content-type")
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect();
                self.send(502, &headers, last_body);
            }
        }
    }
}

/// Which instances the health checks have taken out right now (empty without checks).
fn health_now(shared: &Shared) -> Vec<bool> {
    let config = &shared.config;
    if !config
        .instances
        .iter()
        .any(|i| i.active_check.is_some() || i.passive_check.is_some())
    {
        return Vec::new();
    }
    flow::unhealthy(
        config,
        &shared.scope,
        &SharedData,
        abi::now_ns() / 1_000_000,
    )
}

/// A real answer from instance `index` feeds its passive check (compare-and-swap, so every
/// worker's observations count).
fn observe(shared: &Shared, id: u32, index: usize, outcome: Outcome, retry_after: Option<u64>) {
    let Some(inst) = shared.config.instances.get(index) else {
        return;
    };
    let Some(check) = inst.passive_check.as_ref() else {
        return;
    };
    let (_, key) = flow::health_keys(&shared.scope, &inst.name);
    let now_ms = abi::now_ns() / 1_000_000;
    for _ in 0..ratelimit::MAX_CAS_RETRIES {
        let Ok((value, cas)) = abi::shared_data(&key) else {
            return;
        };
        let state = value
            .as_deref()
            .and_then(PassiveState::decode)
            .unwrap_or_default();
        let Some((next, taken_out)) = state.after(check, outcome, retry_after, now_ms) else {
            return;
        };
        match abi::set_shared_data(&key, &next.encode(), cas) {
            Ok(()) => {
                if taken_out {
                    log::warn!(
                        "[{id}] envoy-ai-proxy: instance {} taken out for {} ms after {:?}",
                        inst.name,
                        next.down_until_ms.saturating_sub(now_ms),
                        outcome
                    );
                }
                return;
            }
            Err(s) if s.0 == abi::CAS_MISMATCH => continue,
            Err(s) => {
                log::debug!("[{id}] passive health of {} not saved: {s}", inst.name);
                return;
            }
        }
    }
}

/// What an answer through the route says of the instance: Envoy's own replies tell a
/// timeout or a failed connection from a real status.
fn route_outcome(status: u32, details: Option<&str>) -> Outcome {
    match details {
        Some("response_timeout") | Some("upstream_per_try_timeout") => Outcome::Timeout,
        Some(d)
            if d.starts_with("upstream_reset_before_response_started")
                || d == "no_healthy_upstream" =>
        {
            Outcome::ConnectFailure
        }
        _ => Outcome::Status(status),
    }
}

fn reasons(failures: &[Failure]) -> String {
    failures
        .iter()
        .map(|f| f.reason.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn internal(what: &str, status: Status) -> ProxyError {
    ProxyError::Internal(format!("could not {what} ({status})"))
}

fn set_request_header(name: &str, value: &str) -> Result<(), ProxyError> {
    abi::set_header(abi::REQUEST_HEADERS, name, value)
        .map_err(|s| internal(&format!("set request header `{name}`"), s))
}

fn remove_request_header(name: &str) -> Result<(), ProxyError> {
    abi::remove_header(abi::REQUEST_HEADERS, name)
        .map_err(|s| internal(&format!("remove request header `{name}`"), s))
}

/// Rewrites the paused request for its upstream. Any failure stops the request: a request
/// half-shaped (say, without its routing header) must not go out.
fn apply(
    config: &Config,
    up: &Upstream<'_>,
    body_size: usize,
    chunked: bool,
) -> Result<(), ProxyError> {
    set_request_header(&config.cluster_header, up.cluster)?;
    set_request_header(":authority", up.authority)?;
    set_request_header(":path", up.path)?;
    // Setting an `authorization` auth header replaces the client's anyway.
    if up.drop_client_authorization && !up.auth_headers.iter().any(|(n, _)| n == "authorization") {
        remove_request_header("authorization")?;
    }
    for (name, value) in up.auth_headers {
        set_request_header(name, value)?;
    }
    // `timeout` bounds a whole answer. A stream may rightly run for minutes, so for streams
    // the total limit is lifted and the route's `idle_timeout` bounds the silence instead.
    let timeout_ms = if up.stream { 0 } else { config.timeout_ms };
    set_request_header(TIMEOUT_HEADER, &timeout_ms.to_string())?;
    // A client's per-try timeout can only shorten its own request (Envoy caps it at the
    // total, which the filter sets): it is left alone.
    if let Some(new_body) = &up.body {
        abi::set_buffer(abi::REQUEST_BODY, 0, body_size, new_body.as_bytes())
            .map_err(|s| internal("replace the request body", s))?;
        // Envoy does not fix content-length after a body change; a stale one desynchronises
        // the upstream connection.
        set_request_header("content-length", &new_body.len().to_string())?;
        if chunked {
            remove_request_header("transfer-encoding")?;
        }
    }
    Ok(())
}

/// A header of a map read with `abi::headers` (names are lower case).
fn header_in<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Request attributes for the consistent-hashing key: the request's headers, and the
/// client address (read only when the key needs it).
struct MapAttrs<'h>(&'h [(String, String)]);

impl RequestAttrs for MapAttrs<'_> {
    fn header(&self, name: &str) -> Option<String> {
        header_in(self.0, name).map(str::to_string)
    }

    fn source_address(&self) -> Option<String> {
        abi::property(&["source", "address"])
            .ok()
            .flatten()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }
}

impl Context for Filter {
    fn on_http_call_response(
        &mut self,
        _token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let State::FallingBack(index) = self.state else {
            return;
        };
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let headers = abi::headers(abi::CALL_RESPONSE_HEADERS).unwrap_or_default();
        let body = abi::buffer(abi::CALL_RESPONSE_BODY, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        let status = header(":status")
            .and_then(|s| s.parse::<u32>().ok())
            .unwrap_or(0);
        // Envoy answers a callout it could not complete with 503 (reset) or 504 (timeout).
        let outcome = health::classify_callout(status, &body);
        let retry_after = header("retry-after").and_then(fallback::retry_after_secs);
        observe(&shared, self.id, index, outcome, retry_after);
        let failed = status == 0 || shared.config.fallback.is_retriable(status);
        if failed {
            let failure = Failure {
                instance: index,
                status,
                retry_after,
                reason: outcome.reason(),
            };
            if self.try_next(&shared, failure) {
                return;
            }
            self.give_up(&headers, &body);
            return;
        }

        // Served: the client gets this answer in place of the failed one.
        if let Some(retry) = self.retry.as_ref() {
            if let Ok(req) = flow::read_request(&retry.body) {
                if let Ok((instance, up)) = flow::shape_for(&shared.config, index, &req) {
                    let answer = Answer::new(
                        index,
                        &req.client,
                        instance,
                        &up,
                        retry.failures.len() + 1,
                        reasons(&retry.failures),
                    );
                    answer.record_request();
                    self.acct.answer = Some(answer);
                    self.acct.sent_ns = retry.attempt_started_ns;
                }
            }
        }
        self.acct.begin_response(
            status,
            header("content-type"),
            shared.config.logging.payloads,
        );
        let out = self.acct.chunk(&body, true);
        self.completed();
        let quota = self.answer_quota_headers(index);
        let replay: Vec<(&str, &str)> = headers
            .iter()
            .filter(|(n, _)| flow::replayable_response_header(n))
            .chain(quota.iter())
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        self.send(status, &replay, out.as_deref().unwrap_or(&body));
    }
}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            return self.reply(&ProxyError::NotConfigured);
        };
        let config = &shared.config;
        self.acct.started_ns = abi::now_ns();
        // A client must never choose the cluster: drop its routing header before anything.
        if let Err(e) = remove_request_header(&config.cluster_header) {
            log::error!("[{}] {}", self.id, e.message());
            return self.reply(&e);
        }
        // One read of the whole map: each host read costs about as much as a dozen writes.
        let headers = abi::headers(abi::REQUEST_HEADERS).unwrap_or_default();
        let get = |name: &str| header_in(&headers, name);
        let head = RequestHead {
            method: get(":method"),
            content_type: get("content-type"),
            content_length: get("content-length"),
            end_of_stream,
        };
        if let Err(e) = flow::check_head(config, &head) {
            return self.reply(&e);
        }
        self.chunked = get("transfer-encoding").is_some();
        if let (Algorithm::ConsistentHash, Some(source)) =
            (config.balancer.algorithm(), config.hash_key.as_ref())
        {
            let key = key::resolve(source, &MapAttrs(&headers), &config.consumer_header);
            self.hash = hash_bytes(key.as_bytes());
        }
        if !config.rate_limits.consumers.is_empty() {
            self.consumer = get(&config.consumer_header)
                .filter(|c| !c.is_empty())
                .map(str::to_string);
        }
        if config.fallback.retries_answers() && config.instances.len() > 1 {
            // As the client sent them: a fallback must not inherit the first instance's edits.
            self.client_headers = headers;
        }
        // Routing is decided from the body: hold the headers (this needs
        // `allow_on_headers_stop_iteration: true` in the Wasm filter config).
        self.state = State::AwaitingBody;
        Action::Pause
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !matches!(self.state, State::AwaitingBody) {
            return Action::Continue;
        }
        let Some(shared) = self.shared.clone() else {
            return self.reply(&ProxyError::NotConfigured);
        };
        if let Err(e) = flow::check_body_size(&shared.config, body_size) {
            return self.reply(&e);
        }
        if !end_of_stream {
            return Action::Pause;
        }
        self.forward(&shared, body_size)
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        // A body that ends with trailers never reported end_of_stream: finish here.
        if !matches!(self.state, State::AwaitingBody) {
            return Action::Continue;
        }
        let Some(shared) = self.shared.clone() else {
            return self.reply(&ProxyError::NotConfigured);
        };
        let size = match abi::buffer(abi::REQUEST_BODY, 0, usize::MAX) {
            Ok(b) => b.map_or(0, |b| b.len()),
            Err(s) => return self.reply(&internal("read the request body", s)),
        };
        if let Err(e) = flow::check_body_size(&shared.config, size) {
            return self.reply(&e);
        }
        self.forward(&shared, size)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let State::Forwarded(index) = self.state else {
            return Action::Continue;
        };
        // One read of the whole map (see the request side).
        let headers = abi::headers(abi::RESPONSE_HEADERS).unwrap_or_default();
        let status = header_in(&headers, ":status")
            .and_then(|s| s.parse::<u32>().ok())
            .unwrap_or(0);
        let details = if status >= 500 {
            abi::property(&["response", "code_details"])
                .ok()
                .flatten()
                .map(|d| String::from_utf8_lossy(&d).into_owned())
        } else {
            None
        };

        if let Some(shared) = self.shared.clone() {
            let retry_after =
                header_in(&headers, "retry-after").and_then(fallback::retry_after_secs);
            observe(
                &shared,
                self.id,
                index,
                route_outcome(status, details.as_deref()),
                retry_after,
            );
            if self.retry.is_some() && shared.config.fallback.is_retriable(status) {
                let failure = Failure {
                    instance: index,
                    status,
                    retry_after,
                    reason: fallback::reason(status, details.as_deref()),
                };
                if self.try_next(&shared, failure) {
                    // Hold the failed answer; the callout's answer replaces it.
                    return Action::Pause;
                }
            }
        }

        if let Some(err) = details.as_deref().and_then(flow::local_reply_error) {
            // Envoy answered for the upstream: no tokens to read, the body is replaced.
            self.acct.status = status;
            if end_of_stream {
                self.acct.complete();
                return Action::Continue;
            }
            let rewritten =
                abi::set_header(abi::RESPONSE_HEADERS, "content-type", "application/json")
                    .and_then(|()| abi::remove_header(abi::RESPONSE_HEADERS, "content-length"));
            match rewritten {
                Ok(()) => self.state = State::RewritingLocalReply(err),
                Err(s) => log::debug!("[{}] local reply left as is: {s}", self.id),
            }
            return Action::Continue;
        }

        for (n, v) in self.answer_quota_headers(index) {
            if let Err(s) = abi::set_header(abi::RESPONSE_HEADERS, &n, &v) {
                log::debug!("[{}] quota header {n} not set: {s}", self.id);
            }
        }
        let payloads = self
            .shared
            .as_ref()
            .is_some_and(|s| s.config.logging.payloads);
        let content_type = header_in(&headers, "content-type");
        self.acct.begin_response(status, content_type, payloads);
        if self.acct.rewrites_body() {
            // The usage-only event will be cut out: the length changes.
            if let Err(s) = abi::remove_header(abi::RESPONSE_HEADERS, "content-length") {
                log::debug!("[{}] content-length kept: {s}", self.id);
            }
        }
        if end_of_stream {
            self.completed();
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match &self.state {
            // The failed answer must stay held until the callout's answer replaces it.
            State::FallingBack(_) => Action::Pause,
            State::RewritingLocalReply(err) => {
                if !end_of_stream {
                    return Action::Pause;
                }
                if let Err(s) = abi::set_buffer(abi::RESPONSE_BODY, 0, body_size, &err.body()) {
                    log::debug!("[{}] local reply body left as is: {s}", self.id);
                }
                self.state = State::Replied;
                self.acct.complete();
                Action::Continue
            }
            State::Forwarded(_) => {
                let chunk = match abi::buffer(abi::RESPONSE_BODY, 0, body_size) {
                    Ok(c) => c.unwrap_or_default(),
                    Err(s) => {
                        log::debug!("[{}] response body not readable: {s}", self.id);
                        Vec::new()
                    }
                };
                if let Some(out) = self.acct.chunk(&chunk, end_of_stream) {
                    if let Err(s) = abi::set_buffer(abi::RESPONSE_BODY, 0, body_size, &out) {
                        log::warn!("[{}] could not rewrite the stream chunk: {s}", self.id);
                    }
                }
                if end_of_stream {
                    self.completed();
                }
                Action::Continue
            }
            _ => Action::Continue,
        }
    }

    fn on_log(&mut self) {
        let logging = self
            .shared
            .as_ref()
            .map(|s| s.config.logging)
            .unwrap_or_default();
        self.acct.finish(logging.summaries, logging.payloads);
    }
}
