//! The rate limit service's limits, written from the filter's parsed configuration so that the
//! two cannot drift: Limitador's limits file and envoyproxy/ratelimit's config. Both follow the
//! descriptor contract (BEHAVIOUR.md, "Rate limiting"): an instance limit is the descriptor
//! `instance=<name>`, a consumer limit `instance=<name>, consumer=<consumer>`, in `domain`.
//!
//! Limitador: one limit per instance limit and per consumer limit, without variables (one
//! counter each), whose condition matches a request that carries exactly that descriptor
//! (`{'instance': 'a'} in descriptors`), so that a request carrying both descriptors charges
//! each limit once and a consumer's descriptor never charges the instance's limit.
//! envoyproxy/ratelimit: a tree, `instance` → `consumer`; a limit applies only at the node
//! that matches a descriptor's last entry. Upstream has only the units second, minute, hour,
//! day, week, month (30 days) and year (365 days), and no `unit_multiplier`: a limit whose
//! `time_window` is none of them, or whose `limit` exceeds its u32 `requests_per_unit`, is
//! left out with a comment saying why.

use envoy_ai_proxy::config::{Config, LimitSet, RlsProtocol};
use envoy_ai_proxy::ratelimit::Limit;

/// One limit the filter sends a descriptor for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceLimit<'a> {
    pub instance: &'a str,
    /// `None` for an instance limit (the route's `rate_limiting`).
    pub consumer: Option<&'a str>,
    pub limit: Limit,
}

impl ServiceLimit<'_> {
    /// `instance a` or `consumer alice on instance a`.
    pub fn name(&self) -> String {
        match self.consumer {
            None => format!("instance {}", self.instance),
            Some(c) => format!("consumer {c} on instance {}", self.instance),
        }
    }
}

/// Every limit of the configuration: per instance (in configuration order), its instance
/// limit, then each consumer's limit on it (in configuration order).
pub fn service_limits(config: &Config) -> Vec<ServiceLimit<'_>> {
    let at = |set: &LimitSet, i: usize| set.per_instance.get(i).copied().flatten();
    let mut out = Vec::new();
    for (i, inst) in config.instances.iter().enumerate() {
        if let Some(limit) = config.rate_limits.route.as_ref().and_then(|s| at(s, i)) {
            out.push(ServiceLimit {
                instance: &inst.name,
                consumer: None,
                limit,
            });
        }
        for (consumer, set) in &config.rate_limits.consumers {
            if let Some(limit) = at(set, i) {
                out.push(ServiceLimit {
                    instance: &inst.name,
                    consumer: Some(consumer),
                    limit,
                });
            }
        }
    }
    out
}

/// A YAML double-quoted scalar (JSON's string syntax is a subset of it).
fn yaml_str(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// A CEL single-quoted string literal.
fn cel_str(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Limitador's condition for a request that carries exactly this limit's descriptor.
pub fn limitador_condition(l: &ServiceLimit<'_>) -> String {
    match l.consumer {
        None => format!("{{'instance': {}}} in descriptors", cel_str(l.instance)),
        Some(c) => format!(
            "{{'instance': {}, 'consumer': {}}} in descriptors",
            cel_str(l.instance),
            cel_str(c)
        ),
    }
}

/// Limitador's limits file (limitador-server's `LIMITS_FILE`, a YAML list of limits).
pub fn limitador_limits(config: &Config, domain: &str) -> String {
    let limits = service_limits(config);
    let mut out = format!(
        "# Limitador limits for envoy-ai-proxy, namespace (domain) {}: generated from the\n\
         # filter's configuration; one limit per instance limit and per consumer limit.\n",
        yaml_str(domain)
    );
    if limits.is_empty() {
        out.push_str("[]\n");
    }
    for l in &limits {
        out.push_str(&format!(
            "- namespace: {}\n  name: {}\n  max_value: {}\n  seconds: {}\n  conditions:\n    - {}\n  variables: []\n",
            yaml_str(domain),
            yaml_str(&l.name()),
            l.limit.limit,
            l.limit.window_secs,
            yaml_str(&limitador_condition(l)),
        ));
    }
    out
}

/// envoyproxy/ratelimit's unit for a window of `secs`, when it has one.
pub fn envoy_ratelimit_unit(secs: u64) -> Option<&'static str> {
    Some(match secs {
        1 => "second",
        60 => "minute",
        3_600 => "hour",
        86_400 => "day",
        604_800 => "week",
        2_592_000 => "month",
        31_536_000 => "year",
        _ => return None,
    })
}

/// The `rate_limit:` block at `indent`, or a comment saying why the limit is left out.
fn envoy_rate_limit(l: &ServiceLimit<'_>, indent: &str) -> String {
    match (
        envoy_ratelimit_unit(l.limit.window_secs),
        u32::try_from(l.limit.limit),
    ) {
        (Some(unit), Ok(rpu)) => format!(
            "{indent}rate_limit:\n{indent}  unit: {unit}\n{indent}  requests_per_unit: {rpu}\n"
        ),
        (None, _) => format!(
            "{indent}# {}: time_window {} s is no envoyproxy/ratelimit unit; left out\n",
            l.name(),
            l.limit.window_secs
        ),
        (_, Err(_)) => format!(
            "{indent}# {}: limit {} exceeds requests_per_unit (u32); left out\n",
            l.name(),
            l.limit.limit
        ),
    }
}

/// envoyproxy/ratelimit's configuration file (one domain).
pub fn envoy_ratelimit_config(config: &Config, domain: &str) -> String {
    let limits = service_limits(config);
    let mut out = format!(
        "# envoyproxy/ratelimit config for envoy-ai-proxy: generated from the filter's\n\
         # configuration; instance limits, and consumer limits nested under them.\n\
         domain: {}\n",
        yaml_str(domain)
    );
    if limits.is_empty() {
        out.push_str("descriptors: []\n");
        return out;
    }
    out.push_str("descriptors:\n");
    for inst in &config.instances {
        let mine: Vec<&ServiceLimit<'_>> =
            limits.iter().filter(|l| l.instance == inst.name).collect();
        if mine.is_empty() {
            continue;
        }
        out.push_str(&format!(
            "  - key: instance\n    value: {}\n",
            yaml_str(&inst.name)
        ));
        if let Some(l) = mine.iter().find(|l| l.consumer.is_none()) {
            out.push_str(&envoy_rate_limit(l, "    "));
        }
        let consumers: Vec<_> = mine.iter().filter(|l| l.consumer.is_some()).collect();
        if !consumers.is_empty() {
            out.push_str("    descriptors:\n");
        }
        for l in consumers {
            let name = l.consumer.unwrap_or_default();
            out.push_str(&format!(
                "      - key: consumer\n        value: {}\n",
                yaml_str(name)
            ));
            out.push_str(&envoy_rate_limit(l, "        "));
        }
    }
    out
}

/// The service's limits file for a plugin configuration with `rate_limiting.service`:
/// Limitador's limits (`protocol: limitador`) or envoyproxy/ratelimit's config (`envoy`).
pub fn service_limits_file(plugin_config: &serde_json::Value) -> anyhow::Result<String> {
    let config = envoy_ai_proxy::config::parse(plugin_config.to_string().as_bytes())
        .map_err(|e| anyhow::anyhow!("invalid plugin configuration: {e}"))?;
    let Some(service) = config.rate_limits.service.as_ref() else {
        anyhow::bail!("the configuration has no `rate_limiting.service`");
    };
    Ok(match service.protocol {
        RlsProtocol::Limitador => limitador_limits(&config, &service.domain),
        RlsProtocol::Envoy => envoy_ratelimit_config(&config, &service.domain),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const EXAMPLE_FILTER_CONFIG: &str =
        include_str!("../../ratelimit-service/examples/filter-config.json");

    fn parse(v: &serde_json::Value) -> Config {
        envoy_ai_proxy::config::parse(v.to_string().as_bytes()).expect("config")
    }

    #[test]
    fn the_examples_the_service_tests_load_are_what_is_written() {
        // ratelimit-service's tests run the service on these files: a drift fails here.
        let c = envoy_ai_proxy::config::parse(EXAMPLE_FILTER_CONFIG.as_bytes()).expect("config");
        assert_eq!(
            limitador_limits(&c, "ai-proxy"),
            include_str!("../../ratelimit-service/examples/limitador-limits.yaml")
        );
        assert_eq!(
            envoy_ratelimit_config(&c, "ai-proxy"),
            include_str!("../../ratelimit-service/examples/envoy-ratelimit.yaml")
        );
    }

    fn config() -> Config {
        parse(&json!({
            "instances": [{"name": "a", "provider": "openai"}, {"name": "b", "provider": "openai"},
                          {"name": "c", "provider": "openai"}],
            "rate_limiting": {"limit": 1000, "time_window": 3600,
                              "instances": [{"name": "b", "limit": 5, "time_window": 90}]},
            "consumers": [
                {"name": "jane", "rate_limiting": {"instances": [{"name": "c", "limit": 7, "time_window": 60}]}},
                {"name": "john", "rate_limiting": {"limit": 10, "time_window": 60}}
            ]
        }))
    }

    #[test]
    fn every_instance_and_consumer_limit_is_listed_once_in_order() {
        let c = config();
        let got: Vec<(String, u64, u64)> = service_limits(&c)
            .iter()
            .map(|l| (l.name(), l.limit.limit, l.limit.window_secs))
            .collect();
        let route = c.rate_limits.route.as_ref().unwrap();
        let mut want = Vec::new();
        for (i, inst) in c.instances.iter().enumerate() {
            if let Some(l) = route.per_instance[i] {
                want.push((format!("instance {}", inst.name), l.limit, l.window_secs));
            }
            for (name, set) in &c.rate_limits.consumers {
                if let Some(l) = set.per_instance[i] {
                    want.push((
                        format!("consumer {name} on instance {}", inst.name),
                        l.limit,
                        l.window_secs,
                    ));
                }
            }
        }
        assert_eq!(got, want);
        assert_eq!(got.len(), 3 + 1 + 3);
    }

    #[test]
    fn limitador_has_one_exact_descriptor_condition_per_limit() {
        let c = config();
        let yaml = limitador_limits(&c, "my-domain");
        let limits = service_limits(&c);
        assert_eq!(
            yaml.matches("- namespace: \"my-domain\"\n").count(),
            limits.len()
        );
        for l in &limits {
            let block = format!(
                "  name: {}\n  max_value: {}\n  seconds: {}\n  conditions:\n    - {}\n  variables: []\n",
                yaml_str(&l.name()),
                l.limit.limit,
                l.limit.window_secs,
                yaml_str(&limitador_condition(l))
            );
            assert!(yaml.contains(&block), "missing {block}\nin\n{yaml}");
        }
        let jane = limits.iter().find(|l| l.consumer == Some("jane")).unwrap();
        assert_eq!(
            limitador_condition(jane),
            "{'instance': 'c', 'consumer': 'jane'} in descriptors"
        );
    }

    #[test]
    fn envoy_ratelimit_nests_consumers_under_instances_and_says_what_it_leaves_out() {
        let c = config();
        let yaml = envoy_ratelimit_config(&c, "my-domain");
        assert!(yaml.contains("domain: \"my-domain\"\n"));
        for inst in &c.instances {
            assert_eq!(
                yaml.matches(&format!("value: {}\n", yaml_str(&inst.name)))
                    .count(),
                1
            );
        }
        // a: 1000/hour for the instance, john's 10/minute nested under it.
        assert!(yaml.contains(
            "  - key: instance\n    value: \"a\"\n    rate_limit:\n      unit: hour\n      requests_per_unit: 1000\n    descriptors:\n      - key: consumer\n        value: \"john\"\n        rate_limit:\n          unit: minute\n          requests_per_unit: 10\n"
        ), "{yaml}");
        // b's 90 s window has no unit.
        assert!(yaml.contains(
            "# instance b: time_window 90 s is no envoyproxy/ratelimit unit; left out\n"
        ));
        assert_eq!(
            yaml.matches("rate_limit:").count(),
            service_limits(&c).len() - 1
        );
    }

    #[test]
    fn units_and_limits_upstream_cannot_hold_are_left_out() {
        for (secs, unit) in [
            (1, "second"),
            (60, "minute"),
            (604_800, "week"),
            (2_592_000, "month"),
        ] {
            assert_eq!(envoy_ratelimit_unit(secs), Some(unit));
        }
        assert_eq!(envoy_ratelimit_unit(120), None);
        let c = parse(&json!({"provider": "openai",
            "rate_limiting": {"limit": 5_000_000_000_u64, "time_window": 60}}));
        let yaml = envoy_ratelimit_config(&c, "d");
        assert!(
            yaml.contains("limit 5000000000 exceeds requests_per_unit (u32); left out"),
            "{yaml}"
        );
        assert!(!yaml.contains("rate_limit:"));
    }

    #[test]
    fn no_limits_give_empty_but_valid_files() {
        let c = parse(&json!({"provider": "openai"}));
        assert!(limitador_limits(&c, "d").ends_with("\n[]\n"));
        assert!(envoy_ratelimit_config(&c, "d").ends_with("domain: \"d\"\ndescriptors: []\n"));
    }

    #[test]
    fn names_are_quoted_for_yaml_and_cel() {
        assert_eq!(cel_str("it's\\"), "'it\\'s\\\\'");
        assert_eq!(yaml_str("say \"hi\""), "\"say \\\"hi\\\"\"");
    }
}
