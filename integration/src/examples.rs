//! The worked examples (APISIX's, carried over): each is a plugin configuration in
//! `examples/` and a generated bootstrap in `envoy/examples/`. `envoy-config
//! --write-examples` regenerates the bootstraps; the tests check they are up to date,
//! valid, and do what their example says.

use std::path::PathBuf;

use serde_json::Value;

use crate::bootstrap::{generate, Options};
use crate::envoy::repo_root;

/// What the examples' `$env://` references resolve to in the tests (placeholders, as in
/// APISIX's documentation).
pub const TEST_ENV: &[(&str, &str)] = &[
    ("OPENAI_API_KEY", "sk-your-openai-key"),
    ("DEEPSEEK_API_KEY", "sk-your-deepseek-key"),
    ("AZURE_OPENAI_API_KEY", "your-azure-key"),
    ("LLM_API_KEY", "your-llm-key"),
];

pub struct Example {
    /// File stem in `examples/` and `envoy/examples/`.
    pub name: &'static str,
    pub description: &'static str,
    /// `api_key_auth` credentials (client, key) for the example.
    pub api_keys: &'static [(&'static str, &'static str)],
}

pub const EXAMPLES: &[Example] = &[
    Example {
        name: "load-balancing-8-2",
        description: "two instances, 8:2 by weight",
        api_keys: &[],
    },
    Example {
        name: "priority-rate-limit-fallback",
        description: "OpenAI first until its token budget is spent, then DeepSeek",
        api_keys: &[],
    },
    Example {
        name: "consumer-rate-limits",
        description: "token budgets per consumer, consumers from Envoy's api_key_auth",
        api_keys: &[("johndoe", "john-key"), ("janedoe", "jane-key")],
    },
    Example {
        name: "max-tokens-per-instance",
        description: "a different max_tokens per instance",
        api_keys: &[],
    },
    Example {
        name: "embeddings",
        description: "embeddings on OpenAI and Azure OpenAI",
        api_keys: &[],
    },
    Example {
        name: "health-checks",
        description: "active and passive health checks on one of two instances",
        api_keys: &[],
    },
    Example {
        name: "access-log",
        description: "the filter's values in Envoy's access log, plus summary log lines",
        api_keys: &[],
    },
];

impl Example {
    pub fn config_path(&self) -> PathBuf {
        repo_root()
            .join("examples")
            .join(format!("{}.json", self.name))
    }

    pub fn bootstrap_path(&self) -> PathBuf {
        repo_root()
            .join("envoy/examples")
            .join(format!("{}.yaml", self.name))
    }

    pub fn plugin_config(&self) -> anyhow::Result<Value> {
        Ok(serde_json::from_str(&std::fs::read_to_string(
            self.config_path(),
        )?)?)
    }

    pub fn options(&self) -> Options {
        Options {
            api_keys: self
                .api_keys
                .iter()
                .map(|(c, k)| (c.to_string(), k.to_string()))
                .collect(),
            header: format!(
                "Example: {}.\nGenerated from examples/{}.json by\n  cargo run -p integration --bin envoy-config -- --write-examples\nRun from the repository root (the .wasm path is relative): envoy -c envoy/examples/{}.yaml",
                self.description, self.name, self.name
            ),
            ..Options::default()
        }
    }

    /// The bootstrap as it should be in `envoy/examples/`.
    pub fn generate(&self) -> anyhow::Result<String> {
        generate(&self.plugin_config()?, &self.options())
    }
}
