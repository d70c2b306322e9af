//! The Envoy clusters a configuration needs: for each instance, its cluster name, host,
//! port and whether it speaks TLS, from the provider's default host or `override.endpoint`.
//! Tools turn these into bootstrap YAML so users do not write clusters by hand.

use crate::config::Config;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    pub name: String,
    pub host: String,
    pub port: u16,
    /// TLS with SNI `host` and certificate verification against the system CAs.
    pub tls: bool,
}

/// One cluster per distinct cluster name, in instance order. Two instances may share a
/// cluster only if they agree on where it points.
pub fn cluster_specs(config: &Config) -> Result<Vec<ClusterSpec>, String> {
    let mut out: Vec<ClusterSpec> = Vec::new();
    for inst in &config.instances {
        let (host, port) = split_authority(&inst.target.authority, inst.target.tls)?;
        let spec = ClusterSpec {
            name: inst.cluster.clone(),
            host,
            port,
            tls: inst.target.tls,
        };
        match out.iter().find(|c| c.name == spec.name) {
            None => out.push(spec),
            Some(existing) if *existing == spec => {}
            Some(existing) => {
                return Err(format!(
                    "cluster `{}` is used by instances pointing to {}:{} and {}:{}",
                    spec.name, existing.host, existing.port, spec.host, spec.port
                ))
            }
        }
    }
    Ok(out)
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`; the port defaults to 443 with TLS, else 80.
fn split_authority(authority: &str, tls: bool) -> Result<(String, u16), String> {
    let default = if tls { 443 } else { 80 };
    let bad = || format!("`{authority}` is not host[:port]");
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if after.is_empty() => default,
            None => return Err(bad()),
        };
        return Ok((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => {
            Ok((host.to_string(), port.parse().map_err(|_| bad())?))
        }
        Some(_) => Err(bad()),
        None => Ok((authority.to_string(), default)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn specs(cfg: &str) -> Result<Vec<ClusterSpec>, String> {
        cluster_specs(&config::parse(cfg.as_bytes()).unwrap())
    }

    fn spec(name: &str, host: &str, port: u16, tls: bool) -> ClusterSpec {
        ClusterSpec {
            name: name.into(),
            host: host.into(),
            port,
            tls,
        }
    }

    #[test]
    fn from_providers_and_endpoints() {
        let got = specs(
            r#"{"instances":[
              {"name":"oa","provider":"openai"},
              {"name":"ds","provider":"deepseek","cluster":"deepseek_prod"},
              {"name":"az","provider":"openai-compatible","override":{"endpoint":"https://x.openai.azure.com/openai/deployments/d/chat/completions?api-version=1"}},
              {"name":"local","provider":"openai-compatible","override":{"endpoint":"http://10.0.0.5:8000"}},
              {"name":"v6","provider":"openai-compatible","override":{"endpoint":"https://[2001:db8::1]:8443/v1"}}
            ]}"#,
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                spec("oa", "api.openai.com", 443, true),
                spec("deepseek_prod", "api.deepseek.com", 443, true),
                spec("az", "x.openai.azure.com", 443, true),
                spec("local", "10.0.0.5", 8000, false),
                spec("v6", "2001:db8::1", 8443, true),
            ]
        );
    }

    #[test]
    fn every_preset_with_a_host_gets_a_tls_cluster_on_443() {
        for preset in crate::provider::PRESETS {
            let cfg = format!(
                r#"{{"provider":"{}","override":{{"endpoint":"https://e.example"}}}}"#,
                preset.name
            );
            let plain = format!(r#"{{"provider":"{}"}}"#, preset.name);
            let got = if preset.host.is_empty() {
                assert!(config::parse(plain.as_bytes()).is_err(), "{}", preset.name);
                specs(&cfg).unwrap()
            } else {
                specs(&plain).unwrap()
            };
            let host = if preset.host.is_empty() {
                "e.example"
            } else {
                preset.host
            };
            assert_eq!(
                got,
                vec![spec(preset.name, host, 443, true)],
                "{}",
                preset.name
            );
        }
    }

    #[test]
    fn shared_clusters_must_agree() {
        let same = r#"{"instances":[
            {"name":"a","provider":"openai","cluster":"c"},
            {"name":"b","provider":"openai","cluster":"c"}]}"#;
        assert_eq!(specs(same).unwrap().len(), 1);
        let clash = r#"{"instances":[
            {"name":"a","provider":"openai","cluster":"c"},
            {"name":"b","provider":"deepseek","cluster":"c"}]}"#;
        assert!(specs(clash).unwrap_err().contains("cluster `c`"));
    }

    #[test]
    fn authorities() {
        assert_eq!(split_authority("h", true), Ok(("h".into(), 443)));
        assert_eq!(split_authority("h", false), Ok(("h".into(), 80)));
        assert_eq!(split_authority("h:9", true), Ok(("h".into(), 9)));
        assert!(split_authority("h:x", true).is_err());
        assert!(split_authority("[::1", true).is_err());
    }
}
