//! A real Prometheus for the tests: Debian's `prometheus` (unpacked into `.venv/prometheus`
//! by `ensure_prometheus` in `scripts/lib.sh`), started as a plain process on a free port
//! with a generated configuration that scrapes Envoy admin endpoints' `/stats/prometheus`
//! every second, its data in a temporary directory; queried through its HTTP API; stopped
//! on drop (its log printed, and its directory kept, when the test failed).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use serde_json::Value;

use crate::envoy::repo_root;

/// The scrape job's name in the generated configuration (the `job` label of every series).
pub const JOB: &str = "envoy-ai-proxy";

/// Where Prometheus is: `PROMETHEUS_BIN` (an error if it is set and does not run: the set-up
/// said it installed one), else the project's `.venv/prometheus/usr/bin/prometheus`, else
/// `prometheus` on the PATH. `None` when there is none at all.
pub fn binary() -> anyhow::Result<Option<PathBuf>> {
    if let Some(p) = std::env::var_os("PROMETHEUS_BIN") {
        let p = PathBuf::from(p);
        return match version(&p) {
            Some(_) => Ok(Some(p)),
            None => bail!("PROMETHEUS_BIN={} does not run", p.display()),
        };
    }
    let local = repo_root().join(".venv/prometheus/usr/bin/prometheus");
    for candidate in [local, PathBuf::from("prometheus")] {
        if version(&candidate).is_some() {
            return Ok(Some(candidate));
        }
    }
    Ok(None)
}

/// The first line of `prometheus --version`, if it runs.
pub fn version(bin: &Path) -> Option<String> {
    let out = Command::new(bin).arg("--version").output().ok()?;
    if !out.status.success() {
        return None;
    }
    // Go's flag library writes the version to stdout or stderr depending on the release.
    let text = [out.stdout, out.stderr].concat();
    String::from_utf8_lossy(&text)
        .lines()
        .next()
        .map(str::to_string)
}

/// A running Prometheus.
pub struct Prometheus {
    child: Child,
    dir: PathBuf,
    pub port: u16,
    client: reqwest::Client,
}

impl Prometheus {
    /// Starts `bin` scraping `targets` (`host:port` of Envoy admin endpoints) on
    /// `/stats/prometheus` every second, and waits until it is ready.
    pub async fn start(bin: &Path, targets: &[String]) -> anyhow::Result<Prometheus> {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ai-proxy-prometheus-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data"))?;
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, scrape_config(targets))?;
        // A free port: bind one, let it go, hand it over (nothing else here takes ports
        // from the kernel's range in that instant but other tests' port-0 binds).
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut prometheus = Prometheus {
            child,
            dir,
            port,
            client: reqwest::Client::new(),
        };
        match prometheus.wait_ready().await {
            Ok(()) => Ok(prometheus),
            Err(e) => Err(anyhow!("{e}\n--- prometheus log ---\n{}", prometheus.log())),
        }
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("prometheus exited during start-up ({status})");
            }
            if Instant::now() > deadline {
                bail!("prometheus was not ready within 30 s");
            }
            let ready = self
                .client
                .get(self.url("/-/ready"))
                .send()
                .await
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            if ready {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// An API call's `data`, or its error (Prometheus's `error` text).
    async fn api(&self, path: &str, form: &[(&str, &str)]) -> anyhow::Result<Value> {
        let resp = self.client.post(self.url(path)).form(form).send().await?;
        let status = resp.status();
        let body: Value = resp
            .json()
            .await
            .with_context(|| format!("{path}: HTTP {status}, not JSON"))?;
        if body["status"] != "success" {
            bail!(
                "{path} {form:?}: {} ({})",
                body["error"].as_str().unwrap_or("no error text"),
                body["errorType"].as_str().unwrap_or("?")
            );
        }
        Ok(body["data"].clone())
    }

    /// An instant query at the current time: the result's series (a scalar or string result
    /// counts as one series).
    pub async fn query(&self, expr: &str) -> anyhow::Result<Vec<Series>> {
        let data = self.api("/api/v1/query", &[("query", expr)]).await?;
        let result = &data["result"];
        Ok(match data["resultType"].as_str() {
            Some("vector") => result
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| Series {
                    labels: s["metric"].clone(),
                    values: vec![sample_value(&s["value"])],
                })
                .collect(),
            Some("matrix") => result
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| Series {
                    labels: s["metric"].clone(),
                    values: s["values"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(sample_value)
                        .collect(),
                })
                .collect(),
            _ => vec![Series {
                labels: Value::Null,
                values: vec![sample_value(result)],
            }],
        })
    }

    /// The values of `label` on the series `selector` matches (all series when `None`), as
    /// Grafana's `label_values(...)` variable queries ask for them.
    pub async fn label_values(
        &self,
        label: &str,
        selector: Option<&str>,
    ) -> anyhow::Result<Vec<String>> {
        let form: Vec<(&str, &str)> = selector.map(|s| ("match[]", s)).into_iter().collect();
        // The label values endpoint is GET-only in some releases: parameters in the URL.
        let resp = self
            .client
            .get(self.url(&format!("/api/v1/label/{label}/values")))
            .query(&form)
            .send()
            .await?;
        let body: Value = resp.json().await?;
        if body["status"] != "success" {
            bail!(
                "label values of {label} on {selector:?}: {}",
                body["error"].as_str().unwrap_or("no error text")
            );
        }
        Ok(body["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect())
    }

    /// The time (seconds since the epoch) of the latest successful scrape of every target,
    /// the oldest of them; `None` before each target has been scraped successfully.
    pub async fn last_scrape(&self) -> anyhow::Result<Option<f64>> {
        let up = self.query(&format!("up{{job=\"{JOB}\"}}")).await?;
        if up.is_empty() || up.iter().any(|s| s.values.first() != Some(&1.0)) {
            return Ok(None);
        }
        let times = self
            .query(&format!("timestamp(up{{job=\"{JOB}\"}})"))
            .await?;
        Ok(times
            .iter()
            .filter_map(|s| s.values.first().copied())
            .reduce(f64::min))
    }

    /// Waits until every target has been scraped successfully after `after` (seconds since
    /// the epoch).
    pub async fn wait_scraped_after(&self, after: f64, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(t) = self.last_scrape().await? {
                if t > after {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                let targets = self.api("/api/v1/targets", &[]).await.ok();
                bail!(
                    "no successful scrape after {after} within {within:?}; targets: {}",
                    targets.unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            // Kept for a closer look: the configuration, the log and the data.
            eprintln!(
                "--- prometheus log ({}) ---\n{}",
                self.dir.display(),
                self.log()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// One series of a query result: its labels and its sample values (`NaN` and the infinities
/// as Prometheus wrote them).
#[derive(Debug, Clone)]
pub struct Series {
    pub labels: Value,
    pub values: Vec<f64>,
}

impl Series {
    pub fn has_number(&self) -> bool {
        self.values.iter().any(|v| v.is_finite())
    }
}

/// `[time, "value"]` to the value (`"NaN"`, `"+Inf"` parse as such).
fn sample_value(sample: &Value) -> f64 {
    sample[1]
        .as_str()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(f64::NAN)
}

/// The configuration: one job scraping `targets` on the admin's `/stats/prometheus` every
/// second (the documented scrape configuration, at test speed).
pub fn scrape_config(targets: &[String]) -> String {
    let targets = Value::from(targets.to_vec());
    format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n- job_name: {JOB}\n  metrics_path: /stats/prometheus\n  \
         static_configs:\n  - targets: {targets}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_scrapes_the_admin_stats_path() {
        let c = scrape_config(&["127.0.0.1:9901".to_string()]);
        assert!(c.contains("metrics_path: /stats/prometheus"), "{c}");
        assert!(c.contains("- targets: [\"127.0.0.1:9901\"]"), "{c}");
        assert!(c.contains(&format!("job_name: {JOB}")), "{c}");
    }

    #[test]
    fn sample_values_parse_prometheus_spellings() {
        assert_eq!(sample_value(&serde_json::json!([1.5, "42"])), 42.0);
        assert!(sample_value(&serde_json::json!([1.5, "NaN"])).is_nan());
        assert_eq!(
            sample_value(&serde_json::json!([1.5, "+Inf"])),
            f64::INFINITY
        );
    }
}
