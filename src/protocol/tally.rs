//! What a reader that parses every event keeps of an answer: its usage (Anthropic's summed
//! the way the filter counts it), the model, the characters of text seen, and the text
//! itself when payloads are logged.

use crate::usage::{Usage, MAX_LOGGED_TEXT};

/// Anthropic's usage. Cumulative in a stream: `message_start` has the input and cache
/// tokens, each `message_delta` the output tokens so far (and, lately, the input ones again).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(any(test, feature = "reference-derive"), derive(serde::Deserialize))]
pub struct AnthropicUsage {
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cache_creation_input_tokens: Option<u64>,
    pub cache_read_input_tokens: Option<u64>,
}

impl AnthropicUsage {
    /// Later counts replace earlier ones, field by field.
    pub fn update(&mut self, later: &AnthropicUsage) {
        let pick = |new: Option<u64>, old: Option<u64>| new.or(old);
        self.input_tokens = pick(later.input_tokens, self.input_tokens);
        self.output_tokens = pick(later.output_tokens, self.output_tokens);
        self.cache_creation_input_tokens = pick(
            later.cache_creation_input_tokens,
            self.cache_creation_input_tokens,
        );
        self.cache_read_input_tokens =
            pick(later.cache_read_input_tokens, self.cache_read_input_tokens);
    }

    /// As the filter counts: the prompt is the input, cache writes and cache reads together
    /// (Anthropic's `input_tokens` leaves the cache out).
    pub fn counted(&self) -> Usage {
        let read = self.cache_read_input_tokens.unwrap_or(0);
        let prompt = self
            .input_tokens
            .unwrap_or(0)
            .saturating_add(self.cache_creation_input_tokens.unwrap_or(0))
            .saturating_add(read);
        let completion = self.output_tokens.unwrap_or(0);
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt.saturating_add(completion),
            cached_tokens: read,
            reasoning_tokens: 0,
        }
    }
}

/// The books of one answer.
#[derive(Debug, Default)]
pub struct Tally {
    pub model: Option<String>,
    pub seen: u64,
    /// Collected only when payloads are logged.
    pub text: Option<String>,
}

impl Tally {
    pub fn new(collect_text: bool) -> Tally {
        Tally {
            text: collect_text.then(String::new),
            ..Tally::default()
        }
    }

    /// Answer text: counted, and kept for payload logs (bounded).
    pub fn text(&mut self, part: &str) {
        let chars = u64::try_from(part.chars().count()).unwrap_or(u64::MAX);
        self.seen = self.seen.saturating_add(chars);
        if let Some(text) = self.text.as_mut() {
            let room = MAX_LOGGED_TEXT.saturating_sub(text.len());
            let mut cut = room.min(part.len());
            while cut > 0 && !part.is_char_boundary(cut) {
                cut = cut.saturating_sub(1);
            }
            text.push_str(part.get(..cut).unwrap_or(""));
        }
    }

    /// The first non-empty model reported.
    pub fn model(&mut self, model: Option<&str>) {
        if self.model.is_none() {
            self.model = model.filter(|m| !m.is_empty()).map(str::to_string);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anthropic_usage_counts_the_cache_in_the_prompt_and_keeps_later_counts() {
        let mut u: AnthropicUsage = serde_json::from_str(
            r#"{"input_tokens":10,"cache_creation_input_tokens":20,"cache_read_input_tokens":30,"output_tokens":1}"#,
        )
        .unwrap();
        u.update(&serde_json::from_str(r#"{"output_tokens":15}"#).unwrap());
        let c = u.counted();
        assert_eq!(
            (
                c.prompt_tokens,
                c.completion_tokens,
                c.total_tokens,
                c.cached_tokens
            ),
            (60, 15, 75, 30)
        );
    }

    #[test]
    fn text_is_counted_and_kept_within_bounds() {
        let mut t = Tally::new(true);
        t.text("héllo");
        assert_eq!(t.seen, 5);
        t.text(&"é".repeat(MAX_LOGGED_TEXT));
        assert!(t.text.as_ref().unwrap().len() <= MAX_LOGGED_TEXT);
        let mut quiet = Tally::new(false);
        quiet.text("abc");
        assert_eq!((quiet.seen, quiet.text), (3, None));
    }
}
