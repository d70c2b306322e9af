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
        format!("{}:{}", self.window_start, self.used).into_bytes()
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
