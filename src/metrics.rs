//! Metric names and their registry. Instance, model and kind ride in the Envoy stat name
//! (`aiproxy.instance.<i>.model.<m>....`) and become Prometheus labels through the
//! bootstrap's `stats_tags`. Each metric is defined once per VM; its id is cached here.

use rustc_hash::FxHashMap as HashMap;

/// Distinct model labels per VM; beyond it, models count as `other` (a client-chosen model
/// name must not grow the stats without bound).
pub const MAX_MODELS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    /// The proxy-wasm ABI's metric type.
    pub fn abi(self) -> u32 {
        match self {
            Kind::Counter => 0,
            Kind::Gauge => 1,
            Kind::Histogram => 2,
        }
    }
}

/// The longest label, in characters (a client-chosen model name could be any size).
pub const MAX_LABEL: usize = 64;

/// A label value safe inside a stat name: `[A-Za-z0-9_-]`, everything else `_`, at most
/// [`MAX_LABEL`] characters.
pub fn label(value: &str) -> String {
    if value.is_empty() {
        return "unknown".into();
    }
    let safe = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    // The usual label (a configured instance name, a model id) is already safe: one copy.
    if value.len() <= MAX_LABEL && value.bytes().all(safe) {
        return value.to_string();
    }
    value
        .chars()
        .take(MAX_LABEL)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

pub fn status_class(status: u32) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "none",
    }
}

/// Stat names, from label values already passed through [`label`].
pub mod name {
    use crate::text::join;

    pub fn requests(instance: &str, model: &str, class: &str) -> String {
        join(&[
            "aiproxy.instance.",
            instance,
            ".model.",
            model,
            ".status_class.",
            class,
            ".requests_total",
        ])
    }
    pub fn tokens(instance: &str, model: &str, token_type: &str) -> String {
        join(&[
            "aiproxy.instance.",
            instance,
            ".model.",
            model,
            ".token_type.",
            token_type,
            ".tokens_total",
        ])
    }
    /// Tokens by the consumer an authenticating filter named (`other` past the cap).
    pub fn consumer_tokens(instance: &str, consumer: &str, token_type: &str) -> String {
        join(&[
            "aiproxy.instance.",
            instance,
            ".consumer.",
            consumer,
            ".token_type.",
            token_type,
            ".consumer_tokens_total",
        ])
    }
    pub fn time_to_first_token(instance: &str, model: &str) -> String {
        join(&[
            "aiproxy.instance.",
            instance,
            ".model.",
            model,
            ".time_to_first_token_ms",
        ])
    }
    pub fn upstream_duration(instance: &str, model: &str) -> String {
        join(&[
            "aiproxy.instance.",
            instance,
            ".model.",
            model,
            ".upstream_duration_ms",
        ])
    }
    pub fn fallbacks(instance: &str, reason: &str) -> String {
        join(&[
            "aiproxy.instance.",
            instance,
            ".reason.",
            reason,
            ".fallbacks_total",
        ])
    }
    /// 1 while the health checks keep the instance in, 0 while they keep it out.
    pub fn healthy(instance: &str) -> String {
        join(&["aiproxy.instance.", instance, ".healthy"])
    }
    pub fn ratelimit_rejections(instance: &str) -> String {
        join(&["aiproxy.instance.", instance, ".ratelimit_rejections_total"])
    }
    /// Checks and settlements the rate limit service did not take (refused, timed out,
    /// failed, or not dispatched).
    pub fn rate_limit_service_failures() -> String {
        "aiproxy.rate_limit_service_failures_total".to_string()
    }
    /// Tokens used in the current window; consumer `all` for the route's own limit.
    pub fn ratelimit_used(instance: &str, consumer: &str) -> String {
        join(&[
            "aiproxy.instance.",
            instance,
            ".consumer.",
            consumer,
            ".ratelimit_used_tokens",
        ])
    }
}

/// Metric ids by name (the host defines each metric once per VM).
#[derive(Debug, Default)]
pub struct Registry {
    ids: HashMap<String, u32>,
}

impl Registry {
    /// The id of metric `name`, defining it with `define` the first time.
    pub fn id(&mut self, name: &str, define: impl FnOnce(&str) -> Option<u32>) -> Option<u32> {
        if let Some(id) = self.ids.get(name) {
            return Some(*id);
        }
        let id = define(name)?;
        self.ids.insert(name.to_string(), id);
        Some(id)
    }
}

/// The labels in use in one VM for a value clients can choose (a model, a consumer).
#[derive(Debug, Default)]
pub struct Models {
    labels: HashMap<String, String>,
}

impl Models {
    /// The label for a value: itself (sanitised) for the first [`MAX_MODELS`], then `other`.
    pub fn label(&mut self, model: &str) -> String {
        if let Some(l) = self.labels.get(model) {
            return l.clone();
        }
        if self.labels.len() >= MAX_MODELS {
            return "other".into();
        }
        let l = label(model);
        self.labels.insert(model.to_string(), l.clone());
        l
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_stat_name_safe() {
        assert_eq!(label("gpt-4.1-mini"), "gpt-4_1-mini");
        assert_eq!(label("openai/gpt-4o:free"), "openai_gpt-4o_free");
        assert_eq!(label(""), "unknown");
        assert_eq!(label("x\n200 forged").as_str(), "x_200_forged");
        assert_eq!(label(&"m".repeat(200_000)).len(), MAX_LABEL);
        assert_eq!(
            name::requests("a", "m", "2xx"),
            "aiproxy.instance.a.model.m.status_class.2xx.requests_total"
        );
    }

    #[test]
    fn defines_once_and_caps_models() {
        let mut r = Registry::default();
        let mut defined = 0;
        for _ in 0..3 {
            let id = r.id("x", |_| {
                defined += 1;
                Some(7)
            });
            assert_eq!(id, Some(7));
        }
        assert_eq!(defined, 1);
        // A failed definition is retried next time.
        assert_eq!(r.id("y", |_| None), None);
        assert_eq!(r.id("y", |_| Some(8)), Some(8));

        let mut m = Models::default();
        for i in 0..MAX_MODELS {
            assert_eq!(m.label(&format!("m{i}")), format!("m{i}"));
        }
        assert_eq!(m.label("one-too-many"), "other");
        assert_eq!(m.label("m3"), "m3");
    }

    #[test]
    fn classes() {
        assert_eq!(status_class(200), "2xx");
        assert_eq!(status_class(429), "4xx");
        assert_eq!(status_class(504), "5xx");
        assert_eq!(status_class(0), "none");
    }
}
