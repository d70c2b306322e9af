//! envoyproxy/ratelimit's configuration YAML (`domain`, nested `descriptors` with `key`,
//! optional `value`, `rate_limit: {unit, requests_per_unit, unlimited, name}`) and its lookup
//! of a request descriptor, as `src/config/config_impl.go` does it: walk the entries, matching
//! `key_value` first and then `key` alone; a limit applies only when it sits at the node that
//! matched the descriptor's LAST entry. Upstream has no `unit_multiplier`; wildcards,
//! `replaces`, `shadow_mode` and friends are not supported here and are refused.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use crate::rls::{RateLimitDescriptor, Unit};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct YamlRoot {
    domain: String,
    #[serde(default)]
    descriptors: Vec<YamlDescriptor>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct YamlDescriptor {
    key: String,
    #[serde(default)]
    value: String,
    rate_limit: Option<YamlRateLimit>,
    #[serde(default)]
    descriptors: Vec<YamlDescriptor>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct YamlRateLimit {
    #[serde(default)]
    requests_per_unit: u32,
    #[serde(default)]
    unit: String,
    #[serde(default)]
    unlimited: bool,
    #[serde(default)]
    name: String,
}

/// One configured limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfiguredLimit {
    pub requests_per_unit: u32,
    pub unit: Unit,
    pub unlimited: bool,
    pub name: String,
}

#[derive(Debug, Default)]
struct Node {
    children: HashMap<String, Node>,
    limit: Option<ConfiguredLimit>,
}

/// A loaded configuration: one domain and its descriptor tree.
#[derive(Debug)]
pub struct RateLimitConfig {
    pub domain: String,
    root: Node,
}

/// The length of a unit in seconds (upstream's `UnitToDivider`: a month is 30 days, a year 365).
pub fn unit_seconds(unit: Unit) -> Option<u64> {
    Some(match unit {
        Unit::Second => 1,
        Unit::Minute => 60,
        Unit::Hour => 3_600,
        Unit::Day => 86_400,
        Unit::Week => 7 * 86_400,
        Unit::Month => 30 * 86_400,
        Unit::Year => 365 * 86_400,
        Unit::Unknown => return None,
    })
}

fn load_descriptors(
    into: &mut Node,
    parent: &str,
    list: Vec<YamlDescriptor>,
) -> Result<(), String> {
    for d in list {
        if d.key.is_empty() {
            return Err("descriptor has empty key".into());
        }
        let final_key = if d.value.is_empty() {
            d.key.clone()
        } else {
            format!("{}_{}", d.key, d.value)
        };
        let full = format!("{parent}{final_key}");
        if final_key.contains('*') {
            return Err(format!(
                "{full}: wildcard values are not supported by this stand-in"
            ));
        }
        if into.children.contains_key(&final_key) {
            return Err(format!("duplicate descriptor composite key '{full}'"));
        }
        let limit = match d.rate_limit {
            None => None,
            Some(r) => {
                let unit =
                    Unit::from_str_name(&r.unit.to_uppercase()).filter(|u| *u != Unit::Unknown);
                match (r.unlimited, unit) {
                    (true, Some(_)) => {
                        return Err(format!(
                            "{full}: should not specify rate limit unit when unlimited"
                        ))
                    }
                    (false, None) => {
                        return Err(format!("{full}: invalid rate limit unit '{}'", r.unit))
                    }
                    _ => {}
                }
                Some(ConfiguredLimit {
                    requests_per_unit: r.requests_per_unit,
                    unit: unit.unwrap_or(Unit::Unknown),
                    unlimited: r.unlimited,
                    name: r.name,
                })
            }
        };
        let mut node = Node {
            children: HashMap::new(),
            limit,
        };
        load_descriptors(&mut node, &format!("{full}."), d.descriptors)?;
        into.children.insert(final_key, node);
    }
    Ok(())
}

impl RateLimitConfig {
    pub fn parse(yaml: &str) -> Result<RateLimitConfig, String> {
        let root: YamlRoot =
            serde_yaml::from_str(yaml).map_err(|e| format!("couldn't parse: {e}"))?;
        if root.domain.is_empty() {
            return Err("config file cannot have empty domain".into());
        }
        let mut node = Node::default();
        load_descriptors(&mut node, &format!("{}.", root.domain), root.descriptors)?;
        Ok(RateLimitConfig {
            domain: root.domain,
            root: node,
        })
    }

    pub fn load(path: &Path) -> Result<RateLimitConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("couldn't read file '{}': {e}", path.display()))?;
        Self::parse(&text)
    }

    /// The limit for one request descriptor, or `None` (no limit applies). A `limit` override
    /// carried by the descriptor wins, as upstream.
    pub fn get_limit(
        &self,
        domain: &str,
        descriptor: &RateLimitDescriptor,
    ) -> Option<ConfiguredLimit> {
        if domain != self.domain {
            return None;
        }
        if let Some(o) = &descriptor.limit {
            return Some(ConfiguredLimit {
                requests_per_unit: o.requests_per_unit,
                unit: Unit::try_from(o.unit).unwrap_or(Unit::Unknown),
                unlimited: false,
                name: String::new(),
            });
        }
        let mut level = &self.root;
        let last = descriptor.entries.len().checked_sub(1)?;
        for (i, entry) in descriptor.entries.iter().enumerate() {
            let next = level
                .children
                .get(&format!("{}_{}", entry.key, entry.value))
                .or_else(|| level.children.get(&entry.key))?;
            if i == last {
                return next.limit.clone();
            }
            if next.children.is_empty() {
                return None;
            }
            level = next;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rls::descriptor;

    const YAML: &str = "
domain: ai-proxy
descriptors:
  - key: instance
    value: a
    rate_limit: {unit: minute, requests_per_unit: 30}
    descriptors:
      - key: consumer
        value: alice
        rate_limit: {unit: hour, requests_per_unit: 10, name: alice-on-a}
  - key: instance
    value: b
    descriptors:
      - key: consumer
        rate_limit: {unit: second, requests_per_unit: 5}
  - key: instance
    value: c
    rate_limit: {unlimited: true}
";

    fn limit(domain: &str, entries: &[(&str, &str)]) -> Option<(u32, Unit, bool)> {
        let c = RateLimitConfig::parse(YAML).unwrap();
        c.get_limit(domain, &descriptor(entries))
            .map(|l| (l.requests_per_unit, l.unit, l.unlimited))
    }

    #[test]
    fn a_limit_applies_only_at_the_descriptors_last_entry() {
        assert_eq!(
            limit("ai-proxy", &[("instance", "a")]),
            Some((30, Unit::Minute, false))
        );
        assert_eq!(
            limit("ai-proxy", &[("instance", "a"), ("consumer", "alice")]),
            Some((10, Unit::Hour, false))
        );
        // A consumer with no limit of its own does not fall back to the instance's.
        assert_eq!(
            limit("ai-proxy", &[("instance", "a"), ("consumer", "bob")]),
            None
        );
        // A node without a rate_limit matches but limits nothing.
        assert_eq!(limit("ai-proxy", &[("instance", "b")]), None);
        // `key` without `value` matches any value.
        assert_eq!(
            limit("ai-proxy", &[("instance", "b"), ("consumer", "anyone")]),
            Some((5, Unit::Second, false))
        );
        assert_eq!(
            limit("ai-proxy", &[("instance", "c")]),
            Some((0, Unit::Unknown, true))
        );
        assert_eq!(limit("other", &[("instance", "a")]), None);
        assert_eq!(limit("ai-proxy", &[("instance", "z")]), None);
        assert_eq!(limit("ai-proxy", &[]), None);
    }

    #[test]
    fn what_upstream_refuses_is_refused() {
        for bad in [
            "domain: d\ndescriptors: [{key: k, rate_limit: {unit: fortnight, requests_per_unit: 1}}]",
            "domain: d\ndescriptors: [{key: k, rate_limit: {unit: minute, unlimited: true}}]",
            "domain: d\ndescriptors: [{key: k}, {key: k}]",
            "domain: d\ndescriptors: [{key: '', rate_limit: {unit: minute, requests_per_unit: 1}}]",
            "domain: d\ndescriptors: [{key: k, rate_limit: {unit: minute, requests_per_unit: 1, unit_multiplier: 5}}]",
            "domain: ''",
        ] {
            assert!(RateLimitConfig::parse(bad).is_err(), "accepted: {bad}");
        }
    }

    #[test]
    fn units_have_upstreams_lengths() {
        assert_eq!(unit_seconds(Unit::Minute), Some(60));
        assert_eq!(unit_seconds(Unit::Month), Some(2_592_000));
        assert_eq!(unit_seconds(Unit::Year), Some(31_536_000));
        assert_eq!(unit_seconds(Unit::Unknown), None);
    }
}
