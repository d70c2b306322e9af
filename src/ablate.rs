//! Benchmark-only switches: each cargo feature `ablate-*` (all off by default) turns one cost
//! centre off where the host applies effects and reads state, so that `scripts/bench.sh`
//! can measure what each costs in Envoy (the ablation table of docs/performance.md). They
//! are compile-time only: no configuration can reach them, and a normal build compiles
//! every check here to `true`.

use crate::effect::{Effect, Map};

/// Whether the host applies this effect.
pub fn applies(effect: &Effect) -> bool {
    match effect {
        Effect::FilterState(..) => !cfg!(feature = "ablate-filter-state"),
        Effect::Metric { .. } => !cfg!(feature = "ablate-metrics"),
        // The length and framing of a patched body belong to the patch: a stale length
        // would desynchronise the upstream connection.
        Effect::SetHeader(Map::Request, name, _) if name == "content-length" => {
            !cfg!(feature = "ablate-body-patch")
        }
        Effect::RemoveHeader(Map::Request, name) if name == "transfer-encoding" => {
            !cfg!(feature = "ablate-body-patch")
        }
        Effect::SetHeader(Map::Request, ..) | Effect::RemoveHeader(Map::Request, _) => {
            !cfg!(feature = "ablate-request-headers")
        }
        Effect::ReplaceBody {
            map: Map::Request, ..
        } => !cfg!(feature = "ablate-body-patch"),
        _ => true,
    }
}

/// Whether the host reads this shared-data key (an ablated read finds nothing).
pub fn reads(key: &str) -> bool {
    if key.starts_with("aiproxy.tokens.") {
        !cfg!(feature = "ablate-admission")
    } else if key.starts_with("aiproxy.hc.") {
        !cfg!(feature = "ablate-health")
    } else {
        true
    }
}

/// Whether the host reads the response body for the meter (ablated: the meter sees none).
pub fn meters() -> bool {
    !cfg!(feature = "ablate-response-metering")
}

/// Whether the host reads this Envoy attribute (`request.id` only names summary lines).
pub fn reads_property(path: &[&str]) -> bool {
    !(cfg!(feature = "ablate-summary-log") && path == ["request", "id"])
}

/// Whether log lines at this level reach Envoy (the summary lines are `info`).
pub fn logs(level: log::Level) -> bool {
    !(cfg!(feature = "ablate-summary-log") && level == log::Level::Info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_normal_build_ablates_nothing() {
        let effects = [
            Effect::state("llm_model", "m"),
            Effect::counter("c".into(), 1),
            Effect::SetHeader(Map::Request, "content-length".into(), "1".into()),
            Effect::RemoveHeader(Map::Request, "accept-encoding".into()),
            Effect::ReplaceBody {
                map: Map::Request,
                size: 1,
                bytes: vec![b'x'],
            },
        ];
        if cfg!(feature = "ablate-filter-state")
            || cfg!(feature = "ablate-metrics")
            || cfg!(feature = "ablate-request-headers")
            || cfg!(feature = "ablate-body-patch")
        {
            return;
        }
        assert!(effects.iter().all(applies));
        assert!(reads("aiproxy.tokens.x") || cfg!(feature = "ablate-admission"));
        assert!(reads("aiproxy.hc.x") || cfg!(feature = "ablate-health"));
        assert!(reads("aiproxy.lease.x"));
    }
}
