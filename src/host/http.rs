//! The per-request context: reads what each phase offers, asks `flow` what to do, and applies
//! the answer with non-panicking host calls.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use super::abi::{self, Status};
use crate::config::Config;
use crate::error::ProxyError;
use crate::flow::{self, Plan, RequestHead};

/// The client's Envoy-specific timeout headers would override the filter's.
const PER_TRY_TIMEOUT_HEADER: &str = "x-envoy-upstream-rq-per-try-timeout-ms";
const TIMEOUT_HEADER: &str = "x-envoy-upstream-rq-timeout-ms";

enum State {
    /// Nothing seen yet.
    Start,
    /// Headers accepted and paused; buffering the body.
    AwaitingBody,
    /// The request went upstream.
    Forwarded,
    /// The filter answered the client itself.
    Replied,
    /// Envoy answered for the upstream (timeout, refused connection): the plain-text body is
    /// being replaced by this error.
    RewritingLocalReply(ProxyError),
}

pub struct Filter {
    id: u32,
    config: Option<Rc<Config>>,
    state: State,
}

impl Filter {
    pub fn new(id: u32, config: Option<Rc<Config>>) -> Filter {
        Filter {
            id,
            config,
            state: State::Start,
        }
    }

    fn reply(&mut self, err: &ProxyError) -> Action {
        self.state = State::Replied;
        log::debug!("[{}] answering {} ({})", self.id, err.status(), err.code());
        let mut headers = vec![("content-type", "application/json")];
        headers.extend(err.headers());
        if let Err(s) = abi::send_response(err.status(), &headers, &err.body()) {
            log::warn!(
                "[{}] could not send the {} reply: {s}",
                self.id,
                err.status()
            );
        }
        Action::Pause
    }

    /// The whole body is buffered: plan the upstream request and apply it.
    fn forward(&mut self, config: &Config, body_size: usize) -> Action {
        let body = match abi::buffer(abi::REQUEST_BODY, 0, body_size) {
            Ok(b) => b.unwrap_or_default(),
            Err(s) => return self.reply(&internal("read the request body", s)),
        };
        let plan = match flow::plan(config, &body) {
            Ok(p) => p,
            Err(e) => return self.reply(&e),
        };
        if let Err(e) = apply(config, &plan, body.len()) {
            log::error!("[{}] {}", self.id, e.message());
            return self.reply(&e);
        }
        log::debug!(
            "[{}] {} request to instance {} (cluster {}, {}{})",
            self.id,
            plan.client.kind.name(),
            plan.instance.name,
            plan.upstream.cluster,
            plan.upstream.authority,
            plan.upstream.path.split('?').next().unwrap_or(""),
        );
        record(&plan);
        self.state = State::Forwarded;
        Action::Continue
    }
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
fn apply(config: &Config, plan: &Plan<'_>, body_size: usize) -> Result<(), ProxyError> {
    let up = &plan.upstream;
    set_request_header(&config.cluster_header, up.cluster)?;
    set_request_header(":authority", up.authority)?;
    set_request_header(":path", up.path)?;
    if up.drop_client_authorization {
        remove_request_header("authorization")?;
    }
    for (name, value) in up.auth_headers {
        set_request_header(name, value)?;
    }
    // `timeout` bounds a whole answer. A stream may rightly run for minutes, so for streams
    // the total limit is lifted and the route's `idle_timeout` bounds the silence instead.
    let timeout_ms = if up.stream { 0 } else { config.timeout_ms };
    set_request_header(TIMEOUT_HEADER, &timeout_ms.to_string())?;
    remove_request_header(PER_TRY_TIMEOUT_HEADER)?;
    if let Some(new_body) = &up.body {
        abi::set_buffer(abi::REQUEST_BODY, 0, body_size, new_body.as_bytes())
            .map_err(|s| internal("replace the request body", s))?;
        // Envoy does not fix content-length after a body change; a stale one desynchronises
        // the upstream connection.
        set_request_header("content-length", &new_body.len().to_string())?;
        remove_request_header("transfer-encoding")?;
    }
    Ok(())
}

/// Filter state for access logs (`%FILTER_STATE(wasm.<name>:PLAIN)%`). Best effort: a
/// failure here must not fail the request.
fn record(plan: &Plan<'_>) {
    let request_type = if plan.upstream.stream {
        "ai_stream"
    } else {
        "ai_chat"
    };
    let values = [
        ("request_type", request_type),
        (
            "request_llm_model",
            plan.client.model.as_deref().unwrap_or(""),
        ),
        ("llm_model", plan.upstream.model.as_deref().unwrap_or("")),
        ("llm_instance", plan.instance.name.as_str()),
        ("llm_provider", plan.instance.provider.name()),
    ];
    for (name, value) in values {
        if let Err(s) = abi::set_property(name, value.as_bytes()) {
            log::debug!("could not set filter state {name}: {s}");
        }
    }
}

impl Context for Filter {}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(config) = self.config.clone() else {
            return self.reply(&ProxyError::NotConfigured);
        };
        // A client must never choose the cluster: drop its routing header before anything.
        if let Err(e) = remove_request_header(&config.cluster_header) {
            log::error!("[{}] {}", self.id, e.message());
            return self.reply(&e);
        }
        let read = |name| abi::header(abi::REQUEST_HEADERS, name).ok().flatten();
        let (method, content_type, content_length) = (
            read(":method"),
            read("content-type"),
            read("content-length"),
        );
        let head = RequestHead {
            method: method.as_deref(),
            content_type: content_type.as_deref(),
            content_length: content_length.as_deref(),
            end_of_stream,
        };
        match flow::check_head(&config, &head) {
            Ok(()) => {
                // Routing is decided from the body: hold the headers (this needs
                // `allow_on_headers_stop_iteration: true` in the Wasm filter config).
                self.state = State::AwaitingBody;
                Action::Pause
            }
            Err(e) => self.reply(&e),
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !matches!(self.state, State::AwaitingBody) {
            return Action::Continue;
        }
        let Some(config) = self.config.clone() else {
            return self.reply(&ProxyError::NotConfigured);
        };
        if let Err(e) = flow::check_body_size(&config, body_size) {
            return self.reply(&e);
        }
        if !end_of_stream {
            return Action::Pause;
        }
        self.forward(&config, body_size)
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        // A body that ends with trailers never reported end_of_stream: finish here.
        if !matches!(self.state, State::AwaitingBody) {
            return Action::Continue;
        }
        let Some(config) = self.config.clone() else {
            return self.reply(&ProxyError::NotConfigured);
        };
        let size = match abi::buffer(abi::REQUEST_BODY, 0, usize::MAX) {
            Ok(b) => b.map_or(0, |b| b.len()),
            Err(s) => return self.reply(&internal("read the request body", s)),
        };
        if let Err(e) = flow::check_body_size(&config, size) {
            return self.reply(&e);
        }
        self.forward(&config, size)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        if !matches!(self.state, State::Forwarded) || end_of_stream {
            return Action::Continue;
        }
        let status = abi::header(abi::RESPONSE_HEADERS, ":status")
            .ok()
            .flatten()
            .and_then(|s| s.parse::<u32>().ok())
            .unwrap_or(0);
        if status < 500 {
            return Action::Continue;
        }
        let details = match abi::property(&["response", "code_details"]) {
            Ok(Some(d)) => String::from_utf8_lossy(&d).into_owned(),
            _ => return Action::Continue,
        };
        if let Some(err) = flow::local_reply_error(&details) {
            let rewritten =
                abi::set_header(abi::RESPONSE_HEADERS, "content-type", "application/json")
                    .and_then(|()| abi::remove_header(abi::RESPONSE_HEADERS, "content-length"));
            match rewritten {
                Ok(()) => self.state = State::RewritingLocalReply(err),
                Err(s) => log::debug!("[{}] local reply left as is: {s}", self.id),
            }
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let State::RewritingLocalReply(err) = &self.state else {
            return Action::Continue;
        };
        if !end_of_stream {
            return Action::Pause;
        }
        if let Err(s) = abi::set_buffer(abi::RESPONSE_BODY, 0, body_size, &err.body()) {
            log::debug!("[{}] local reply body left as is: {s}", self.id);
        }
        self.state = State::Replied;
        Action::Continue
    }
}
