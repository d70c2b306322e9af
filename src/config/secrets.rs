//! Secrets out of the configuration: `$env://NAME` in an `auth.header` or `auth.query`
//! value (APISIX's syntax, alone or inside a longer value such as `Bearer $env://KEY`),
//! resolved once at configure time from the VM's environment (Envoy's
//! `vm_config.environment_variables`). A missing variable refuses the configuration with
//! the variable's name, never a value.

use serde_json::{Map, Value};

use super::raw::{RawAuth, RawConfig};
use super::ConfigError;

const MARK: &str = "$env://";

/// How references are treated.
#[derive(Clone, Copy)]
pub enum Secrets<'a> {
    /// Left as written (tools that only check or translate a configuration).
    Keep,
    /// Replaced by the variable's value.
    From(&'a dyn Fn(&str) -> Option<String>),
}

/// The variables a configuration text refers to, in order, each once.
pub fn references(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(at) = crate::text::find(rest, MARK) {
        let after = rest.get(at.saturating_add(MARK.len())..).unwrap_or("");
        let name = name_at(after);
        if !name.is_empty() && !out.iter().any(|n| n == name) {
            out.push(name.to_string());
        }
        rest = after;
    }
    out
}

/// The variable name at the start of `s`: `[A-Za-z0-9_]*`.
fn name_at(s: &str) -> &str {
    let len = s
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
        .count();
    s.get(..len).unwrap_or("")
}

/// Resolves every reference in the auth values of the configuration.
#[inline(never)] // compiled on its own: see "Round 5" in docs/performance.md
pub(super) fn resolve_all(raw: &mut RawConfig, secrets: Secrets<'_>) -> Result<(), ConfigError> {
    if let Some(auth) = raw.auth.as_mut() {
        resolve_auth(auth, "", secrets)?;
    }
    for (i, inst) in raw.instances.iter_mut().flatten().enumerate() {
        if let Some(auth) = inst.auth.as_mut() {
            resolve_auth(auth, &format!("instances[{i}]."), secrets)?;
        }
    }
    Ok(())
}

fn resolve_auth(auth: &mut RawAuth, prefix: &str, secrets: Secrets<'_>) -> Result<(), ConfigError> {
    for (kind, map) in [
        ("header", auth.header.as_mut()),
        ("query", auth.query.as_mut()),
    ] {
        if let Some(map) = map {
            resolve_map(map, &format!("{prefix}auth.{kind}"), secrets)?;
        }
    }
    Ok(())
}

fn resolve_map(
    map: &mut Map<String, Value>,
    at: &str,
    secrets: Secrets<'_>,
) -> Result<(), ConfigError> {
    for (name, value) in map.iter_mut() {
        if let Value::String(s) = value {
            *s = resolve(s, &format!("{at}.{name}"), secrets)?;
        }
    }
    Ok(())
}

/// One value with its references resolved.
fn resolve(value: &str, path: &str, secrets: Secrets<'_>) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = crate::text::find(rest, MARK) {
        out.push_str(rest.get(..at).unwrap_or(""));
        let after = rest.get(at.saturating_add(MARK.len())..).unwrap_or("");
        let name = name_at(after);
        if name.is_empty() {
            return Err(ConfigError::new(
                path,
                "has `$env://` without a variable name ([A-Za-z0-9_])",
            ));
        }
        match secrets {
            Secrets::Keep => {
                out.push_str(MARK);
                out.push_str(name);
            }
            Secrets::From(env) => match env(name) {
                Some(v) => out.push_str(&v),
                None => {
                    return Err(ConfigError::new(
                        path,
                        format!(
                            "refers to the environment variable `{name}`, which the Wasm VM does not have: \
                             add it to vm_config.environment_variables (host_env_keys)"
                        ),
                    ))
                }
            },
        }
        rest = after.get(name.len()..).unwrap_or("");
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_with;

    fn env(name: &str) -> Option<String> {
        (name == "OPENAI_API_KEY").then(|| "sk-real".to_string())
    }

    #[test]
    fn references_resolve_in_headers_and_queries_of_both_shapes() {
        let c = parse_with(
            br#"{"provider":"openai","auth":{"header":{"Authorization":"Bearer $env://OPENAI_API_KEY"},
                 "query":{"key":"$env://OPENAI_API_KEY"}}}"#,
            Secrets::From(&env),
        )
        .unwrap();
        let inst = &c.instances[0];
        assert_eq!(
            inst.auth_headers,
            [("authorization".to_string(), "Bearer sk-real".to_string())]
        );
        assert!(inst
            .target
            .path(crate::provider::ApiKind::Chat)
            .unwrap()
            .ends_with("?key=sk-real"));
        let c = parse_with(
            br#"{"instances":[{"name":"a","provider":"openai",
                 "auth":{"header":{"api-key":"$env://OPENAI_API_KEY"}}}]}"#,
            Secrets::From(&env),
        )
        .unwrap();
        assert_eq!(c.instances[0].auth_headers[0].1, "sk-real");
    }

    #[test]
    fn a_missing_variable_is_named_and_nothing_else_is_said() {
        let err = parse_with(
            br#"{"instances":[{"name":"a","provider":"openai",
                 "auth":{"header":{"Authorization":"Bearer $env://NOPE_KEY"}}}]}"#,
            Secrets::From(&env),
        )
        .unwrap_err();
        assert_eq!(err.path, "instances[0].auth.header.Authorization");
        assert!(err.message.contains("`NOPE_KEY`"), "{}", err.message);
        assert!(!err.to_string().contains("Bearer"));
        let err = parse_with(
            br#"{"provider":"openai","auth":{"header":{"x":"$env://"}}}"#,
            Secrets::Keep,
        )
        .unwrap_err();
        assert_eq!(err.path, "auth.header.x");
    }

    #[test]
    fn tools_keep_references_and_can_list_them() {
        let text = r#"{"provider":"openai","auth":{"header":{"Authorization":"Bearer $env://A_KEY"},
                       "query":{"k":"$env://B_KEY$env://A_KEY"}}}"#;
        let c = parse_with(text.as_bytes(), Secrets::Keep).unwrap();
        assert_eq!(c.instances[0].auth_headers[0].1, "Bearer $env://A_KEY");
        assert_eq!(references(text), ["A_KEY", "B_KEY"]);
    }
}
