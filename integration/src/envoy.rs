//! Starts the real Envoy (from the project's virtualenv) with a bootstrap from `envoy/` and
//! the freshly built `.wasm`, on free ports; waits until it is ready; prints its log when the
//! test fails; stops it on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use serde_json::{json, Value};

/// The repository root (the integration crate's parent).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `ENVOY_BIN`, else the project's virtualenv, else `envoy` on the PATH.
pub fn envoy_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ENVOY_BIN") {
        return PathBuf::from(p);
    }
    let venv = repo_root().join(".venv/bin/envoy");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("envoy")
    }
}

/// `AI_PROXY_WASM`, else the release build in `target/`.
pub fn wasm_path() -> anyhow::Result<PathBuf> {
    let p = std::env::var_os("AI_PROXY_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/wasm32-wasip1/release/envoy_ai_proxy.wasm"));
    if !p.exists() {
        bail!(
            "{} is missing: build it with `cargo build --release --target wasm32-wasip1` \
             (scripts/test.sh does)",
            p.display()
        );
    }
    Ok(p)
}

/// The module path the shipped bootstraps use (relative to the repository root).
pub const SHIPPED_WASM: &str = "target/wasm32-wasip1/release/envoy_ai_proxy.wasm";

/// A shipped bootstrap of `envoy/` (runnable as is), copied for a test: its fixed ports
/// (listener 10000, admin 9901, the demo mock 8081) rewritten (`0`: any free port) and the
/// module path made absolute. Nothing else changes.
pub fn shipped(file: &str, listen: u16, admin: u16, mock: u16) -> anyhow::Result<String> {
    let path = repo_root().join("envoy").join(file);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    for port in ["port_value: 10000", "port_value: 9901"] {
        if !text.contains(port) {
            bail!("{file}: no `{port}` to rewrite");
        }
    }
    Ok(text
        .replace("port_value: 10000", &format!("port_value: {listen}"))
        .replace("port_value: 9901", &format!("port_value: {admin}"))
        .replace("port_value: 8081", &format!("port_value: {mock}"))
        .replace(SHIPPED_WASM, &wasm_path()?.to_string_lossy()))
}

/// Renders a bootstrap template of `envoy/` (`*.tmpl`): each `{{KEY}}` becomes its value,
/// inserted as given (quote strings with [`yaml_str`]). A placeholder left unfilled is an
/// error.
pub fn render(template_file: &str, vars: &[(&str, String)]) -> anyhow::Result<String> {
    let path = repo_root().join("envoy").join(template_file);
    let mut text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    for (key, value) in vars {
        text = text.replace(&format!("{{{{{key}}}}}"), value);
    }
    let unfilled = text.match_indices("{{").find_map(|(at, _)| {
        let name = text[at + 2..].split("}}").next()?;
        let is_placeholder =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_');
        is_placeholder.then(|| name.to_string())
    });
    if let Some(name) = unfilled {
        bail!("{template_file}: placeholder {{{{{name}}}}} left unfilled");
    }
    Ok(text)
}

/// A string as a YAML scalar: JSON strings are valid YAML double-quoted scalars.
pub fn yaml_str(s: &str) -> String {
    Value::from(s).to_string()
}

/// Runs `envoy --mode validate` on a bootstrap; returns Envoy's output on failure.
pub fn validate(bootstrap: &str) -> anyhow::Result<()> {
    validate_with_env(bootstrap, &[])
}

/// As [`validate`], with environment variables for Envoy (what `$env://` references need).
pub fn validate_with_env(bootstrap: &str, env: &[(&str, &str)]) -> anyhow::Result<()> {
    let dir = TempDir::new()?;
    let path = dir.path.join("bootstrap.yaml");
    std::fs::write(&path, bootstrap)?;
    // From the repository root, where the shipped bootstraps' relative module path holds.
    let out = Command::new(envoy_bin())
        .current_dir(repo_root())
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(&path)
        .envs(env.iter().copied())
        .output()
        .with_context(|| format!("running {}", envoy_bin().display()))?;
    if !out.status.success() {
        bail!(
            "envoy --mode validate refused it:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// An upstream cluster for the bootstrap.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub name: String,
    pub port: u16,
    /// HTTP/2 to the upstream (a gRPC service).
    pub grpc: bool,
}

impl Cluster {
    pub fn new(name: &str, port: u16) -> Cluster {
        Cluster {
            name: name.to_string(),
            port,
            grpc: false,
        }
    }

    fn to_json(&self) -> Value {
        let mut c = json!({
            "name": self.name,
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": self.name,
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                    "socket_address": {"address": "127.0.0.1", "port_value": self.port}}}}]}]
            }
        });
        if self.grpc {
            c["typed_extension_protocol_options"] = crate::bootstrap::http2_options();
        }
        c
    }
}

/// How to start Envoy.
pub struct EnvoyBuilder {
    plugin_config: String,
    clusters: Vec<Cluster>,
    concurrency: u32,
    template: String,
    cluster_header: String,
    log_level: String,
    /// A complete bootstrap, used as is instead of the template.
    rendered: Option<String>,
    /// HTTP filters placed before the AI proxy, as JSON.
    pre_filters: Vec<Value>,
    /// The second listener's plugin configuration (`integration-two-listeners.yaml.tmpl`).
    second_config: Option<String>,
    /// Environment variables of the Envoy process (what `$env://` references resolve to).
    env: Vec<(String, String)>,
}

impl EnvoyBuilder {
    pub fn cluster(mut self, name: &str, port: u16) -> Self {
        self.clusters.push(Cluster::new(name, port));
        self
    }

    /// A gRPC service's cluster (HTTP/2): a rate limit service.
    pub fn grpc_cluster(mut self, name: &str, port: u16) -> Self {
        self.clusters.push(Cluster {
            grpc: true,
            ..Cluster::new(name, port)
        });
        self
    }

    pub fn concurrency(mut self, n: u32) -> Self {
        self.concurrency = n;
        self
    }

    /// A bootstrap template in `envoy/` other than `integration.yaml.tmpl`.
    pub fn template(mut self, file: &str) -> Self {
        self.template = file.to_string();
        self
    }

    pub fn cluster_header(mut self, name: &str) -> Self {
        self.cluster_header = name.to_string();
        self
    }

    /// An HTTP filter (JSON) before the AI proxy.
    pub fn pre_filter(mut self, filter: Value) -> Self {
        self.pre_filters.push(filter);
        self
    }

    /// A second listener (`ai_gateway_b`) with its own plugin configuration.
    pub fn second_listener(mut self, plugin_config: &Value) -> Self {
        self.template = "integration-two-listeners.yaml.tmpl".to_string();
        self.second_config = Some(plugin_config.to_string());
        self
    }

    /// An environment variable of the Envoy process.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    pub fn log_level(mut self, level: &str) -> Self {
        self.log_level = level.to_string();
        self
    }

    fn render(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        let rendered = match &self.rendered {
            Some(text) => text.clone(),
            None => {
                let access_log = dir.join("access.log");
                let clusters: Vec<Value> = self.clusters.iter().map(Cluster::to_json).collect();
                // One `- {json}` item per filter, at the list's indentation.
                let pre_filters = self
                    .pre_filters
                    .iter()
                    .map(|f| format!("- {f}"))
                    .collect::<Vec<_>>()
                    .join("\n          ");
                render(
                    &self.template,
                    &[
                        ("WASM", yaml_str(&wasm_path()?.to_string_lossy())),
                        ("PLUGIN_CONFIG", yaml_str(&self.plugin_config)),
                        (
                            "PLUGIN_CONFIG_B",
                            yaml_str(self.second_config.as_deref().unwrap_or("")),
                        ),
                        ("CLUSTERS", Value::from(clusters).to_string()),
                        ("ACCESS_LOG", yaml_str(&access_log.to_string_lossy())),
                        ("CLUSTER_HEADER", yaml_str(&self.cluster_header)),
                        ("PRE_FILTERS", pre_filters),
                    ],
                )?
            }
        };
        let path = dir.join("bootstrap.yaml");
        std::fs::write(&path, rendered)?;
        Ok(path)
    }

    fn spawn(&self) -> anyhow::Result<(Child, TempDir)> {
        let dir = TempDir::new()?;
        let bootstrap = self.render(&dir.path)?;
        let child = Command::new(envoy_bin())
            .arg("-c")
            .arg(&bootstrap)
            .args(["--concurrency", &self.concurrency.to_string()])
            .arg("--disable-hot-restart")
            .args(["--file-flush-interval-msec", "50"])
            .arg("--admin-address-path")
            .arg(dir.path.join("admin.txt"))
            .arg("--log-path")
            .arg(dir.path.join("envoy.log"))
            .args(["-l", &self.log_level])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", envoy_bin().display()))?;
        Ok((child, dir))
    }

    /// Starts Envoy and waits until its listener accepts requests.
    pub async fn start(self) -> anyhow::Result<Envoy> {
        let (child, dir) = self.spawn()?;
        let mut envoy = Envoy {
            child,
            dir,
            admin_port: 0,
            port: 0,
            ports: Vec::new(),
            client: reqwest::Client::new(),
        };
        match envoy.wait_ready().await {
            Ok(()) => Ok(envoy),
            Err(e) => Err(anyhow!("{e}\n--- envoy log ---\n{}", envoy.log())),
        }
    }

    /// Starts Envoy expecting it to refuse the configuration and exit; returns its log.
    pub fn start_expecting_exit(self) -> anyhow::Result<String> {
        let (mut child, dir) = self.spawn()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(dir.path.join("envoy.log")).unwrap_or_default();
                if status.success() {
                    bail!("envoy exited successfully, expected a refusal\n{log}");
                }
                return Ok(log);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let log = std::fs::read_to_string(dir.path.join("envoy.log")).unwrap_or_default();
                bail!("envoy kept running with a configuration it should refuse\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A running Envoy.
pub struct Envoy {
    child: Child,
    dir: TempDir,
    pub admin_port: u16,
    /// The listener's port.
    pub port: u16,
    /// Every listener's port, by listener name.
    pub ports: Vec<(String, u16)>,
    client: reqwest::Client,
}

impl Envoy {
    /// Envoy with the filter configured by `plugin_config` (JSON), on `integration.yaml.tmpl`.
    pub fn with_config(plugin_config: &Value) -> EnvoyBuilder {
        Self::with_raw_config(&plugin_config.to_string())
    }

    /// The plugin configuration as given, even when it is not JSON.
    pub fn with_raw_config(plugin_config: &str) -> EnvoyBuilder {
        EnvoyBuilder {
            plugin_config: plugin_config.to_string(),
            clusters: Vec::new(),
            concurrency: 1,
            template: "integration.yaml.tmpl".to_string(),
            cluster_header: "x-ai-proxy-cluster".to_string(),
            log_level: "info".to_string(),
            rendered: None,
            pre_filters: Vec::new(),
            second_config: None,
            env: Vec::new(),
        }
    }

    /// Envoy on a complete bootstrap (already rendered).
    pub fn with_bootstrap(bootstrap: String) -> EnvoyBuilder {
        EnvoyBuilder {
            rendered: Some(bootstrap),
            ..Self::with_raw_config("")
        }
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let admin_file = self.dir.path.join("admin.txt");
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("envoy exited during start-up ({status})");
            }
            if Instant::now() > deadline {
                bail!("envoy was not ready within 60 s");
            }
            if self.admin_port == 0 {
                if let Ok(addr) = std::fs::read_to_string(&admin_file) {
                    if let Some(port) = addr.trim().rsplit(':').next().and_then(|p| p.parse().ok())
                    {
                        self.admin_port = port;
                    }
                }
            }
            if self.admin_port != 0 {
                let ready = self
                    .client
                    .get(self.admin_url("/ready"))
                    .send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false);
                if ready {
                    let listeners: Value = self
                        .client
                        .get(self.admin_url("/listeners?format=json"))
                        .send()
                        .await?
                        .json()
                        .await?;
                    for l in listeners["listener_statuses"]
                        .as_array()
                        .into_iter()
                        .flatten()
                    {
                        let port = l["local_address"]["socket_address"]["port_value"]
                            .as_u64()
                            .ok_or_else(|| anyhow!("no listener port in {listeners}"))?;
                        let name = l["name"].as_str().unwrap_or("").to_string();
                        self.ports.push((name, u16::try_from(port)?));
                    }
                    self.port = self.ports.first().map(|p| p.1).unwrap_or(0);
                    if let Some((_, p)) = self.ports.iter().find(|(n, _)| n == "ai_gateway") {
                        self.port = *p;
                    }
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// A URL on the listener named `listener`.
    pub fn url_on(&self, listener: &str, path: &str) -> String {
        let port = self
            .ports
            .iter()
            .find(|(n, _)| n == listener)
            .map_or(0, |p| p.1);
        format!("http://127.0.0.1:{port}{path}")
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.admin_port, path)
    }

    /// The Envoy process id (for CPU and memory readings).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// POSTs a JSON body to `path`.
    pub async fn post_json(&self, path: &str, body: &Value) -> anyhow::Result<reqwest::Response> {
        Ok(self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await?)
    }

    /// A chat request with `body` to `/v1/chat/completions`.
    pub async fn chat(&self, body: &Value) -> anyhow::Result<reqwest::Response> {
        self.post_json("/v1/chat/completions", body).await
    }

    /// The admin's `/stats/prometheus` text.
    /// The text of an admin endpoint (`/config_dump`, `/stats?filter=...`).
    pub async fn admin(&self, path: &str) -> String {
        let resp = self.client.get(self.admin_url(path)).send().await;
        resp.unwrap_or_else(|e| panic!("GET {path}: {e}"))
            .text()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    pub async fn prometheus(&self) -> String {
        match self
            .client
            .get(self.admin_url("/stats/prometheus"))
            .send()
            .await
        {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path.join("envoy.log")).unwrap_or_default()
    }

    /// The JSON after `marker` on the lines of Envoy's log that have it (the filter's
    /// summary and payload lines), waiting up to 5 s for at least `n`: Envoy writes its log
    /// file every 50 ms, so the access log may hold a request before this log does.
    pub async fn log_json(&self, marker: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let lines: Vec<Value> = self
                .log()
                .lines()
                .filter_map(|l| l.split_once(marker).map(|(_, j)| j))
                .filter_map(|j| serde_json::from_str(j).ok())
                .collect();
            if lines.len() >= n || Instant::now() > deadline {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The access log's JSON lines, waiting up to 5 s for at least `n` of them.
    pub async fn access_log(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let lines: Vec<Value> = std::fs::read_to_string(self.dir.path.join("access.log"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            if lines.len() >= n || Instant::now() > deadline {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- envoy log ({}) ---\n{}",
                self.dir.path.display(),
                self.log()
            );
            // Keep the files of a failed test for a closer look.
            self.dir.keep = true;
        }
    }
}

/// A private temporary directory, removed on drop unless kept.
struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl TempDir {
    fn new() -> anyhow::Result<TempDir> {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "ai-proxy-it-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)?;
        Ok(TempDir { path, keep: false })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
