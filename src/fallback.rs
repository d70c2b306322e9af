//! Falling back to the next instance: which failed answers are retried, within what bounds,
//! and what the client gets when every attempt failed. Pure bookkeeping; the exchange makes
//! the calls.

/// The compiled `fallback_strategy`, `fallback_http_statuses`, `max_retries` and
/// `retry_on_failure_within_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    pub on_429: bool,
    pub on_5xx: bool,
    /// Skip instances out of quota at pick time (`rate_limiting`).
    pub rate_limiting: bool,
    pub statuses: Vec<u16>,
    /// Attempts after the first.
    pub max_retries: u32,
    /// An attempt that took longer than this is not retried.
    pub within_ms: Option<u64>,
}

impl Policy {
    /// Whether an answer with this status may be served by the next instance. Envoy's own
    /// answers for an unreachable or slow upstream (503, 504) count as 5xx.
    pub fn is_retriable(&self, status: u32) -> bool {
        (self.on_429 && status == 429)
            || (self.on_5xx && (500..=599).contains(&status))
            || self.statuses.iter().any(|s| u32::from(*s) == status)
    }

    /// Whether any failed answer can ever be retried: without that, nothing needs keeping.
    pub fn retries_answers(&self) -> bool {
        self.max_retries > 0 && (self.on_429 || self.on_5xx || !self.statuses.is_empty())
    }

    /// Whether one more attempt is allowed after `retries_done` retries, the failed one
    /// having taken `attempt_ms`.
    pub fn may_retry(&self, retries_done: u32, attempt_ms: u64) -> bool {
        retries_done < self.max_retries && self.within_ms.is_none_or(|limit| attempt_ms <= limit)
    }
}

/// One failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub instance: usize,
    pub status: u32,
    /// `Retry-After` in seconds, when the answer had one.
    pub retry_after: Option<u64>,
    pub reason: String,
}

/// `Retry-After` as delta-seconds (an HTTP date is ignored: it is rare for LLM APIs).
pub fn retry_after_secs(value: &str) -> Option<u64> {
    value.trim().parse().ok()
}

/// What the client gets when every attempt failed: 429 when every instance said 429 (with
/// the largest `Retry-After`), else 502 with the last upstream answer's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GiveUp {
    AllRateLimited { retry_after: Option<u64> },
    BadGateway,
}

pub fn give_up(failures: &[Failure]) -> GiveUp {
    if !failures.is_empty() && failures.iter().all(|f| f.status == 429) {
        GiveUp::AllRateLimited {
            retry_after: failures.iter().filter_map(|f| f.retry_after).max(),
        }
    } else {
        GiveUp::BadGateway
    }
}

/// The message of the 429 answer when every instance was rate limited.
pub fn all_rate_limited_message(attempts: usize) -> String {
    format!("every instance tried ({attempts}) answered 429: rate limited")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(status: u32, retry_after: Option<u64>) -> Failure {
        Failure {
            instance: 0,
            status,
            retry_after,
            reason: format!("http_{status}"),
        }
    }

    #[test]
    fn retriable_statuses() {
        let p = Policy {
            on_429: true,
            statuses: vec![401],
            max_retries: 1,
            ..Policy::default()
        };
        assert!(p.is_retriable(429) && p.is_retriable(401));
        assert!(!p.is_retriable(500) && !p.is_retriable(200));
        let p = Policy {
            on_5xx: true,
            max_retries: 1,
            ..Policy::default()
        };
        assert!(p.is_retriable(500) && p.is_retriable(503) && p.is_retriable(599));
        assert!(!p.is_retriable(429) && !p.is_retriable(404));
        assert!(!Policy::default().retries_answers());
        assert!(!Policy {
            on_5xx: true,
            ..Policy::default()
        }
        .retries_answers());
    }

    #[test]
    fn retry_bounds() {
        let p = Policy {
            on_5xx: true,
            max_retries: 2,
            within_ms: Some(1000),
            ..Policy::default()
        };
        assert!(p.may_retry(0, 10) && p.may_retry(1, 1000));
        assert!(!p.may_retry(2, 10));
        assert!(!p.may_retry(0, 1001));
    }

    #[test]
    fn giving_up() {
        assert_eq!(
            give_up(&[fail(429, Some(7)), fail(429, Some(3))]),
            GiveUp::AllRateLimited {
                retry_after: Some(7)
            }
        );
        assert_eq!(
            give_up(&[fail(429, None), fail(429, None)]),
            GiveUp::AllRateLimited { retry_after: None }
        );
        assert_eq!(
            give_up(&[fail(429, Some(7)), fail(500, None)]),
            GiveUp::BadGateway
        );
        assert_eq!(give_up(&[]), GiveUp::BadGateway);
    }

    #[test]
    fn retry_after() {
        assert_eq!(retry_after_secs(" 7 "), Some(7));
        assert_eq!(retry_after_secs("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
