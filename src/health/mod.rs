//! Instance health: the active-probe state machine (APISIX `checks.active`) and passive
//! checks from real traffic (consecutive failures trip a cooldown; a 429 with `Retry-After`
//! sidelines the instance that long). States are values kept in shared data (`shared`), so
//! every worker sees them; `prober` decides who probes what, when.

pub mod prober;
pub mod shared;

/// What one probe, or one real answer, came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Status(u32),
    Timeout,
    /// The connection could not be made (refused, reset, no host).
    ConnectFailure,
}

/// `checks.active`, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Active {
    /// `tcp`: any HTTP answer counts as reachable.
    pub tcp: bool,
    pub timeout_ms: u64,
    pub method: String,
    /// The probe's path, with the instance's `auth.query` appended.
    pub path: String,
    /// The probe's body (a chat request, say), sent as JSON.
    pub body: Option<Vec<u8>>,
    pub host: Option<String>,
    pub headers: Vec<(String, String)>,
    /// Probe period while healthy / unhealthy; 0: do not probe in that state.
    pub healthy_interval_ms: u64,
    pub unhealthy_interval_ms: u64,
    pub successes: u32,
    pub healthy_statuses: Vec<u16>,
    pub http_failures: u32,
    pub tcp_failures: u32,
    pub timeouts: u32,
    pub unhealthy_statuses: Vec<u16>,
}

impl Active {
    pub fn interval_ms(&self, healthy: bool) -> u64 {
        if healthy {
            self.healthy_interval_ms
        } else {
            self.unhealthy_interval_ms
        }
    }
}

/// `checks.passive`, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passive {
    pub statuses: Vec<u16>,
    pub http_failures: u32,
    pub tcp_failures: u32,
    pub timeouts: u32,
    pub cooldown_ms: u64,
}

/// The active checker's view of one instance. Starts healthy, as in APISIX.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveState {
    pub healthy: bool,
    pub successes: u32,
    pub http_failures: u32,
    pub tcp_failures: u32,
    pub timeouts: u32,
}

impl Default for ActiveState {
    fn default() -> Self {
        ActiveState {
            healthy: true,
            successes: 0,
            http_failures: 0,
            tcp_failures: 0,
            timeouts: 0,
        }
    }
}

impl ActiveState {
    pub fn encode(&self) -> Vec<u8> {
        format!(
            "{}:{}:{}:{}:{}",
            u8::from(self.healthy),
            self.successes,
            self.http_failures,
            self.tcp_failures,
            self.timeouts
        )
        .into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Option<ActiveState> {
        let s = std::str::from_utf8(bytes).ok()?;
        let mut it = s.split(':').map(|p| p.parse::<u32>().ok());
        let mut next = || it.next().flatten();
        Some(ActiveState {
            healthy: next()? == 1,
            successes: next()?,
            http_failures: next()?,
            tcp_failures: next()?,
            timeouts: next()?,
        })
    }

    /// The state after a probe. The bool says whether health flipped.
    pub fn after(self, check: &Active, outcome: Outcome) -> (ActiveState, bool) {
        let good = match outcome {
            Outcome::Status(_) if check.tcp => Some(true),
            Outcome::Status(s) if check.healthy_statuses.iter().any(|h| u32::from(*h) == s) => {
                Some(true)
            }
            Outcome::Status(s) if check.unhealthy_statuses.iter().any(|h| u32::from(*h) == s) => {
                Some(false)
            }
            // A status in neither list says nothing.
            Outcome::Status(_) => None,
            Outcome::Timeout | Outcome::ConnectFailure => Some(false),
        };
        let mut s = self;
        match good {
            None => (s, false),
            Some(true) => {
                s.http_failures = 0;
                s.tcp_failures = 0;
                s.timeouts = 0;
                if s.healthy {
                    return (s, false);
                }
                s.successes = s.successes.saturating_add(1);
                if s.successes >= check.successes {
                    (ActiveState::default(), true)
                } else {
                    (s, false)
                }
            }
            Some(false) => {
                s.successes = 0;
                let tripped = match outcome {
                    Outcome::Timeout => {
                        s.timeouts = s.timeouts.saturating_add(1);
                        s.timeouts >= check.timeouts
                    }
                    Outcome::ConnectFailure => {
                        s.tcp_failures = s.tcp_failures.saturating_add(1);
                        s.tcp_failures >= check.tcp_failures
                    }
                    Outcome::Status(_) => {
                        s.http_failures = s.http_failures.saturating_add(1);
                        s.http_failures >= check.http_failures
                    }
                };
                if s.healthy && tripped {
                    (
                        ActiveState {
                            healthy: false,
                            ..ActiveState::default()
                        },
                        true,
                    )
                } else {
                    (s, false)
                }
            }
        }
    }
}

/// What real traffic says of one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PassiveState {
    pub http_failures: u32,
    pub tcp_failures: u32,
    pub timeouts: u32,
    /// Milliseconds since the epoch until which the instance is left out.
    pub down_until_ms: u64,
}

impl PassiveState {
    pub fn encode(&self) -> Vec<u8> {
        format!(
            "{}:{}:{}:{}",
            self.http_failures, self.tcp_failures, self.timeouts, self.down_until_ms
        )
        .into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Option<PassiveState> {
        let s = std::str::from_utf8(bytes).ok()?;
        let mut it = s.split(':');
        Some(PassiveState {
            http_failures: it.next()?.parse().ok()?,
            tcp_failures: it.next()?.parse().ok()?,
            timeouts: it.next()?.parse().ok()?,
            down_until_ms: it.next()?.parse().ok()?,
        })
    }

    pub fn down(&self, now_ms: u64) -> bool {
        now_ms < self.down_until_ms
    }

    /// The state after a real answer; `None` when nothing changes (no write needed). The
    /// bool says whether the instance was just taken out.
    pub fn after(
        self,
        check: &Passive,
        outcome: Outcome,
        retry_after_secs: Option<u64>,
        now_ms: u64,
    ) -> Option<(PassiveState, bool)> {
        let mut s = self;
        if let (Outcome::Status(429), Some(secs)) = (outcome, retry_after_secs) {
            let until = now_ms.saturating_add(secs.saturating_mul(1000));
            if until <= s.down_until_ms {
                return None;
            }
            s.down_until_ms = until;
            return Some((s, true));
        }
        let tripped = match outcome {
            Outcome::Status(st) if check.statuses.iter().any(|x| u32::from(*x) == st) => {
                s.http_failures = s.http_failures.saturating_add(1);
                s.http_failures >= check.http_failures
            }
            Outcome::Timeout => {
                s.timeouts = s.timeouts.saturating_add(1);
                s.timeouts >= check.timeouts
            }
            Outcome::ConnectFailure => {
                s.tcp_failures = s.tcp_failures.saturating_add(1);
                s.tcp_failures >= check.tcp_failures
            }
            Outcome::Status(_) => {
                // A good answer closes the circuit.
                let reset = PassiveState {
                    down_until_ms: s.down_until_ms,
                    ..PassiveState::default()
                };
                return (reset != s).then_some((reset, false));
            }
        };
        if !tripped {
            return Some((s, false));
        }
        // Out for the cooldown; afterwards half-open: one more failure takes it out again.
        let half_open = PassiveState {
            http_failures: check.http_failures.saturating_sub(1),
            tcp_failures: check.tcp_failures.saturating_sub(1),
            timeouts: check.timeouts.saturating_sub(1),
            down_until_ms: now_ms.saturating_add(check.cooldown_ms),
        };
        Some((half_open, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn active(tcp: bool) -> Active {
        Active {
            tcp,
            timeout_ms: 1000,
            method: "GET".into(),
            path: "/".into(),
            body: None,
            host: None,
            headers: vec![],
            healthy_interval_ms: 1000,
            unhealthy_interval_ms: 1000,
            successes: 2,
            healthy_statuses: vec![200, 302],
            http_failures: 3,
            tcp_failures: 2,
            timeouts: 2,
            unhealthy_statuses: vec![500, 503],
        }
    }

    fn passive() -> Passive {
        Passive {
            statuses: vec![500, 502, 503, 504],
            http_failures: 3,
            tcp_failures: 2,
            timeouts: 2,
            cooldown_ms: 10_000,
        }
    }

    fn run(check: &Active, outcomes: &[Outcome]) -> (ActiveState, Vec<usize>) {
        let mut s = ActiveState::default();
        let mut flips = Vec::new();
        for (i, o) in outcomes.iter().enumerate() {
            let (n, flipped) = s.after(check, *o);
            if flipped {
                flips.push(i);
            }
            s = n;
        }
        (s, flips)
    }

    #[test]
    fn active_goes_down_after_failures_and_back_after_successes() {
        let c = active(false);
        let (s, flips) = run(
            &c,
            &[
                Outcome::Status(500),
                Outcome::Status(200),
                Outcome::Status(500),
                Outcome::Status(500),
            ],
        );
        assert!(s.healthy && flips.is_empty(), "a success in between resets");
        let (s, flips) = run(&c, &[Outcome::Status(500); 3]);
        assert!(!s.healthy);
        assert_eq!(flips, vec![2]);
        let (s, flips) = run(
            &c,
            &[
                Outcome::Status(503),
                Outcome::Status(503),
                Outcome::Status(503),
                Outcome::Status(200),
                Outcome::Status(500),
                Outcome::Status(200),
                Outcome::Status(200),
            ],
        );
        assert!(s.healthy);
        assert_eq!(flips, vec![2, 6], "a failure resets the successes");
        let (s, _) = run(&c, &[Outcome::Timeout, Outcome::Timeout]);
        assert!(!s.healthy);
        let (s, _) = run(&c, &[Outcome::ConnectFailure, Outcome::ConnectFailure]);
        assert!(!s.healthy);
        // 404 is in neither list: no change.
        let (s, _) = run(&c, &[Outcome::Status(404); 10]);
        assert!(s.healthy);
    }

    #[test]
    fn tcp_checks_count_any_answer_as_reachable() {
        let c = active(true);
        let (s, _) = run(&c, &[Outcome::Status(500); 10]);
        assert!(s.healthy);
        let (s, _) = run(&c, &[Outcome::ConnectFailure, Outcome::ConnectFailure]);
        assert!(!s.healthy);
    }

    #[test]
    fn states_round_trip() {
        let a = ActiveState {
            healthy: false,
            successes: 1,
            http_failures: 2,
            tcp_failures: 3,
            timeouts: 4,
        };
        assert_eq!(ActiveState::decode(&a.encode()), Some(a));
        let p = PassiveState {
            http_failures: 1,
            tcp_failures: 2,
            timeouts: 3,
            down_until_ms: 99,
        };
        assert_eq!(PassiveState::decode(&p.encode()), Some(p));
        assert_eq!(ActiveState::decode(b"x"), None);
    }

    #[test]
    fn passive_trips_after_consecutive_failures_then_half_opens() {
        let c = passive();
        let mut s = PassiveState::default();
        for _ in 0..2 {
            let (n, out) = s.after(&c, Outcome::Status(503), None, 1000).unwrap();
            assert!(!out);
            s = n;
        }
        let (n, out) = s.after(&c, Outcome::Status(503), None, 1000).unwrap();
        assert!(out && n.down(1000) && n.down(10_999) && !n.down(11_000));
        // After the cooldown one more failure takes it out again ...
        let (again, out) = n.after(&c, Outcome::Status(500), None, 12_000).unwrap();
        assert!(out && again.down(12_000));
        // ... and a success closes the circuit.
        let (ok, out) = n.after(&c, Outcome::Status(200), None, 12_000).unwrap();
        assert!(!out && ok.http_failures == 0);
        // Nothing to reset: no write.
        assert_eq!(
            PassiveState::default().after(&c, Outcome::Status(200), None, 0),
            None
        );
        // A 404 is an answer, not an instance failure.
        assert_eq!(
            PassiveState::default().after(&c, Outcome::Status(404), None, 0),
            None
        );
    }

    #[test]
    fn retry_after_sidelines_for_that_long() {
        let c = passive();
        let (s, out) = PassiveState::default()
            .after(&c, Outcome::Status(429), Some(2), 5000)
            .unwrap();
        assert!(out && s.down(6999) && !s.down(7000));
        // A 429 without Retry-After is no failure of the instance.
        assert_eq!(
            PassiveState::default().after(&c, Outcome::Status(429), None, 5000),
            None
        );
    }
}
