//! The response side of an exchange: an answer through the route is classified, may be
//! replaced by the next instance's (a callout) when it failed, is metered as it passes, and
//! Envoy's own plain-text replies become the client's error shape.

use super::account::Answer;
use super::pick::{pick, Availability};
use super::request::callout_headers;
use super::{Exchange, Held, Phase, Plugin, Retry};
use crate::effect::{Callout, Effect, Host, Map, Out, Purpose};
use crate::fallback::{self, Failure, GiveUp};
use crate::metrics::{self, name};
use crate::outcome::{self, Cause};
use crate::protocol;

/// The reasons of every failed attempt, comma-separated.
fn reasons(failures: &[Failure]) -> String {
    failures
        .iter()
        .map(|f| f.reason.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// The headers of a callout's answer that may be replayed to the client: Envoy frames the
/// local reply itself.
pub fn replayable_response_header(name: &str) -> bool {
    !(name.starts_with(':')
        || matches!(
            name,
            "content-length" | "transfer-encoding" | "connection" | "keep-alive"
        ))
}

impl Exchange {
    #[inline(never)] // compiled on its own: see "Round 5" in docs/performance.md
    pub(super) fn response_headers(
        &mut self,
        plugin: &Plugin,
        end_of_stream: bool,
        host: &dyn Host,
    ) -> Out {
        let Phase::Forwarded(index) = self.phase else {
            return Out::go(Vec::new());
        };
        // One read of the whole map (see the request side).
        let headers = host.headers(Map::Response);
        let status = headers.status();
        // Envoy's own replies are 503 or 504: only then does the detail tell them apart.
        let details = (status >= 500)
            .then(|| host.property(&["response", "code_details"]))
            .flatten()
            .map(|d| String::from_utf8_lossy(&d).into_owned());
        let cause = outcome::of_route(status, details.as_deref());
        let retry_after = headers
            .get("retry-after")
            .and_then(fallback::retry_after_secs);
        plugin.observe(index, cause, retry_after, host);
        let held = Held {
            index,
            status,
            cause,
            content_type: headers.get("content-type").map(str::to_string),
            end_of_stream,
        };
        if self.retry.is_some() && plugin.config.fallback.is_retriable(status) {
            let failure = Failure {
                instance: index,
                status,
                retry_after,
                reason: cause.reason(),
            };
            if let Some(retry) = self.retry.as_mut() {
                retry.held = Some(held);
            }
            return self.fall_back(plugin, failure, host);
        }
        self.pass(plugin, held, host)
    }

    /// The route's answer goes to the client: metered, with its quota headers, or, when
    /// Envoy answered for the upstream, rewritten as an error the client can read.
    fn pass(&mut self, plugin: &Plugin, held: Held, host: &dyn Host) -> Out {
        let mut effects = Vec::new();
        if held.status >= 400 || held.cause != Cause::Answered(held.status) {
            effects.push(Effect::state("llm_error_code", held.cause.reason()));
        }
        if let Some(err) = held.cause.local_reply() {
            // No tokens to read: the body is replaced.
            self.acct.status = held.status;
            if held.end_of_stream {
                self.phase = Phase::Replied;
                return Out::go(self.acct.complete(plugin, host.now_ns()));
            }
            effects.push(Effect::SetHeader(
                Map::Response,
                "content-type".into(),
                "application/json".into(),
            ));
            effects.push(Effect::RemoveHeader(Map::Response, "content-length".into()));
            self.phase = Phase::RewritingLocalReply(err);
            return Out::go(effects);
        }
        self.phase = Phase::Forwarded(held.index);
        for (n, v) in self.answer_quota_headers(plugin, held.index) {
            effects.push(Effect::SetHeader(Map::Response, n, v));
        }
        let payloads = plugin.config.logging.payloads;
        let (status, ct) = (held.status, held.content_type.as_deref());
        self.acct
            .begin_response(status, ct, payloads, host.now_ns());
        if self.acct.rewrites_body() {
            // Events will be cut out or replaced: the length changes.
            effects.push(Effect::RemoveHeader(Map::Response, "content-length".into()));
        }
        if held.end_of_stream {
            effects.extend(self.completed(plugin, host));
        }
        Out::go(effects)
    }

    #[inline(never)] // compiled on its own: see "Round 5" in docs/performance.md
    pub(super) fn response_body(
        &mut self,
        plugin: &Plugin,
        size: usize,
        end_of_stream: bool,
        host: &dyn Host,
    ) -> Out {
        match &self.phase {
            // The failed answer must stay held until the callout's answer replaces it.
            Phase::FallingBack { .. } => Out::hold(Vec::new()),
            Phase::RewritingLocalReply(err) => {
                if !end_of_stream {
                    return Out::hold(Vec::new());
                }
                let bytes = protocol::of(protocol::client_wire(self.api)).error_body(err);
                self.phase = Phase::Replied;
                let mut effects = vec![Effect::ReplaceBody {
                    map: Map::Response,
                    size,
                    bytes,
                }];
                effects.extend(self.acct.complete(plugin, host.now_ns()));
                Out::go(effects)
            }
            Phase::Forwarded(_) => {
                let chunk = host.body(Map::Response, size).unwrap_or_else(|s| {
                    log::debug!("envoy-ai-proxy: response body not readable: {s}");
                    Vec::new()
                });
                let mut effects = Vec::new();
                if let Some(bytes) = self.acct.chunk(&chunk, end_of_stream, host.now_ns()) {
                    effects.push(Effect::ReplaceBody {
                        map: Map::Response,
                        size,
                        bytes,
                    });
                }
                if end_of_stream {
                    effects.extend(self.completed(plugin, host));
                }
                Out::go(effects)
            }
            _ => Out::go(Vec::new()),
        }
    }

    /// Records a failed attempt and starts the next one if the policy and the instances
    /// allow; else passes on the held route answer or gives up.
    fn fall_back(&mut self, plugin: &Plugin, failure: Failure, host: &dyn Host) -> Out {
        let Some(mut retry) = self.retry.take() else {
            return Out::go(Vec::new());
        };
        let now = host.now_ns();
        let attempt_ms = now.saturating_sub(retry.attempt_started_ns) / 1_000_000;
        log::debug!(
            "envoy-ai-proxy: instance {} failed ({}) after {attempt_ms} ms",
            failure.instance,
            failure.reason
        );
        if let Some(t) = retry.tried.get_mut(failure.instance) {
            *t = true;
        }
        retry.failures.push(failure);
        let next = self.next_attempt(plugin, &retry, attempt_ms, host);
        self.retry = Some(retry);
        match next {
            Some(callout) => {
                if let Purpose::Fallback(index) = callout.purpose {
                    self.phase = Phase::FallingBack { index, token: None };
                }
                Out::hold(vec![Effect::Dispatch(callout)])
            }
            None => self.stop_falling_back(plugin, host),
        }
    }

    /// The callout of the next attempt, if one may be made.
    #[inline(never)] // compiled on its own: see "Round 5" in docs/performance.md
    fn next_attempt(
        &self,
        plugin: &Plugin,
        retry: &Retry,
        attempt_ms: u64,
        host: &dyn Host,
    ) -> Option<Callout> {
        let config = &plugin.config;
        let retries_done =
            u32::try_from(retry.failures.len().saturating_sub(1)).unwrap_or(u32::MAX);
        if !config.fallback.may_retry(retries_done, attempt_ms) {
            return None;
        }
        let req = protocol::read_request(&retry.body, config, self.api).ok()?;
        let limits = plugin.admission(self.consumer.as_deref(), host);
        let unhealthy = plugin.unhealthy(host);
        let avail = Availability {
            tried: &retry.tried,
            limits: limits.as_ref(),
            unhealthy: &unhealthy,
        };
        let kind = req.client.kind;
        let index = plugin
            .with_rr(|rr| pick(config, rr, self.hash, kind, &avail))
            .ok()?;
        let instance = config.instances.get(index)?;
        let up = protocol::shape(instance, &req).ok()?;
        let body = up
            .body
            .as_ref()
            .map_or_else(|| retry.body.clone(), |p| p.apply(&retry.body));
        Some(Callout {
            purpose: Purpose::Fallback(index),
            cluster: up.cluster.to_string(),
            headers: callout_headers(config, &up, &retry.client_headers, body.len()),
            body: Some(body),
            timeout_ms: config.timeout_ms,
            grpc: None,
        })
    }

    /// What came of dispatching the fallback callout to instance `index`.
    #[inline(never)] // compiled on its own: see "Round 5" in docs/performance.md
    pub(super) fn dispatched(
        &mut self,
        plugin: &Plugin,
        index: usize,
        result: Result<u32, String>,
        host: &dyn Host,
    ) -> Out {
        match result {
            Ok(token) => {
                self.phase = Phase::FallingBack {
                    index,
                    token: Some(token),
                };
                let name = plugin.config.instances.get(index).map_or("", |i| &i.name);
                log::debug!("envoy-ai-proxy: falling back to instance {name}");
                let mut effects = Vec::new();
                if let Some(retry) = self.retry.as_mut() {
                    retry.attempt_started_ns = host.now_ns();
                    // The route's answer is superseded from now on.
                    retry.held = None;
                    for f in retry.failures.iter().skip(retry.counted) {
                        let failed = plugin
                            .config
                            .instances
                            .get(f.instance)
                            .map_or("unknown", |i| &i.label);
                        let n = name::fallbacks(failed, &metrics::label(&f.reason));
                        effects.push(Effect::counter(n, 1));
                    }
                    retry.counted = retry.failures.len();
                }
                Out::hold(effects)
            }
            Err(e) => {
                let name = plugin.config.instances.get(index).map_or("", |i| &i.name);
                log::warn!("envoy-ai-proxy: cannot call the cluster of instance {name}: {e}");
                let cause = Cause::DispatchFailed;
                plugin.observe(index, cause, None, host);
                let failure = Failure {
                    instance: index,
                    status: cause.status(),
                    retry_after: None,
                    reason: cause.reason(),
                };
                // Nothing was sent: the time limit on a failed attempt does not apply.
                if let Some(retry) = self.retry.as_mut() {
                    retry.attempt_started_ns = host.now_ns();
                }
                self.fall_back(plugin, failure, host)
            }
        }
    }

    /// No other attempt can be made: the held route answer goes on if there is one (no
    /// callout was ever started), else the client gets the verdict on every attempt.
    #[inline(never)] // compiled on its own: see "Round 5" in docs/performance.md
    fn stop_falling_back(&mut self, plugin: &Plugin, host: &dyn Host) -> Out {
        if let Some(held) = self.retry.as_mut().and_then(|r| r.held.take()) {
            return self.pass(plugin, held, host);
        }
        self.give_up(plugin)
    }

    /// Every attempt failed and no other may be made: 429 if all said 429, else 502 with
    /// the last answer.
    fn give_up(&mut self, plugin: &Plugin) -> Out {
        let Some(retry) = self.retry.as_ref() else {
            return Out::go(Vec::new());
        };
        let attempts = retry.failures.len();
        let mut effects = vec![
            Effect::state("llm_attempts", attempts.to_string()),
            Effect::state("llm_fallback_reason", reasons(&retry.failures)),
        ];
        if let Some(last) = retry.failures.last() {
            // Every attempt failed: the access log names the last instance tried, and why.
            let name = plugin
                .config
                .instances
                .get(last.instance)
                .map_or("", |i| &i.name);
            effects.push(Effect::state("llm_instance", name));
            effects.push(Effect::state("llm_error_code", &last.reason));
        }
        let (content_type, last_body) = retry.last.clone();
        let client = protocol::client_wire(self.api);
        let json = || ("content-type".to_string(), "application/json".to_string());
        let mut out = match fallback::give_up(&retry.failures) {
            GiveUp::AllRateLimited { retry_after } => {
                let mut headers = vec![json()];
                if let Some(ra) = retry_after {
                    headers.push(("retry-after".to_string(), ra.to_string()));
                }
                let message = fallback::all_rate_limited_message(attempts);
                let body = protocol::of(client).error(429, &message, Some("rate_limited"));
                self.send(429, headers, body)
            }
            GiveUp::BadGateway => {
                // The last instance's answer, in the client's protocol when it speaks the
                // other one.
                let last = retry.failures.last().map(|f| f.instance);
                let wire = last
                    .and_then(|i| plugin.config.instances.get(i))
                    .map_or(client, |i| i.provider.wire());
                if wire == client {
                    let headers = content_type
                        .map(|ct| vec![("content-type".to_string(), ct)])
                        .unwrap_or_default();
                    self.send(502, headers, last_body)
                } else {
                    let body = protocol::rewrap_error(wire, client, 502, &last_body);
                    self.send(502, vec![json()], body)
                }
            }
        };
        effects.append(&mut out.effects);
        out.effects = effects;
        out
    }

    /// A callout's answer: served, or another failed attempt.
    #[inline(never)] // compiled on its own: see "Round 5" in docs/performance.md
    pub(super) fn callout_answer(
        &mut self,
        plugin: &Plugin,
        token: u32,
        body_size: usize,
        host: &dyn Host,
    ) -> Out {
        let Phase::FallingBack {
            index,
            token: Some(expected),
        } = self.phase
        else {
            return Out::go(Vec::new());
        };
        if token != expected {
            return Out::go(Vec::new());
        }
        let (headers, body) = host.callout_answer(body_size);
        let status = headers.status();
        let cause = outcome::of_callout(status, &body);
        let retry_after = headers
            .get("retry-after")
            .and_then(fallback::retry_after_secs);
        plugin.observe(index, cause, retry_after, host);
        let content_type = headers.get("content-type").map(str::to_string);
        if status == 0 || plugin.config.fallback.is_retriable(status) {
            let failure = Failure {
                instance: index,
                status,
                retry_after,
                reason: cause.reason(),
            };
            if let Some(retry) = self.retry.as_mut() {
                retry.last = (content_type, body);
            }
            return self.fall_back(plugin, failure, host);
        }

        // Served: the client gets this answer in place of the failed one.
        let mut effects = Vec::new();
        if let Some(retry) = self.retry.as_ref() {
            let instance = plugin.config.instances.get(index);
            let req = protocol::read_request(&retry.body, &plugin.config, self.api).ok();
            if let (Some(instance), Some(req)) = (instance, req) {
                if let Ok(up) = protocol::shape(instance, &req) {
                    let attempts = retry.failures.len().saturating_add(1);
                    let reasons = reasons(&retry.failures);
                    let answer = Answer::new(index, &req.client, instance, &up, attempts, reasons);
                    effects.extend(answer.sent());
                    self.acct.answer = Some(answer);
                    self.acct.sent_ns = retry.attempt_started_ns;
                }
            }
        }
        let payloads = plugin.config.logging.payloads;
        let ct = content_type.as_deref();
        self.acct
            .begin_response(status, ct, payloads, host.now_ns());
        let out = self.acct.chunk(&body, true, host.now_ns());
        effects.extend(self.completed(plugin, host));
        let quota = self.answer_quota_headers(plugin, index);
        let replay: Vec<(String, String)> = headers
            .iter()
            .filter(|(n, _)| replayable_response_header(n))
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .chain(quota)
            .collect();
        let mut reply = self.send(status, replay, out.unwrap_or(body));
        effects.append(&mut reply.effects);
        reply.effects = effects;
        reply
    }
}
