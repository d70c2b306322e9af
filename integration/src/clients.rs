//! The real SDK clients the tests drive (`integration/python/*.py`, `integration/node/*.mjs`):
//! where their interpreters are, and running one check script for its JSON results.

use std::process::Command;

use serde_json::Value;

use crate::envoy::repo_root;

/// The Python with the SDKs (`PYTHON`, else the project's virtualenv from `scripts/test.sh`).
pub fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| {
        repo_root()
            .join(".venv/bin/python")
            .to_string_lossy()
            .into_owned()
    })
}

/// Node (`NODE`, else `node` on the PATH).
pub fn node() -> String {
    std::env::var("NODE").unwrap_or_else(|_| "node".into())
}

/// The base URL then the checks, as the scripts take them.
pub fn args(base: &str, checks: &[&str]) -> Vec<String> {
    std::iter::once(base.to_string())
        .chain(checks.iter().map(|c| c.to_string()))
        .collect()
}

/// Runs a client script (relative to the repository) and returns its `results` object: the
/// script prints one JSON line and fails when a check raised. Panics with the output when it
/// failed.
pub async fn run(program: String, script: &str, args: Vec<String>) -> Value {
    let script = repo_root().join(script);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&program).arg(&script).args(&args).output()
    })
    .await
    .expect("the client task")
    .expect("run the client (scripts/test.sh installs the SDKs into .venv and node_modules)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "a client check failed:\n{stdout}");
    let printed: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON in the output:\n{stdout}"));
    printed["results"].clone()
}
