//! Token rate limits (APISIX `ai-rate-limiting`): fixed windows counted in a shared store
//! with compare-and-swap, so every Envoy worker sees the same numbers and no update is lost.
//! Pure: the store is a trait; the host implements it over Envoy's shared data.

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
    now_secs - now_secs % window_secs.max(1)
}

/// Seconds until the window of `now` ends (at least 1).
pub fn reset_in(now_secs: u64, window_secs: u64) -> u64 {
    (window_start(now_secs, window_secs) + window_secs.max(1))
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

/// A shared key-value store with compare-and-swap (Envoy's shared data).
pub trait Store {
    /// The value and its CAS token; `(None, None)` when the key does not exist.
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), String>;
    /// Writes when `cas` still matches (`None`: unconditionally).
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetError {
    CasMismatch,
    Other(String),
}

/// How many times a charge retries after losing a CAS race.
pub const MAX_CAS_RETRIES: usize = 64;

/// The counter stored at `key`, as seen at `now`.
pub fn read(store: &dyn Store, key: &str, now_secs: u64, window_secs: u64) -> Counter {
    let stored = store
        .get(key)
        .ok()
        .and_then(|(v, _)| v)
        .and_then(|v| Counter::decode(&v));
    Counter::at(stored, now_secs, window_secs)
}

/// Creates the key if it does not exist, so that later charges always have a CAS token
/// (a write with no token is unconditional and could overwrite a concurrent charge).
pub fn seed(store: &dyn Store, key: &str) -> Result<(), String> {
    match store.get(key)? {
        (Some(_), _) => Ok(()),
        (None, _) => store
            .set(key, &Counter::default().encode(), None)
            .map_err(|e| format!("{e:?}")),
    }
}

/// Adds `tokens` to the counter at `key` with compare-and-swap, starting a new window when
/// the stored one is over. Returns the new count.
pub fn charge(
    store: &dyn Store,
    key: &str,
    now_secs: u64,
    window_secs: u64,
    tokens: u64,
) -> Result<Counter, String> {
    for _ in 0..MAX_CAS_RETRIES {
        let (value, cas) = store.get(key)?;
        let current = Counter::at(
            value.as_deref().and_then(Counter::decode),
            now_secs,
            window_secs,
        );
        let next = Counter {
            window_start: current.window_start,
            used: current.used.saturating_add(tokens),
        };
        match store.set(key, &next.encode(), cas) {
            Ok(()) => return Ok(next),
            Err(SetError::CasMismatch) => continue,
            Err(SetError::Other(e)) => return Err(e),
        }
    }
    Err(format!("gave up after {MAX_CAS_RETRIES} lost CAS races"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;

    /// An in-memory store; `interfere` lets a test write between a get and a set, as
    /// another worker would.
    #[derive(Default)]
    struct Mem {
        data: RefCell<HashMap<String, (Vec<u8>, u32)>>,
        interfere: Cell<usize>,
    }

    impl Store for Mem {
        fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), String> {
            Ok(match self.data.borrow().get(key) {
                Some((v, cas)) => (Some(v.clone()), Some(*cas)),
                None => (None, None),
            })
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
            if self.interfere.get() > 0 {
                self.interfere.set(self.interfere.get() - 1);
                // Another worker charges 5 tokens first.
                let mut d = self.data.borrow_mut();
                let e = d
                    .entry(key.to_string())
                    .or_insert((Counter::default().encode(), 0));
                // As a real worker would: in the window of the test's clock (t=100, 60 s).
                let mut c = Counter::at(Counter::decode(&e.0), 100, 60);
                c.used += 5;
                *e = (c.encode(), e.1 + 1);
            }
            let mut d = self.data.borrow_mut();
            let current = d.get(key).map(|(_, c)| *c);
            if cas.is_some() && cas != current {
                return Err(SetError::CasMismatch);
            }
            d.insert(
                key.to_string(),
                (value.to_vec(), current.map_or(1, |c| c + 1)),
            );
            Ok(())
        }
    }

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

    #[test]
    fn charges_add_up_and_roll_over() {
        let s = Mem::default();
        seed(&s, "k").unwrap();
        seed(&s, "k").unwrap();
        assert_eq!(charge(&s, "k", 125, 60, 10).unwrap().used, 10);
        assert_eq!(charge(&s, "k", 130, 60, 7).unwrap().used, 17);
        assert_eq!(read(&s, "k", 179, 60).used, 17);
        // Next window.
        assert_eq!(read(&s, "k", 180, 60).used, 0);
        assert_eq!(
            charge(&s, "k", 181, 60, 2).unwrap(),
            Counter {
                window_start: 180,
                used: 2
            }
        );
    }

    #[test]
    fn a_lost_race_is_retried_and_nothing_is_lost() {
        let s = Mem::default();
        seed(&s, "k").unwrap();
        s.interfere.set(3);
        let c = charge(&s, "k", 100, 60, 7).unwrap();
        // Three interfering charges of 5, then ours.
        assert_eq!(c.used, 22);
        assert_eq!(read(&s, "k", 100, 60).used, 22);
    }

    #[test]
    fn endless_races_give_up() {
        let s = Mem::default();
        seed(&s, "k").unwrap();
        s.interfere.set(usize::MAX);
        assert!(charge(&s, "k", 100, 60, 1).is_err());
    }
}
