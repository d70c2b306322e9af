//! Anthropic's Messages answers and stream events, read by the answers' reader as serde's
//! derive code read them (`protocol::anthropic`'s types): an answer's model, usage and text
//! blocks; an event's type, message, usage and delta.

use super::reader::{Fields, Reader};
use crate::protocol::anthropic::{Block, Delta, Event, Message};
use crate::protocol::tally::AnthropicUsage;

const MESSAGE: Fields = &[&["model"], &["usage"], &["content"]];
const BLOCK: Fields = &[&["text"], &["thinking"]];
const EVENT: Fields = &[&["type"], &["message"], &["usage"], &["delta"]];
const DELTA: Fields = &[
    &["text"],
    &["partial_json"],
    &["thinking"],
    &["stop_reason"],
];
pub(crate) const USAGE: Fields = &[
    &["input_tokens"],
    &["output_tokens"],
    &["cache_creation_input_tokens"],
    &["cache_read_input_tokens"],
];

/// A whole Messages answer; `None` where serde_json's reading failed.
pub fn message(data: &[u8]) -> Option<Message> {
    let mut r = Reader::new(data);
    let m = r.message()?;
    r.end().then_some(m)
}

/// A whole stream event's data; `None` where serde_json's reading failed.
pub fn event(data: &[u8]) -> Option<Event> {
    let mut r = Reader::new(data);
    let e = r.event()?;
    r.end().then_some(e)
}

impl Reader<'_> {
    fn message(&mut self) -> Option<Message> {
        let mut m = Message::default();
        self.record(MESSAGE, &mut |r, i| {
            match i {
                0 => m.model = r.opt_string()?,
                1 => m.usage = r.anthropic_usage()?,
                _ => m.content = r.blocks()?,
            }
            Some(())
        })?;
        Some(m)
    }

    fn event(&mut self) -> Option<Event> {
        let (mut kind, mut message, mut usage, mut delta) = (None, None, None, None);
        self.record(EVENT, &mut |r, i| {
            match i {
                0 => kind = r.opt_string()?,
                1 => {
                    message = match r.null()? {
                        true => None,
                        false => Some(r.message()?),
                    }
                }
                2 => usage = r.anthropic_usage()?,
                _ => delta = r.delta()?,
            }
            Some(())
        })?;
        Some(Event {
            kind,
            message,
            usage,
            delta,
        })
    }

    fn anthropic_usage(&mut self) -> Option<Option<AnthropicUsage>> {
        if self.null()? {
            return Some(None);
        }
        let mut u = AnthropicUsage::default();
        self.record(USAGE, &mut |r, i| {
            let n = r.count()?;
            match i {
                0 => u.input_tokens = n,
                1 => u.output_tokens = n,
                2 => u.cache_creation_input_tokens = n,
                _ => u.cache_read_input_tokens = n,
            }
            Some(())
        })?;
        Some(Some(u))
    }

    /// `content`: an array of blocks, each read for its text.
    fn blocks(&mut self) -> Option<Option<Vec<Block>>> {
        if self.null()? {
            return Some(None);
        }
        self.take(b'[')?;
        let mut blocks = Vec::new();
        let mut first = true;
        while self.more(first)? {
            first = false;
            let (mut text, mut thinking) = (None, None);
            self.record(BLOCK, &mut |r, i| {
                let s = r.opt_string()?;
                match i {
                    0 => text = s,
                    _ => thinking = s,
                }
                Some(())
            })?;
            blocks.push(Block { text, thinking });
        }
        Some(Some(blocks))
    }

    fn delta(&mut self) -> Option<Option<Delta>> {
        if self.null()? {
            return Some(None);
        }
        let mut d = Delta {
            text: None,
            partial_json: None,
            thinking: None,
            stop_reason: None,
        };
        self.record(DELTA, &mut |r, i| {
            let s = r.opt_string()?;
            match i {
                0 => d.text = s,
                1 => d.partial_json = s,
                2 => d.thinking = s,
                _ => d.stop_reason = s,
            }
            Some(())
        })?;
        Some(Some(d))
    }
}

#[cfg(test)]
mod tests;
