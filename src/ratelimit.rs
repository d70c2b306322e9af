//! Token rate limits (APISIX `ai-rate-limiting`), pure: what a limit counts, fixed windows,
//! the counter's stored form, and the quota a request sees. Where counters live is the
//! quota backend's business (`crate::quota`).

use crate::usage::Usage;

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    #[default]
    TotalTokens,
    PromptTokens,
    CompletionTokens,
}

impl Strategy {
    pub fn parse(s: &str) -> Option<Strategy> {
        match s {
            "total_tokens" => Some(Strategy::TotalTokens),
            "prompt_tokens" => Some(Strategy::PromptTokens),
            "completion_tokens" => Some(Strategy::CompletionTokens),
            _ => None,
        }
    }

    pub fn tokens(self, u: &Usage) -> u64 {
        match self {
            Strategy::TotalTokens => u.total_tokens,
            Strategy::PromptTokens => u.prompt_tokens,
            Strategy::CompletionTokens => u.completion_tokens,
        }
    }
}

/// `limit` tokens per fixed window of `window_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub limit: u64,
    pub window_secs: u64,
}

/// One window's count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counter {
    /// Start of the window, seconds since the epoch, aligned to the window length.
    pub window_start: u64,
    pub used: u64,
}

impl Counter {
    /// The counter as stored (`<window_start>:<used>`), or `None` when it is not one.
    pub fn decode(bytes: &[u8]) -> Option<Counter> {
        let s = std::str::from_utf8(bytes).ok()?;
        let (w, u) = s.split_once(':')?;
        Some(Counter {
            window_start: w.parse().ok()?,
            used: u.parse().ok()?,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        crate::text::push_num(out, self.window_start);
        out.push(b':');
        crate::text::push_num(out, self.used);
    }

    /// The counter in slot `slot` of a limit set's stored counters (one slot per instance of
    /// the configuration, in its order, separated by `,`; empty where the set has no limit
    /// for the instance), or `None` when there is none to read.
    #[inline(never)] // one copy for its six callers: less compile memory ("Round 10")
    pub fn in_slot(counters: Option<&[u8]>, slot: usize) -> Option<Counter> {
        let stored = counters?;
        let (start, end) = part(stored, slot).ok()?;
        Counter::decode(stored.get(start..end)?)
    }

    /// Every slot of a limit set's stored counters, in order (`None` where a slot is empty or
    /// not a counter): one pass, for a reader of every slot.
    pub fn all_slots(counters: Option<&[u8]>) -> Vec<Option<Counter>> {
        counters.map_or_else(Vec::new, |c| {
            c.split(|b| *b == b',').map(Counter::decode).collect()
        })
    }

    /// A limit set's stored counters with this counter in slot `slot` and the others as
    /// they were (slots that were missing are added empty).
    pub fn into_slot(&self, counters: Option<&[u8]>, slot: usize) -> Vec<u8> {
        let stored = counters.unwrap_or_default();
        let mut out = Vec::with_capacity(stored.len().saturating_add(24));
        match part(stored, slot) {
            Ok((start, end)) => {
                out.extend_from_slice(stored.get(..start).unwrap_or_default());
                self.encode_into(&mut out);
                out.extend_from_slice(stored.get(end..).unwrap_or_default());
            }
            Err(parts) => {
                out.extend_from_slice(stored);
                out.resize(out.len().saturating_add(slot.saturating_sub(parts)), b',');
                out.push(b',');
                self.encode_into(&mut out);
            }
        }
        out
    }

    /// This counter as seen at `now`: a counter of an older window counts zero.
    pub fn at(stored: Option<Counter>, now_secs: u64, window_secs: u64) -> Counter {
        let window_start = window_start(now_secs, window_secs);
        match stored {
            Some(c) if c.window_start == window_start => c,
            _ => Counter {
                window_start,
                used: 0,
            },
        }
    }
}

/// Where part `n` of a `,`-separated list is (`Ok((start, end))`), or how many parts the
/// list has when it has no part `n` (`Err(parts)`; an empty list is one empty part).
#[inline(never)]
fn part(list: &[u8], n: usize) -> Result<(usize, usize), usize> {
    let mut start = 0usize;
    let mut seen = 0usize;
    for (i, b) in list.iter().enumerate() {
        if *b == b',' {
            if seen == n {
                return Ok((start, i));
            }
            seen = seen.saturating_add(1);
            start = i.saturating_add(1);
        }
    }
    if seen == n {
        Ok((start, list.len()))
    } else {
        Err(seen.saturating_add(1))
    }
}

pub fn window_start(now_secs: u64, window_secs: u64) -> u64 {
    now_secs.saturating_sub(now_secs.checked_rem(window_secs.max(1)).unwrap_or(0))
}

/// Seconds until the window of `now` ends (at least 1).
pub fn reset_in(now_secs: u64, window_secs: u64) -> u64 {
    window_start(now_secs, window_secs)
        .saturating_add(window_secs.max(1))
        .saturating_sub(now_secs)
        .max(1)
}

/// The state of one limit when a request is admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u64,
    pub remaining: u64,
    pub reset_secs: u64,
}

impl Quota {
    pub fn of(limit: Limit, counter: Counter, now_secs: u64) -> Quota {
        Quota {
            limit: limit.limit,
            remaining: limit.limit.saturating_sub(counter.used),
            reset_secs: reset_in(now_secs, limit.window_secs),
        }
    }

    /// A request is admitted while at least one token is left.
    pub fn exhausted(&self) -> bool {
        self.remaining == 0
    }
}

/// Of several limits that apply, the one that binds: the fewest tokens left (and of those,
/// the one that resets last). Each quota carries a tag (its limit's settings, say).
pub fn binding<T>(quotas: impl IntoIterator<Item = (Quota, T)>) -> Option<(Quota, T)> {
    quotas
        .into_iter()
        .min_by_key(|(q, _)| (q.remaining, std::cmp::Reverse(q.reset_secs)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_quota() {
        assert_eq!(window_start(125, 60), 120);
        assert_eq!(reset_in(125, 60), 55);
        assert_eq!(reset_in(120, 60), 60);
        let limit = Limit {
            limit: 30,
            window_secs: 60,
        };
        let q = Quota::of(
            limit,
            Counter {
                window_start: 120,
                used: 20,
            },
            125,
        );
        assert_eq!(
            q,
            Quota {
                limit: 30,
                remaining: 10,
                reset_secs: 55
            }
        );
        assert!(!q.exhausted());
        assert!(Quota::of(
            limit,
            Counter {
                window_start: 120,
                used: 31
            },
            125
        )
        .exhausted());
        // An old window counts zero.
        assert_eq!(
            Counter::at(
                Some(Counter {
                    window_start: 60,
                    used: 99
                }),
                125,
                60
            )
            .used,
            0
        );
        assert_eq!(
            Counter::decode(b"120:7"),
            Some(Counter {
                window_start: 120,
                used: 7
            })
        );
        assert_eq!(Counter::decode(b"junk"), None);
    }

    #[test]
    fn a_sets_counters_are_read_and_written_by_slot() {
        let c = |window_start, used| Counter { window_start, used };
        let stored = b"120:7,,60:3".as_slice();
        assert_eq!(Counter::in_slot(Some(stored), 0), Some(c(120, 7)));
        assert_eq!(Counter::in_slot(Some(stored), 1), None);
        assert_eq!(Counter::in_slot(Some(stored), 2), Some(c(60, 3)));
        assert_eq!(Counter::in_slot(Some(stored), 3), None);
        assert_eq!(Counter::in_slot(None, 0), None);
        let put = |v: Option<&[u8]>, slot, counter: Counter| {
            String::from_utf8(counter.into_slot(v, slot)).unwrap()
        };
        assert_eq!(put(Some(stored), 0, c(180, 0)), "180:0,,60:3");
        assert_eq!(put(Some(stored), 1, c(1, 2)), "120:7,1:2,60:3");
        assert_eq!(put(Some(stored), 2, c(120, 99)), "120:7,,120:99");
        assert_eq!(put(Some(stored), 4, c(5, 6)), "120:7,,60:3,,5:6");
        assert_eq!(put(None, 0, c(5, 6)), "5:6");
        assert_eq!(put(None, 2, c(5, 6)), ",,5:6");
        assert_eq!(put(Some(b""), 1, c(5, 6)), ",5:6");
        // Every slot written in turn reads back, the others untouched.
        let mut v: Vec<u8> = Vec::new();
        for slot in [3, 0, 2, 3, 1] {
            v = c(slot as u64, 10 + slot as u64).into_slot(Some(&v), slot);
        }
        assert_eq!(String::from_utf8(v.clone()).unwrap(), "0:10,1:11,2:12,3:13");
        for slot in 0..4 {
            assert_eq!(
                Counter::in_slot(Some(&v), slot),
                Some(c(slot as u64, 10 + slot as u64))
            );
        }
        // Read all at once, every slot is what it is read alone.
        for stored in [
            b"120:7,,60:3".as_slice(),
            b"",
            b",",
            b"junk,5:6,",
            b"0:10,1:11,2:12,3:13",
        ] {
            let all = Counter::all_slots(Some(stored));
            for slot in 0..6 {
                assert_eq!(
                    all.get(slot).copied().flatten(),
                    Counter::in_slot(Some(stored), slot),
                    "{slot} of {stored:?}"
                );
            }
        }
        assert!(Counter::all_slots(None).is_empty());
        assert_eq!(
            c(u64::MAX, 0).encode(),
            format!("{}:0", u64::MAX).into_bytes()
        );
    }

    #[test]
    fn binding_limit_is_the_tightest() {
        let a = Quota {
            limit: 100,
            remaining: 50,
            reset_secs: 10,
        };
        let b = Quota {
            limit: 10,
            remaining: 3,
            reset_secs: 40,
        };
        assert_eq!(
            binding([(a, "route"), (b, "consumer")]),
            Some((b, "consumer"))
        );
        assert_eq!(binding::<()>([]), None);
    }

    #[test]
    fn strategies() {
        let u = Usage {
            prompt_tokens: 3,
            completion_tokens: 4,
            total_tokens: 7,
            ..Usage::default()
        };
        assert_eq!(Strategy::TotalTokens.tokens(&u), 7);
        assert_eq!(Strategy::PromptTokens.tokens(&u), 3);
        assert_eq!(Strategy::CompletionTokens.tokens(&u), 4);
    }
}
