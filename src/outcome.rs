//! How an attempt ended, classified once: from the route (status and Envoy's
//! `response.code_details`) or from a callout (status and Envoy's synthesized body). The
//! fallback reason, the health outcome and the error the client gets all derive from the
//! one classification, so they cannot disagree.

use crate::error::ProxyError;
use crate::health::Outcome;

/// What ended an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The instance answered with this status.
    Answered(u32),
    /// Envoy gave up waiting (`response_timeout`, a callout's 504).
    Timeout,
    /// The connection could not be made or was reset before an answer.
    ConnectFailure,
    /// The cluster has no healthy host (Envoy's own health checks, or no endpoints).
    NoHealthyUpstream,
    /// The route names a cluster Envoy does not have.
    ClusterNotFound,
    /// Envoy refused to start the callout at all.
    DispatchFailed,
}

/// An answer through the route. `details` is `response.code_details` (read for 5xx only:
/// Envoy's own replies are 503 or 504).
pub fn of_route(status: u32, details: Option<&str>) -> Cause {
    match details {
        Some("response_timeout") | Some("upstream_per_try_timeout") => Cause::Timeout,
        Some(d) if d.starts_with("upstream_reset_before_response_started") => Cause::ConnectFailure,
        Some("no_healthy_upstream") => Cause::NoHealthyUpstream,
        Some("cluster_not_found") => Cause::ClusterNotFound,
        _ => Cause::Answered(status),
    }
}

/// A callout's answer. Envoy synthesizes one when it could not complete the call: 504
/// "upstream request timeout", 503 "upstream connect error ..." or "no healthy upstream".
pub fn of_callout(status: u32, body: &[u8]) -> Cause {
    if status == 504 && body.starts_with(b"upstream request timeout") {
        Cause::Timeout
    } else if status == 503 && body.starts_with(b"no healthy upstream") {
        Cause::NoHealthyUpstream
    } else if status == 0 || (status == 503 && body.starts_with(b"upstream connect error")) {
        Cause::ConnectFailure
    } else {
        Cause::Answered(status)
    }
}

impl Cause {
    /// The status the attempt counts as (Envoy's own 503/504 for its replies).
    pub fn status(&self) -> u32 {
        match self {
            Cause::Answered(s) => *s,
            Cause::Timeout => 504,
            _ => 503,
        }
    }

    /// The reason recorded for a failed attempt (`llm_fallback_reason`, metrics).
    pub fn reason(&self) -> String {
        match self {
            Cause::Answered(s) => format!("http_{s}"),
            Cause::Timeout => "timeout".into(),
            Cause::ConnectFailure => "connect_failure".into(),
            Cause::NoHealthyUpstream => "no_healthy_upstream".into(),
            Cause::ClusterNotFound => "cluster_not_found".into(),
            Cause::DispatchFailed => "callout_failed".into(),
        }
    }

    /// What the attempt says of the instance's health.
    pub fn health(&self) -> Outcome {
        match self {
            Cause::Answered(s) => Outcome::Status(*s),
            Cause::Timeout => Outcome::Timeout,
            _ => Outcome::ConnectFailure,
        }
    }

    /// Envoy answered for the upstream with a plain-text reply: the error the client gets
    /// in its place.
    pub fn local_reply(&self) -> Option<ProxyError> {
        match self {
            Cause::Answered(_) | Cause::DispatchFailed => None,
            Cause::Timeout => Some(ProxyError::UpstreamTimeout),
            Cause::ConnectFailure => {
                Some(ProxyError::UpstreamUnavailable("connection failed".into()))
            }
            Cause::NoHealthyUpstream => Some(ProxyError::UpstreamUnavailable(
                "no healthy upstream host".into(),
            )),
            Cause::ClusterNotFound => Some(ProxyError::UpstreamUnavailable(
                "the configured Envoy cluster does not exist".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_outcomes_agree_on_reason_health_and_reply() {
        type Case = (
            u32,
            Option<&'static str>,
            &'static str,
            Outcome,
            Option<u32>,
        );
        let cases: &[Case] = &[
            (
                503,
                Some("via_upstream"),
                "http_503",
                Outcome::Status(503),
                None,
            ),
            (200, None, "http_200", Outcome::Status(200), None),
            (
                504,
                Some("response_timeout"),
                "timeout",
                Outcome::Timeout,
                Some(504),
            ),
            (
                504,
                Some("upstream_per_try_timeout"),
                "timeout",
                Outcome::Timeout,
                Some(504),
            ),
            (
                503,
                Some("upstream_reset_before_response_started{remote_connection_failure}"),
                "connect_failure",
                Outcome::ConnectFailure,
                Some(503),
            ),
            (
                503,
                Some("no_healthy_upstream"),
                "no_healthy_upstream",
                Outcome::ConnectFailure,
                Some(503),
            ),
            (
                503,
                Some("cluster_not_found"),
                "cluster_not_found",
                Outcome::ConnectFailure,
                Some(503),
            ),
        ];
        for (status, details, reason, health, reply) in cases {
            let c = of_route(*status, *details);
            assert_eq!(c.reason(), *reason, "{details:?}");
            assert_eq!(c.health(), *health, "{details:?}");
            assert_eq!(c.local_reply().map(|e| e.status()), *reply, "{details:?}");
            assert_eq!(c.status(), *status, "{details:?}");
        }
        let missing = of_route(503, Some("cluster_not_found"))
            .local_reply()
            .unwrap();
        assert!(missing.message().contains("cluster does not exist"));
        let none = of_route(503, Some("no_healthy_upstream"))
            .local_reply()
            .unwrap();
        assert!(none.message().contains("no healthy upstream"));
    }

    #[test]
    fn callouts_are_classified_like_the_route() {
        assert_eq!(
            of_callout(504, b"upstream request timeout"),
            of_route(504, Some("response_timeout"))
        );
        assert_eq!(
            of_callout(503, b"upstream connect error or disconnect/reset before headers. reset reason: connection failure"),
            of_route(503, Some("upstream_reset_before_response_started{connection_failure}"))
        );
        assert_eq!(
            of_callout(503, b"no healthy upstream"),
            of_route(503, Some("no_healthy_upstream"))
        );
        assert_eq!(of_callout(503, b"{\"error\":{}}"), Cause::Answered(503));
        assert_eq!(of_callout(200, b""), Cause::Answered(200));
        assert_eq!(Cause::DispatchFailed.reason(), "callout_failed");
        assert_eq!(Cause::DispatchFailed.health(), Outcome::ConnectFailure);
    }
}
