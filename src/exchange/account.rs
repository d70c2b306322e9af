//! Per-request accounting as values: which attempt serves the client, the reader that meters
//! its answer, time to first token, the access-log values, the token and latency metrics,
//! and the summary/payload log lines.

use crate::json::{obj, to_text};

use super::Plugin;
use crate::config::Instance;
use crate::effect::{Effect, Host};
use crate::metrics::{self, name};
use crate::protocol::{self, Answering, ClientRequest, Reader, Upstream};
use crate::provider::Wire;
use crate::text::num;
use crate::usage::{Usage, MAX_LOGGED_TEXT};

/// The rough size of a token, for estimates (OpenAI's rule of thumb for English text).
pub const CHARS_PER_TOKEN: u64 = 4;

/// Which attempt serves the client, and how it was shaped.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Index of the instance in the configuration.
    pub index: usize,
    pub instance: String,
    pub provider: &'static str,
    /// What the instance speaks (how its answer is read).
    pub wire: Wire,
    pub client: ClientRequest,
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
            wire: instance.provider.wire(),
            client: client.clone(),
            model: up.model.clone(),
            stream: up.stream,
            drop_usage_event: up.drop_usage_event,
            attempts,
            fallback_reason,
        }
    }

    fn request_type(&self) -> &'static str {
        if self.stream {
            "ai_stream"
        } else {
            "ai_chat"
        }
    }

    /// The access-log values known when the request is sent.
    pub fn sent(&self) -> Vec<Effect> {
        let mut out = vec![
            Effect::state("request_type", self.request_type()),
            Effect::state(
                "request_llm_model",
                self.client.model.clone().unwrap_or_default(),
            ),
            Effect::state("llm_model", self.model.clone().unwrap_or_default()),
            Effect::state("llm_instance", self.instance.clone()),
            Effect::state("llm_provider", self.provider),
            Effect::state(
                "llm_attempts",
                num(u64::try_from(self.attempts).unwrap_or(u64::MAX)),
            ),
            Effect::state("llm_api", self.client.kind.api()),
            Effect::state("llm_error_code", "-"),
        ];
        if !self.fallback_reason.is_empty() {
            out.push(Effect::state(
                "llm_fallback_reason",
                self.fallback_reason.clone(),
            ));
        }
        out
    }
}

#[derive(Default)]
pub struct Accounting {
    pub started_ns: u64,
    /// When the first attempt was sent.
    pub first_sent_ns: u64,
    /// When the attempt that answers was sent.
    pub sent_ns: u64,
    pub first_byte_ns: Option<u64>,
    pub reader: Option<Box<dyn Reader>>,
    pub answer: Option<Answer>,
    /// The status the client got.
    pub status: u32,
    /// The request's messages (or input), for payload logs.
    pub request_payload: Option<String>,
    /// The consumer an authenticating filter named (tokens by consumer).
    pub consumer: Option<String>,
    /// Prompt tokens estimated from the request's size, for an answer cut before its usage.
    pub prompt_estimate: u64,
    /// The answer was cut (the client left, or the upstream died) before it ended.
    pub cut: bool,
    completed: bool,
    ttft_ms: Option<u64>,
    /// The reported model's stat-name label, from `complete` (again in `finish`).
    model_label: Option<String>,
}

impl Accounting {
    /// The answer's headers are in: choose how to read its body.
    pub fn begin_response(
        &mut self,
        status: u32,
        content_type: Option<&str>,
        payloads: bool,
        now_ns: u64,
    ) {
        self.status = status;
        let Some(answer) = self.answer.as_ref() else {
            return;
        };
        let sse = content_type.is_some_and(|ct| ct.trim_start().starts_with("text/event-stream"));
        let answering = Answering {
            kind: answer.client.kind,
            status,
            now_s: now_ns / 1_000_000_000,
            sse,
            drop_usage_event: answer.drop_usage_event,
            collect_text: payloads,
        };
        self.reader = Some(protocol::reader(answer.wire, answering));
    }

    /// The usage the answer reported; for a successful answer cut before its usage came,
    /// an estimate: the prompt from the request's size, the completion from the text seen,
    /// at 4 characters a token.
    pub fn usage(&self) -> Usage {
        let Some(r) = self.reader.as_ref() else {
            return Usage::default();
        };
        if r.has_usage() || !self.cut || !(200..300).contains(&self.status) {
            return r.usage();
        }
        let prompt = self.prompt_estimate;
        let completion = r.seen_chars().div_ceil(CHARS_PER_TOKEN);
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt.saturating_add(completion),
            ..Usage::default()
        }
    }

    /// Whether the answer's books are closed.
    pub fn is_complete(&self) -> bool {
        self.completed
    }

    pub fn rewrites_body(&self) -> bool {
        self.reader.as_ref().is_some_and(|r| r.rewrites())
    }

    /// A chunk of the answer. `Some(bytes)`: send these instead.
    pub fn chunk(&mut self, chunk: &[u8], end_of_stream: bool, now_ns: u64) -> Option<Vec<u8>> {
        if self.first_byte_ns.is_none() && !chunk.is_empty() {
            self.first_byte_ns = Some(now_ns);
        }
        let reader = self.reader.as_mut()?;
        let mut out = reader.push(chunk);
        if end_of_stream {
            if let Some(tail) = reader.finish() {
                out.get_or_insert_with(Vec::new).extend(tail);
            }
        }
        out
    }

    fn reported_model(&self) -> Option<String> {
        let a = self.answer.as_ref()?;
        self.reader
            .as_ref()
            .and_then(|r| r.model())
            .map(str::to_string)
            .or_else(|| a.model.clone())
            .or_else(|| a.client.model.clone())
    }

    /// The answer is complete: access-log values and the token and latency metrics (once).
    pub fn complete(&mut self, plugin: &Plugin, now_ns: u64) -> Vec<Effect> {
        if self.completed {
            return Vec::new();
        }
        self.completed = true;
        let Some(answer) = self.answer.as_ref() else {
            return Vec::new();
        };
        let usage = self.usage();
        let model = self.reported_model().unwrap_or_default();
        self.ttft_ms = self
            .first_byte_ns
            .map(|t| t.saturating_sub(self.sent_ns) / 1_000_000);

        let mut out = vec![Effect::state("llm_model", model.clone())];
        if let Some(ttft) = self.ttft_ms {
            out.push(Effect::state("llm_time_to_first_token", num(ttft)));
        }
        out.extend([
            Effect::state("llm_prompt_tokens", num(usage.prompt_tokens)),
            Effect::state("llm_completion_tokens", num(usage.completion_tokens)),
            Effect::state("llm_total_tokens", num(usage.total_tokens)),
        ]);

        let instance = instance_label(plugin, answer);
        let model = plugin.model_label(&model);
        for (kind, n) in [
            ("input", usage.prompt_tokens),
            ("output", usage.completion_tokens),
        ] {
            if n > 0 {
                out.push(Effect::counter(name::tokens(instance, &model, kind), n));
            }
        }
        if let Some(c) = self.consumer.as_deref() {
            let consumer = plugin.consumer_label(c);
            for (kind, n) in [
                ("input", usage.prompt_tokens),
                ("output", usage.completion_tokens),
            ] {
                if n > 0 {
                    let name = name::consumer_tokens(instance, &consumer, kind);
                    out.push(Effect::counter(name, n));
                }
            }
        }
        if let Some(ttft) = self.ttft_ms {
            out.push(Effect::histogram(
                name::time_to_first_token(instance, &model),
                ttft,
            ));
        }
        let upstream_ms = now_ns.saturating_sub(self.first_sent_ns) / 1_000_000;
        out.push(Effect::histogram(
            name::upstream_duration(instance, &model),
            upstream_ms,
        ));
        self.model_label = Some(model);
        out
    }

    /// The exchange is over (`on_log`): the request counter and the log lines.
    pub fn finish(&mut self, plugin: &Plugin, host: &dyn Host) -> Vec<Effect> {
        if self.status == 0 {
            self.status = response_code(host);
        }
        let (instance, model) = match self.answer.as_ref() {
            Some(a) => (
                instance_label(plugin, a),
                match self.model_label.take() {
                    Some(label) => label,
                    None => plugin.model_label(&self.reported_model().unwrap_or_default()),
                },
            ),
            None => ("none", "none".to_string()),
        };
        let out = vec![Effect::counter(
            name::requests(instance, &model, metrics::status_class(self.status)),
            1,
        )];
        let logging = plugin.config.logging;
        if logging.summaries || logging.payloads {
            let request_id = host
                .property(&["request", "id"])
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            if logging.summaries {
                let s = self.summary(&request_id, host.now_ns());
                log::info!("envoy-ai-proxy summary {s}");
            }
            if logging.payloads {
                log::info!("envoy-ai-proxy payload {}", self.payload(&request_id));
            }
        }
        out
    }

    fn summary(&self, request_id: &str, now_ns: u64) -> String {
        let usage = self.usage();
        let a = self.answer.as_ref();
        let duration_ms = now_ns.saturating_sub(self.started_ns) / 1_000_000;
        to_text(&obj([
            ("request_id", request_id.into()),
            ("request_type", a.map(Answer::request_type).into()),
            ("instance", a.map(|a| a.instance.as_str()).into()),
            ("provider", a.map(|a| a.provider).into()),
            (
                "requested_model",
                a.and_then(|a| a.client.model.as_deref()).into(),
            ),
            ("model", self.reported_model().into()),
            ("status", self.status.into()),
            ("duration_ms", duration_ms.into()),
            ("time_to_first_token_ms", self.ttft_ms.into()),
            ("prompt_tokens", usage.prompt_tokens.into()),
            ("completion_tokens", usage.completion_tokens.into()),
            ("total_tokens", usage.total_tokens.into()),
            ("cached_tokens", usage.cached_tokens.into()),
            ("reasoning_tokens", usage.reasoning_tokens.into()),
            ("attempts", a.map(|a| a.attempts).into()),
            (
                "fallback_reason",
                a.map(|a| a.fallback_reason.as_str())
                    .filter(|r| !r.is_empty())
                    .into(),
            ),
        ]))
    }

    fn payload(&self, request_id: &str) -> String {
        let response = self.reader.as_ref().and_then(|r| r.text()).unwrap_or("");
        to_text(&obj([
            ("request_id", request_id.into()),
            (
                "instance",
                self.answer.as_ref().map(|a| a.instance.as_str()).into(),
            ),
            (
                "request",
                self.request_payload.as_deref().unwrap_or("").into(),
            ),
            ("response", response.into()),
        ]))
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
        cut = cut.saturating_sub(1);
    }
    Some(format!("{}…(truncated)", raw.get(..cut).unwrap_or("")))
}

/// `response.code`, for requests that ended without the filter seeing an answer.
fn response_code(host: &dyn Host) -> u32 {
    host.property(&["response", "code"])
        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        .map(|b| u32::try_from(i64::from_le_bytes(b)).unwrap_or(0))
        .unwrap_or(0)
}

/// The answering instance's stat-name label (made with the configuration).
fn instance_label<'p>(plugin: &'p Plugin, answer: &Answer) -> &'p str {
    plugin
        .config
        .instances
        .get(answer.index)
        .map_or("unknown", |i| i.label.as_str())
}
