//! The command line: `--port`, `--host`, `--redis`, `--limits`, `--flavor`,
//! `--rate-limit-headers`. Hand-parsed, so that the binary needs no argument-parsing crate.

use std::path::PathBuf;

pub const USAGE: &str = "\
usage: ai-ratelimit-service [--port P] [--host ADDR] [--redis URL] [--limits FILE]
                            [--flavor limitador|envoy-ratelimit]
                            [--rate-limit-headers NONE|DRAFT_VERSION_03]

  --port P        port to listen on (default 8081; 0 picks a free one). The first line on
                  stdout is always `listening on HOST:PORT`.
  --host ADDR     address to bind (default 127.0.0.1)
  --redis URL     keep the counters in Redis (e.g. redis://127.0.0.1:6379); else in memory
  --limits FILE   limitador: Limitador's limits YAML (a list of limits);
                  envoy-ratelimit: envoyproxy/ratelimit's config YAML (required)
  --flavor F      limitador (default): ShouldRateLimit, CheckRateLimit, Report, Reserve,
                  Commit as Limitador does; envoy-ratelimit: ShouldRateLimit only, with
                  envoyproxy/ratelimit's semantics
  --rate-limit-headers H   limitador flavor: DRAFT_VERSION_03 adds X-RateLimit-* headers to
                  ShouldRateLimit's answer, as limitador-server's flag does (default NONE)";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Limitador,
    EnvoyRatelimit,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub host: String,
    pub port: u16,
    pub redis: Option<String>,
    pub limits: Option<PathBuf>,
    pub flavor: Flavor,
    pub draft03_headers: bool,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            host: "127.0.0.1".into(),
            port: 8081,
            redis: None,
            limits: None,
            flavor: Flavor::Limitador,
            draft03_headers: false,
        }
    }
}

/// Parses the arguments after the program name. `Err` carries the message to print.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut out = Args::default();
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.into());
        }
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--port" => {
                let v = value()?;
                out.port = v.parse().map_err(|_| format!("--port: not a port: {v}"))?;
            }
            "--host" => out.host = value()?,
            "--redis" => out.redis = Some(value()?),
            "--limits" => out.limits = Some(PathBuf::from(value()?)),
            "--flavor" => {
                out.flavor = match value()?.as_str() {
                    "limitador" => Flavor::Limitador,
                    "envoy-ratelimit" => Flavor::EnvoyRatelimit,
                    other => return Err(format!("--flavor: unknown flavor `{other}`\n{USAGE}")),
                }
            }
            "--rate-limit-headers" => {
                out.draft03_headers = match value()?.as_str() {
                    "NONE" => false,
                    "DRAFT_VERSION_03" => true,
                    other => return Err(format!("--rate-limit-headers: unknown `{other}`")),
                }
            }
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    if out.flavor == Flavor::EnvoyRatelimit && out.limits.is_none() {
        return Err(
            "--flavor envoy-ratelimit needs --limits (envoyproxy/ratelimit's config)".into(),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<Args, String> {
        parse(s.split_whitespace().map(String::from))
    }

    #[test]
    fn flags_are_read() {
        let a = parse_str(
            "--port 0 --redis redis://127.0.0.1:1 --limits l.yaml --flavor envoy-ratelimit",
        )
        .unwrap();
        assert_eq!(a.port, 0);
        assert_eq!(a.redis.as_deref(), Some("redis://127.0.0.1:1"));
        assert_eq!(a.limits, Some(PathBuf::from("l.yaml")));
        assert_eq!(a.flavor, Flavor::EnvoyRatelimit);
        assert_eq!(parse_str("").unwrap(), Args::default());
    }

    #[test]
    fn mistakes_are_refused() {
        for bad in [
            "--port",
            "--port x",
            "--flavor redis",
            "--what",
            "--flavor envoy-ratelimit",
        ] {
            assert!(parse_str(bad).is_err(), "accepted: {bad}");
        }
    }
}
