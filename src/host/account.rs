//! Per-request accounting: the meter that reads the answer as it passes, time to first
//! token, the access-log values, the metrics and the summary/payload log lines.

use serde_json::json;

use super::{abi, count, model_label, record};
use crate::config::Instance;
use crate::metrics::{self, name};
use crate::provider::shape::{ClientRequest, Upstream};
use crate::usage::{Meter, MAX_LOGGED_TEXT};

/// Which attempt serves the client, and how it was shaped.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Index of the instance in the configuration.
    pub index: usize,
    pub instance: String,
    pub provider: &'static str,
    pub client_model: Option<String>,
    /// The model asked of the upstream (configured, else the client's).
    pub model: Option<String>,
    pub stream: bool,
    pub drop_usage_event: bool,
    pub attempts: usize,
    pub fallback_reason: String,
}

impl Answer {
    pub fn new(
        index: usize,
        client: &ClientRequest,
        instance: &Instance,
        up: &Upstream<'_>,
        attempts: usize,
        fallback_reason: String,
    ) -> Answer {
        Answer {
            index,
            instance: instance.name.clone(),
            provider: instance.provider.name(),
            client_model: client.model.clone(),
            model: up.model.clone(),
            stream: up.stream,
            drop_usage_event: up.drop_usage_event,
            attempts,
            fallback_reason,
        }
    }

    /// The access-log values known when the request is sent.
    pub fn record_request(&self) {
        set_state_value(
            "request_type",
            if self.stream { "ai_stream" } else { "ai_chat" },
        );
        set_state_value(
            "request_llm_model",
            self.client_model.as_deref().unwrap_or(""),
        );
        set_state_value("llm_model", self.model.as_deref().unwrap_or(""));
        set_state_value("llm_instance", &self.instance);
        set_state_value("llm_provider", self.provider);
        set_state_value("llm_attempts", &self.attempts.to_string());
        if !self.fallback_reason.is_empty() {
            set_state_value("llm_fallback_reason", &self.fallback_reason);
        }
    }
}

/// A filter state value for access logs (`%FILTER_STATE(wasm.<name>:PLAIN)%`). Best effort:
/// a failure here must not fail the request.
pub fn set_state_value(name: &str, value: &str) {
    if let Err(s) = abi::set_property(name, value.as_bytes()) {
        log::debug!("could not set filter state {name}: {s}");
    }
}

#[derive(Debug, Default)]
pub struct Accounting {
    pub started_ns: u64,
    /// When the first attempt was sent.
    pub first_sent_ns: u64,
    /// When the attempt that answers was sent.
    pub sent_ns: u64,
    pub first_byte_ns: Option<u64>,
    pub meter: Option<Meter>,
    pub answer: Option<Answer>,
    /// The status the client got.
    pub status: u32,
    /// The request's messages (or input), for payload logs.
    pub request_payload: Option<String>,
    completed: bool,
    ttft_ms: Option<u64>,
}

impl Accounting {
    /// The answer's headers are in: choose how to read its body.
    pub fn begin_response(&mut self, status: u32, content_type: Option<&str>, payloads: bool) {
        self.status = status;
        let sse = content_type.is_some_and(|ct| ct.trim_start().starts_with("text/event-stream"));
        self.meter = Some(if sse {
            let drop = (200..300).contains(&status)
                && self.answer.as_ref().is_some_and(|a| a.drop_usage_event);
            Meter::sse(drop, payloads)
        } else {
            Meter::json(payloads)
        });
    }

    /// The usage the answer reported (zero before it is read).
    pub fn usage(&self) -> crate::usage::Usage {
        self.meter.as_ref().map(Meter::usage).unwrap_or_default()
    }

    pub fn rewrites_body(&self) -> bool {
        self.meter.as_ref().is_some_and(Meter::rewrites)
    }

    /// A chunk of the answer. `Some(bytes)`: send these instead.
    pub fn chunk(&mut self, chunk: &[u8], end_of_stream: bool) -> Option<Vec<u8>> {
        if self.first_byte_ns.is_none() && !chunk.is_empty() {
            self.first_byte_ns = Some(abi::now_ns());
        }
        let meter = self.meter.as_mut()?;
        let mut out = meter.push(chunk);
        if end_of_stream {
            if let Some(tail) = meter.finish() {
                out.get_or_insert_with(Vec::new).extend(tail);
            }
        }
        out
    }

    /// The answer is complete: access-log values and the token and latency metrics.
    pub fn complete(&mut self) {
        if self.completed {
            return;
        }
        self.completed = true;
        let now = abi::now_ns();
        let Some(answer) = self.answer.as_ref() else {
            return;
        };
        let meter = self.meter.as_ref();
        let usage = meter.map(Meter::usage).unwrap_or_default();
        let model = meter
            .and_then(Meter::model)
            .map(str::to_string)
            .or_else(|| answer.model.clone())
            .or_else(|| answer.client_model.clone())
            .unwrap_or_default();
        self.ttft_ms = self
            .first_byte_ns
            .map(|t| t.saturating_sub(self.sent_ns) / 1_000_000);

        set_state_value("llm_model", &model);
        if let Some(ttft) = self.ttft_ms {
            set_state_value("llm_time_to_first_token", &ttft.to_string());
        }
        set_state_value("llm_prompt_tokens", &usage.prompt_tokens.to_string());
        set_state_value(
            "llm_completion_tokens",
            &usage.completion_tokens.to_string(),
        );
        set_state_value("llm_total_tokens", &usage.total_tokens.to_string());

        let instance = metrics::label(&answer.instance);
        let model = model_label(&model);
        count(
            &name::tokens(&instance, &model, "input"),
            usage.prompt_tokens,
        );
        count(
            &name::tokens(&instance, &model, "output"),
            usage.completion_tokens,
        );
        if let Some(ttft) = self.ttft_ms {
            record(&name::time_to_first_token(&instance, &model), ttft);
        }
        let upstream_ms = now.saturating_sub(self.first_sent_ns) / 1_000_000;
        record(&name::upstream_duration(&instance, &model), upstream_ms);
    }

    /// The request is over (`on_log`): the request counter and the log lines.
    pub fn finish(&mut self, summaries: bool, payloads: bool) {
        if self.status == 0 {
            self.status = response_code();
        }
        let (instance, model) = match self.answer.as_ref() {
            Some(a) => (
                metrics::label(&a.instance),
                model_label(&self.reported_model().unwrap_or_default()),
            ),
            None => ("none".to_string(), "none".to_string()),
        };
        count(
            &name::requests(&instance, &model, metrics::status_class(self.status)),
            1,
        );
        if !(summaries || payloads) {
            return;
        }
        let request_id = abi::property(&["request", "id"])
            .ok()
            .flatten()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        if summaries {
            log::info!("envoy-ai-proxy summary {}", self.summary(&request_id));
        }
        if payloads {
            log::info!("envoy-ai-proxy payload {}", self.payload(&request_id));
        }
    }

    fn reported_model(&self) -> Option<String> {
        let a = self.answer.as_ref()?;
        self.meter
            .as_ref()
            .and_then(Meter::model)
            .map(str::to_string)
            .or_else(|| a.model.clone())
            .or_else(|| a.client_model.clone())
    }

    fn summary(&self, request_id: &str) -> String {
        let usage = self.meter.as_ref().map(Meter::usage).unwrap_or_default();
        let a = self.answer.as_ref();
        let duration_ms = abi::now_ns().saturating_sub(self.started_ns) / 1_000_000;
        json!({
            "request_id": request_id,
            "request_type": a.map(|a| if a.stream { "ai_stream" } else { "ai_chat" }),
            "instance": a.map(|a| a.instance.as_str()),
            "provider": a.map(|a| a.provider),
            "requested_model": a.and_then(|a| a.client_model.as_deref()),
            "model": self.reported_model(),
            "status": self.status,
            "duration_ms": duration_ms,
            "time_to_first_token_ms": self.ttft_ms,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
            "cached_tokens": usage.cached_tokens,
            "reasoning_tokens": usage.reasoning_tokens,
            "attempts": a.map(|a| a.attempts),
            "fallback_reason": a.map(|a| a.fallback_reason.as_str()).filter(|r| !r.is_empty()),
        })
        .to_string()
    }

    fn payload(&self, request_id: &str) -> String {
        let response = self.meter.as_ref().and_then(Meter::text).unwrap_or("");
        json!({
            "request_id": request_id,
            "instance": self.answer.as_ref().map(|a| a.instance.as_str()),
            "request": self.request_payload.as_deref().unwrap_or(""),
            "response": response,
        })
        .to_string()
    }
}

/// The client's `messages` (or `input`) as sent, cut to the logging limit.
pub fn request_payload(raw: Option<&str>) -> Option<String> {
    let raw = raw?;
    if raw.len() <= MAX_LOGGED_TEXT {
        return Some(raw.to_string());
    }
    let mut cut = MAX_LOGGED_TEXT;
    while cut > 0 && !raw.is_char_boundary(cut) {
        cut -= 1;
    }
    Some(format!("{}…(truncated)", raw.get(..cut).unwrap_or("")))
}

/// `response.code`, for requests that ended without the filter seeing an answer.
fn response_code() -> u32 {
    abi::property(&["response", "code"])
        .ok()
        .flatten()
        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        .map(|b| u32::try_from(i64::from_le_bytes(b)).unwrap_or(0))
        .unwrap_or(0)
}
