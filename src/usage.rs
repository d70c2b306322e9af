//! Token usage and the reported model, read from a response as it passes: a JSON body, or an
//! SSE stream whose usage-only event is dropped when the client did not ask for it.

use crate::answer::{self, Answer, Inner, RawUsage};
use crate::sse::{Event, SseFramer, Verdict};

/// JSON bodies larger than this are passed on without being read for usage.
pub const MAX_JSON_FOR_USAGE: usize = 16 * 1024 * 1024;
/// Payload logging keeps at most this much response text.
pub const MAX_LOGGED_TEXT: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// `prompt_tokens_details.cached_tokens`.
    pub cached_tokens: u64,
    /// `completion_tokens_details.reasoning_tokens`.
    pub reasoning_tokens: u64,
}

impl From<RawUsage> for Usage {
    fn from(r: RawUsage) -> Usage {
        let prompt = r.prompt_tokens.unwrap_or(0);
        let completion = r.completion_tokens.unwrap_or(0);
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: r.total_tokens.unwrap_or(prompt.saturating_add(completion)),
            cached_tokens: r.cached_tokens.unwrap_or(0),
            reasoning_tokens: r.reasoning_tokens.unwrap_or(0),
        }
    }
}

impl Usage {
    /// OpenAI's `usage` object (chat, completions or Responses names) as the filter counts it.
    pub fn from_openai(usage: &serde_json::Value) -> Option<Usage> {
        answer::usage_of_value(usage).map(Usage::from)
    }
}

/// The length of a raw JSON string, quotes off (0 for anything else): close enough for an
/// estimate.
fn raw_len(raw: &str) -> u64 {
    if raw.starts_with('"') {
        u64::try_from(raw.len().saturating_sub(2)).unwrap_or(u64::MAX)
    } else {
        0
    }
}

/// What is kept of one body or event.
struct Envelope {
    model: Option<String>,
    usage: Option<RawUsage>,
    /// How many choices there were (a usage-only stream event has none).
    choices: Option<usize>,
    response: Option<Inner>,
    /// The texts, when payloads are logged: choices' messages, deltas and texts, a
    /// Responses delta.
    texts: Vec<String>,
    /// Characters of text in the event (an estimate's basis when no usage comes).
    seen: u64,
}

impl Envelope {
    /// `a` with its text measured (the raw strings' length), or, when payloads are logged,
    /// copied out and counted in characters.
    fn of(a: Answer<'_>, with_text: bool) -> Envelope {
        let choices = a.choices.as_ref().map(Vec::len);
        let raws = a
            .choices
            .into_iter()
            .flatten()
            .chain(std::iter::once(a.delta))
            .flatten();
        let mut seen = 0u64;
        let mut texts = Vec::new();
        for raw in raws {
            if !with_text {
                seen = seen.saturating_add(raw_len(raw));
            } else if let Some(text) = answer::text_of(raw) {
                let chars = u64::try_from(text.chars().count()).unwrap_or(u64::MAX);
                seen = seen.saturating_add(chars);
                texts.push(text);
            }
        }
        Envelope {
            model: a.model,
            usage: a.usage,
            choices,
            response: a.response,
            texts,
            seen,
        }
    }
}

/// Reads one response as it passes.
#[derive(Debug)]
pub struct Meter {
    sse: Option<SseFramer>,
    /// SSE: drop the usage-only event (the client did not ask for usage).
    drop_usage_event: bool,
    json: Vec<u8>,
    json_overflow: bool,
    usage: Option<Usage>,
    model: Option<String>,
    /// Response text for payload logs, when collected.
    text: Option<String>,
    /// Characters of response text seen so far.
    seen: u64,
}

impl Meter {
    /// A JSON (or unknown) body: buffered on the side, read at the end.
    pub fn json(collect_text: bool) -> Meter {
        Meter::new(None, false, collect_text)
    }

    /// An SSE stream.
    pub fn sse(drop_usage_event: bool, collect_text: bool) -> Meter {
        Meter::new(Some(SseFramer::default()), drop_usage_event, collect_text)
    }

    fn new(sse: Option<SseFramer>, drop_usage_event: bool, collect_text: bool) -> Meter {
        Meter {
            sse,
            drop_usage_event,
            json: Vec::new(),
            json_overflow: false,
            usage: None,
            model: None,
            text: collect_text.then(String::new),
            seen: 0,
        }
    }

    /// Whether this meter changes the bytes (and so the body must be rewritten and its
    /// length dropped).
    pub fn rewrites(&self) -> bool {
        self.sse.is_some() && self.drop_usage_event
    }

    /// Takes a chunk. `Some(bytes)`: send these instead of the chunk; `None`: the chunk goes
    /// on unchanged.
    pub fn push(&mut self, chunk: &[u8]) -> Option<Vec<u8>> {
        match self.sse.take() {
            Some(mut framer) => {
                let out = framer.push(chunk, &mut |e| self.on_event(e));
                self.sse = Some(framer);
                self.rewrites().then_some(out)
            }
            None => {
                if !self.json_overflow {
                    if self.json.len().saturating_add(chunk.len()) > MAX_JSON_FOR_USAGE {
                        self.json_overflow = true;
                        self.json = Vec::new();
                    } else {
                        self.json.extend_from_slice(chunk);
                    }
                }
                None
            }
        }
    }

    /// The response ended. `Some(bytes)`: append these (an SSE tail held back).
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        match self.sse.take() {
            Some(mut framer) => {
                let out = framer.finish(&mut |e| self.on_event(e));
                self.sse = Some(framer);
                self.rewrites().then_some(out)
            }
            None => {
                let body = std::mem::take(&mut self.json);
                if let Some(env) = self.envelope(&body) {
                    self.read(env);
                }
                None
            }
        }
    }

    fn on_event(&mut self, event: &Event<'_>) -> Verdict {
        let data = event.data.as_slice();
        if !data.starts_with(b"{") {
            return Verdict::Keep;
        }
        let Some(env) = self.envelope(data) else {
            return Verdict::Keep;
        };
        let usage_only = env.usage.is_some() && env.choices == Some(0);
        self.read(env);
        if usage_only && self.drop_usage_event {
            Verdict::Drop
        } else {
            Verdict::Keep
        }
    }

    /// Parses a body or event; the text is only built when payloads are logged.
    fn envelope(&self, data: &[u8]) -> Option<Envelope> {
        let answer = answer::read(data)?;
        Some(Envelope::of(answer, self.text.is_some()))
    }

    fn read(&mut self, env: Envelope) {
        self.seen = self.seen.saturating_add(env.seen);
        let texts = env.texts;
        let (model, usage) = match env.response {
            Some(inner) => (env.model.or(inner.model), env.usage.or(inner.usage)),
            None => (env.model, env.usage),
        };
        if self.model.is_none() {
            self.model = model.filter(|m| !m.is_empty());
        }
        if let Some(u) = usage {
            self.usage = Some(u.into());
        }
        if let Some(text) = self.text.as_mut() {
            for part in texts {
                let room = MAX_LOGGED_TEXT.saturating_sub(text.len());
                let cut = floor_char_boundary(&part, room);
                text.push_str(part.get(..cut).unwrap_or(""));
            }
        }
    }

    /// The usage the response reported; zero when it reported none.
    pub fn usage(&self) -> Usage {
        self.usage.unwrap_or_default()
    }

    /// Characters of answer text seen so far.
    pub fn seen_chars(&self) -> u64 {
        self.seen
    }

    /// Whether the response reported usage at all.
    pub fn has_usage(&self) -> bool {
        self.usage.is_some()
    }

    /// The model the response reported.
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// The response text collected for payload logs.
    pub fn text(&self) -> Option<&str> {
        self.text.as_deref()
    }
}

/// The largest index <= `at` on a character boundary of `s`.
fn floor_char_boundary(s: &str, at: usize) -> usize {
    let mut i = at.min(s.len());
    while i > 0 && !s.is_char_boundary(i) {
        i = i.saturating_sub(1);
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAT: &str = r#"{"id":"x","model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":"Hi!"}}],
        "usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17,
                 "prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":2}}}"#;

    fn stream(include_usage: bool) -> String {
        let mut s = String::new();
        s.push_str("data: {\"model\":\"m-1\",\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n");
        s.push_str("data: {\"model\":\"m-1\",\"choices\":[{\"delta\":{\"content\":\"Hé\"}}]}\n\n");
        s.push_str(
            "data: {\"model\":\"m-1\",\"choices\":[{\"delta\":{\"content\":\"llo 😀\"}}]}\n\n",
        );
        s.push_str(
            "data: {\"model\":\"m-1\",\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        );
        if include_usage {
            s.push_str("data: {\"model\":\"m-1\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,\"total_tokens\":7}}\n\n");
        }
        s.push_str("data: [DONE]\n\n");
        s
    }

    fn feed(m: &mut Meter, pieces: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in pieces {
            match m.push(p) {
                Some(b) => out.extend(b),
                None => out.extend_from_slice(p),
            }
        }
        if let Some(b) = m.finish() {
            out.extend(b);
        }
        out
    }

    #[test]
    fn content_of_any_shape_keeps_the_usage_with_or_without_text() {
        let body = r#"{"model":"m","choices":[{"message":{"role":"assistant","content":[{"type":"text","text":"hi"},{"type":"text","text":" there"}]}},{"message":{"content":7}}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#;
        for collect in [true, false] {
            let mut m = Meter::json(collect);
            feed(&mut m, &[body.as_bytes()]);
            assert_eq!(m.usage().total_tokens, 3, "collect {collect}");
            assert_eq!(m.model(), Some("m"), "collect {collect}");
            assert_eq!(m.text(), collect.then_some("hi there"));
        }
    }

    #[test]
    fn json_usage_details_and_model() {
        let mut m = Meter::json(true);
        let (a, b) = CHAT.as_bytes().split_at(40);
        assert_eq!(feed(&mut m, &[a, b]), CHAT.as_bytes());
        assert_eq!(
            m.usage(),
            Usage {
                prompt_tokens: 12,
                completion_tokens: 5,
                total_tokens: 17,
                cached_tokens: 4,
                reasoning_tokens: 2
            }
        );
        assert_eq!(m.model(), Some("gpt-4o-2024-08-06"));
        assert_eq!(m.text(), Some("Hi!"));
    }

    #[test]
    fn json_without_usage_or_not_json() {
        for body in [
            &b"plain text"[..],
            b"{\"object\":\"list\"}",
            b"",
            b"{\"usage\":null}",
        ] {
            let mut m = Meter::json(false);
            assert_eq!(feed(&mut m, &[body]), body);
            assert_eq!(m.usage(), Usage::default());
            assert!(!m.has_usage());
        }
        // Embeddings: total without completion.
        let mut m = Meter::json(false);
        feed(
            &mut m,
            &[br#"{"usage":{"prompt_tokens":8,"total_tokens":8}}"#],
        );
        assert_eq!(
            m.usage(),
            Usage {
                prompt_tokens: 8,
                total_tokens: 8,
                ..Usage::default()
            }
        );
    }

    #[test]
    fn stream_usage_at_every_split_with_and_without_dropping() {
        let full = stream(true);
        let without = stream(false);
        let bytes = full.as_bytes();
        for cut in 0..=bytes.len() {
            let (a, b) = bytes.split_at(cut);
            // The client asked for usage: every byte passes.
            let mut m = Meter::sse(false, true);
            assert_eq!(feed(&mut m, &[a, b]), bytes, "cut {cut}");
            assert_eq!(m.usage().total_tokens, 7, "cut {cut}");
            assert_eq!(m.model(), Some("m-1"));
            assert_eq!(m.text(), Some("Héllo 😀"), "cut {cut}");
            // It did not: the usage-only event is gone, nothing else is touched.
            let mut m = Meter::sse(true, false);
            assert_eq!(feed(&mut m, &[a, b]), without.as_bytes(), "cut {cut}");
            assert_eq!(
                m.usage(),
                Usage {
                    prompt_tokens: 3,
                    completion_tokens: 4,
                    total_tokens: 7,
                    ..Usage::default()
                }
            );
        }
    }

    #[test]
    fn logged_text_is_bounded_on_a_char_boundary() {
        let mut m = Meter::json(true);
        let long = "é".repeat(MAX_LOGGED_TEXT);
        let body = serde_json::json!({"choices": [{"message": {"content": long}}]}).to_string();
        feed(&mut m, &[body.as_bytes()]);
        let t = m.text().unwrap();
        assert!(t.len() <= MAX_LOGGED_TEXT && t.len() >= MAX_LOGGED_TEXT - 1);
    }

    #[test]
    fn responses_and_completions_usage_from_recorded_answers() {
        let json = include_str!("../fixtures/openai/responses.json");
        let mut m = Meter::json(true);
        feed(&mut m, &[json.as_bytes()]);
        let u = m.usage();
        assert!(u.prompt_tokens > 0 && u.completion_tokens > 0, "{u:?}");
        assert_eq!(u.total_tokens, u.prompt_tokens + u.completion_tokens);
        assert_eq!(m.model(), Some("gpt-5.4"));

        let stream = include_str!("../fixtures/openai/responses_stream.sse").as_bytes();
        for cut in 0..=stream.len() {
            let (a, b) = stream.split_at(cut);
            let mut m = Meter::sse(false, false);
            assert_eq!(feed(&mut m, &[a, b]), stream, "cut {cut}");
            assert_eq!(
                m.usage(),
                Usage {
                    prompt_tokens: 37,
                    completion_tokens: 11,
                    total_tokens: 48,
                    ..Usage::default()
                },
                "cut {cut}"
            );
            assert_eq!(m.model(), Some("gpt-5.4"));
            assert!(m.seen_chars() > 0, "the text deltas are measured");
        }

        let json = include_str!("../fixtures/openai/completions.json");
        let mut m = Meter::json(true);
        feed(&mut m, &[json.as_bytes()]);
        assert_eq!(
            (m.usage().prompt_tokens, m.usage().completion_tokens),
            (5, 7)
        );
        assert_eq!(m.text(), Some("\n\nThis is indeed a test"));
    }
}
