//! The demo that `scripts/run.sh` starts: its plugin configuration (the bundled mock, or
//! OpenAI when a key is given) and its bootstrap, rendered from `envoy/demo.yaml`.

use serde_json::{json, Value};

use crate::envoy::{render, wasm_path, yaml_str};

/// Ports of the demo: Envoy's listener and admin, and the mock provider.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub listen: u16,
    pub admin: u16,
    pub mock: u16,
}

impl Default for Ports {
    fn default() -> Self {
        Ports {
            listen: 10000,
            admin: 9901,
            mock: 8081,
        }
    }
}

/// With an OpenAI key: OpenAI through the TLS cluster `openai`. Without: the same provider
/// settings, sent to the local mock cluster, so the demo works offline. The model is the
/// client's: `options.model` would apply to chat and embeddings alike.
pub fn plugin_config(openai_key: Option<&str>) -> Value {
    match openai_key {
        Some(key) => json!({
            "provider": "openai",
            "auth": {"header": {"Authorization": format!("Bearer {key}")}}
        }),
        None => json!({
            "provider": "openai",
            "cluster": "mock",
            "auth": {"header": {"Authorization": "Bearer demo-key-not-secret"}}
        }),
    }
}

/// `envoy/demo.yaml` with its placeholders filled in.
pub fn bootstrap(ports: Ports, plugin_config: &Value) -> anyhow::Result<String> {
    render(
        "demo.yaml",
        &[
            ("WASM", yaml_str(&wasm_path()?.to_string_lossy())),
            ("PLUGIN_CONFIG", yaml_str(&plugin_config.to_string())),
            ("LISTEN_PORT", ports.listen.to_string()),
            ("ADMIN_PORT", ports.admin.to_string()),
            ("MOCK_PORT", ports.mock.to_string()),
        ],
    )
}
