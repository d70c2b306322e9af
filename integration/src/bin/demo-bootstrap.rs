//! Writes the demo bootstrap for `scripts/run.sh`: `demo-bootstrap OUT_FILE`.
//! Reads `OPENAI_API_KEY` from the environment (never from the command
//! line, where other users could see them) and `AI_PROXY_LISTEN_PORT`, `AI_PROXY_ADMIN_PORT`,
//! `MOCK_PORT` for the ports. The file holds the key, so it is created readable by the owner
//! only.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;

use integration::demo::{self, Ports};

fn port(var: &str, default: u16) -> anyhow::Result<u16> {
    match std::env::var(var) {
        Ok(v) => Ok(v.parse()?),
        Err(_) => Ok(default),
    }
}

fn main() -> anyhow::Result<()> {
    let out = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: demo-bootstrap OUT_FILE"))?;
    let d = Ports::default();
    let ports = Ports {
        listen: port("AI_PROXY_LISTEN_PORT", d.listen)?,
        admin: port("AI_PROXY_ADMIN_PORT", d.admin)?,
        mock: port("MOCK_PORT", d.mock)?,
    };
    let key = std::env::var("OPENAI_API_KEY")
        .ok()
        .filter(|k| !k.is_empty());
    let text = demo::bootstrap(ports, &demo::plugin_config(key.as_deref()))?;
    let _ = std::fs::remove_file(&out);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&out)?;
    f.write_all(text.as_bytes())?;
    eprintln!(
        "demo bootstrap: {} -> {}",
        if key.is_some() {
            "OpenAI (OPENAI_API_KEY)"
        } else {
            "the bundled mock provider"
        },
        out
    );
    Ok(())
}
