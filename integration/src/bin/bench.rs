//! What the filter costs over plain Envoy: `scripts/bench.sh` runs this. Same machine, same
//! Envoy `--concurrency 1`, same load (wrk), interleaved rounds over four variants: plain
//! Envoy, a no-op Wasm filter (the floor for any Wasm filter), the AI proxy with one
//! provider, and with two instances, rate limits and health checks. Prints requests/s,
//! latency, Envoy CPU per request and peak RSS, each as a ratio to plain and to no-op; the
//! streaming time to first byte; and the `.wasm` sizes.
//!
//! Env: BENCH_SECONDS (per run, default 5), BENCH_ROUNDS (default 3), BENCH_CONNECTIONS (16).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context as _};
use integration::envoy::{render, repo_root, wasm_path, yaml_str};
use integration::{Envoy, MockLlm};
use serde_json::{json, Value};

struct Variant {
    name: &'static str,
    envoy: Envoy,
    /// Whether the 100 KB body runs on it too.
    big: bool,
}

#[derive(Default, Clone)]
struct Run {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us_per_req: f64,
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn wasm_filter(path: &str, name: &str, config: &str) -> Value {
    json!({
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": name, "root_id": name, "allow_on_headers_stop_iteration": true,
                "vm_config": {"vm_id": name, "runtime": "envoy.wasm.runtime.v8",
                              "code": {"local": {"filename": path}}},
                "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": config}
            }
        }
    })
}

fn bootstrap(filters: &[Value], mock_port: u16) -> anyhow::Result<String> {
    let filters = filters
        .iter()
        .map(|f| format!("- {f}"))
        .collect::<Vec<_>>()
        .join("\n          ");
    let clusters = json!([{
        "name": "mock", "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": "mock", "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": mock_port}}}}]}]}
    }]);
    render(
        "bench.yaml.tmpl",
        &[("FILTERS", filters), ("CLUSTERS", clusters.to_string())],
    )
}

/// A chat body of about `size` bytes.
fn chat_body(size: usize) -> String {
    let filler = "x".repeat(size.saturating_sub(120));
    json!({"model": "client-model", "messages": [
        {"role": "system", "content": "You are a benchmark."},
        {"role": "user", "content": filler}]})
    .to_string()
}

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // After the command: state is field 3, utime 14, stime 15 (1-based) -> 11, 12 here.
    Ok(f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0))
}

fn peak_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn duration_ms(s: &str) -> Option<f64> {
    let (num, unit) = s
        .trim()
        .split_at(s.trim().find(|c: char| c.is_ascii_alphabetic())?);
    let v: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => v / 1000.0,
        "ms" => v,
        "s" => v * 1000.0,
        "m" => v * 60_000.0,
        _ => return None,
    })
}

/// Runs wrk against `url` with the Lua script; returns the run and the request count.
fn wrk(url: &str, script: &PathBuf, seconds: u64, connections: u64) -> anyhow::Result<(Run, u64)> {
    let out = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(url)
        .output()
        .context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    if let Some(l) = text.lines().find(|l| l.contains("Non-2xx")) {
        bail!("errors during the run: {l}\n{text}");
    }
    let mut run = Run::default();
    let mut requests = 0;
    for line in text.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            run.rps = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = t.strip_prefix("50%") {
            run.p50_ms = duration_ms(v).unwrap_or(0.0);
        } else if let Some(v) = t.strip_prefix("99%") {
            run.p99_ms = duration_ms(v).unwrap_or(0.0);
        } else if t.contains("requests in") {
            requests = t
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        }
    }
    Ok((run, requests))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Time to first byte and total time of a 20-event stream, `n` times; the medians in ms.
async fn stream_times(envoy: &Envoy, n: usize) -> anyhow::Result<(f64, f64)> {
    let client = reqwest::Client::new();
    let body =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let (mut ttfb, mut total) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let start = Instant::now();
        let mut resp = client
            .post(envoy.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .header("x-ai-proxy-cluster", "mock")
            .header("x-mock-events", "20")
            .header("x-mock-interval-ms", "5")
            .body(body.to_string())
            .send()
            .await?;
        let mut first = None;
        let mut bytes = 0;
        while let Some(chunk) = resp.chunk().await? {
            if first.is_none() && !chunk.is_empty() {
                first = Some(start.elapsed());
            }
            bytes += chunk.len();
        }
        if bytes == 0 {
            bail!("empty stream");
        }
        ttfb.push(first.unwrap_or_default().as_secs_f64() * 1000.0);
        total.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    Ok((median(ttfb), median(total)))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds = env_num("BENCH_SECONDS", 5);
    let rounds = env_num("BENCH_ROUNDS", 3);
    let connections = env_num("BENCH_CONNECTIONS", 16);
    let started = Instant::now();

    let mock = MockLlm::start().await?;
    let filter = wasm_path()?.to_string_lossy().into_owned();
    let noop_path = repo_root().join("target/wasm32-wasip1/release/noop_filter.wasm");
    if !noop_path.exists() {
        bail!(
            "{} is missing: scripts/bench.sh builds it",
            noop_path.display()
        );
    }
    let noop = noop_path.to_string_lossy().into_owned();

    let instance = |name: &str, priority: u32| {
        json!({"name": name, "provider": "openai-compatible", "cluster": "mock", "priority": priority,
               "override": {"endpoint": "http://llm.internal"},
               "auth": {"header": {"Authorization": "Bearer sk-bench"}},
               "options": {"model": "gpt-4o-mini"},
               "checks": {"active": {"http_path": "/health", "healthy": {"interval": 1}}, "passive": {}}})
    };
    let single = json!({"provider": "openai-compatible", "cluster": "mock",
                        "override": {"endpoint": "http://llm.internal"},
                        "auth": {"header": {"Authorization": "Bearer sk-bench"}},
                        "options": {"model": "gpt-4o-mini"}});
    let multi = json!({"fallback_strategy": ["http_5xx", "rate_limiting"],
                       "instances": [instance("a", 0), instance("b", 0)],
                       "rate_limiting": {"limit": 1_000_000_000u64, "time_window": 3600}});

    let specs: Vec<(&'static str, Vec<Value>, bool)> = vec![
        ("plain Envoy", vec![], true),
        (
            "no-op Wasm filter",
            vec![wasm_filter(&noop, "noop", "")],
            true,
        ),
        (
            "AI proxy, one provider",
            vec![wasm_filter(&filter, "ai_proxy", &single.to_string())],
            true,
        ),
        (
            "AI proxy, 2 instances + limits + health",
            vec![wasm_filter(&filter, "ai_proxy", &multi.to_string())],
            false,
        ),
    ];
    // BENCH_VARIANTS: comma-separated substrings of the variant names to run (all by default).
    let only = std::env::var("BENCH_VARIANTS").unwrap_or_default();
    let wanted = |name: &str| only.is_empty() || only.split(',').any(|w| name.contains(w.trim()));
    let mut variants = Vec::new();
    for (name, filters, big) in specs.into_iter().filter(|(n, _, _)| wanted(n)) {
        let envoy = Envoy::with_bootstrap(bootstrap(&filters, mock.port())?)
            .start()
            .await
            .with_context(|| format!("starting Envoy for {name}"))?;
        // BENCH_PIN=<cpu>: Envoy (all its threads) on that CPU, away from wrk and the mock,
        // so its CPU per request is measured without them competing.
        if let Ok(cpu) = std::env::var("BENCH_PIN") {
            let ok = Command::new("taskset")
                .args(["-a", "-p", "-c", &cpu, &envoy.pid().to_string()])
                .output()
                .is_ok_and(|o| o.status.success());
            if !ok {
                eprintln!("could not pin Envoy to CPU {cpu}");
            }
        }
        variants.push(Variant { name, envoy, big });
    }

    let dir = std::env::temp_dir().join(format!("ai-proxy-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut scripts = BTreeMap::new();
    for (label, size) in [("1 KB", 1024usize), ("100 KB", 100 * 1024)] {
        let body_path = dir.join(format!("body-{size}.json"));
        std::fs::write(&body_path, chat_body(size))?;
        let lua = format!(
            "local f = io.open({p}, 'rb')\nwrk.method = 'POST'\nwrk.body = f:read('*a')\nf:close()\n\
             wrk.headers['content-type'] = 'application/json'\nwrk.headers['x-ai-proxy-cluster'] = 'mock'\n",
            p = yaml_str(&body_path.to_string_lossy())
        );
        let script = dir.join(format!("post-{size}.lua"));
        std::fs::write(&script, lua)?;
        scripts.insert(label, script);
    }

    // Warm every variant up (VM start, connections, JIT).
    for v in &variants {
        wrk(
            &v.envoy.url("/v1/chat/completions"),
            &scripts["1 KB"],
            1,
            connections,
        )?;
    }

    let tck = clk_tck();
    let mut results: BTreeMap<(&str, &str), Vec<Run>> = BTreeMap::new();
    for round in 0..rounds {
        eprintln!("round {}/{rounds} ...", round + 1);
        // Rotate the order so no variant always runs first or last.
        let order: Vec<usize> = (0..variants.len())
            .map(|i| (i + round as usize) % variants.len())
            .collect();
        for label in ["1 KB", "100 KB"] {
            for &i in &order {
                let v = &variants[i];
                if label == "100 KB" && !v.big {
                    continue;
                }
                let pid = v.envoy.pid();
                let before = cpu_ticks(pid)?;
                let (mut run, requests) = wrk(
                    &v.envoy.url("/v1/chat/completions"),
                    &scripts[label],
                    seconds,
                    connections,
                )?;
                let cpu_s = (cpu_ticks(pid)? - before) as f64 / tck;
                run.cpu_us_per_req = if requests > 0 {
                    cpu_s * 1e6 / requests as f64
                } else {
                    0.0
                };
                results.entry((label, v.name)).or_default().push(run);
            }
        }
    }

    let find = |name: &str| variants.iter().find(|v| v.name == name).map(|v| &v.envoy);
    let streams = match (find("plain Envoy"), find("AI proxy, one provider")) {
        (Some(plain), Some(proxy)) => Some((
            stream_times(plain, 30).await?,
            stream_times(proxy, 30).await?,
        )),
        _ => None,
    };

    let med = |label: &str, name: &str, f: fn(&Run) -> f64| {
        median(
            results
                .get(&(label, name))
                .map(|r| r.iter().map(f).collect())
                .unwrap_or_default(),
        )
    };
    println!();
    let pinned = std::env::var("BENCH_PIN")
        .map(|c| format!("Envoy pinned to CPU {c}, wrk and the mock elsewhere"))
        .unwrap_or_else(|_| "no CPU pinning".into());
    println!(
        "envoy-ai-proxy benchmark: Envoy --concurrency 1, wrk -t1 -c{connections}, {seconds} s runs, \
         {rounds} interleaved rounds, medians; {pinned}"
    );
    for label in ["1 KB", "100 KB"] {
        println!();
        println!("POST /v1/chat/completions, {label} JSON body");
        println!(
            "| variant | req/s | p50 ms | p99 ms | Envoy CPU us/req | peak RSS MB | req/s vs plain | req/s vs no-op | CPU vs no-op |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        let plain = med(label, "plain Envoy", |r| r.rps).max(f64::MIN_POSITIVE);
        let noop_rps = med(label, "no-op Wasm filter", |r| r.rps);
        let noop_cpu = med(label, "no-op Wasm filter", |r| r.cpu_us_per_req);
        for v in &variants {
            if !results.contains_key(&(label, v.name)) {
                continue;
            }
            let rps = med(label, v.name, |r| r.rps);
            let cpu = med(label, v.name, |r| r.cpu_us_per_req);
            println!(
                "| {} | {:.0} | {:.2} | {:.2} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} |",
                v.name,
                rps,
                med(label, v.name, |r| r.p50_ms),
                med(label, v.name, |r| r.p99_ms),
                cpu,
                peak_rss_mb(v.envoy.pid()),
                rps / plain,
                rps / noop_rps,
                cpu / noop_cpu,
            );
        }
    }
    if let Some((stream_plain, stream_filter)) = streams {
        println!();
        println!("Streaming, 20 events 5 ms apart, 30 requests, medians");
        println!("| variant | time to first byte ms | total ms |");
        println!("|---|---:|---:|");
        println!(
            "| plain Envoy | {:.2} | {:.1} |",
            stream_plain.0, stream_plain.1
        );
        println!(
            "| AI proxy, one provider | {:.2} | {:.1} |",
            stream_filter.0, stream_filter.1
        );
        println!(
            "time to first byte, AI proxy minus plain: {:+.2} ms",
            stream_filter.0 - stream_plain.0
        );
    }
    println!();
    let size = |p: &str| std::fs::metadata(p).map_or(0, |m| m.len());
    println!(
        "envoy_ai_proxy.wasm: {} bytes; noop_filter.wasm: {} bytes",
        size(&filter),
        size(&noop)
    );
    println!("took {:.0} s", started.elapsed().as_secs_f64());
    let _ = std::fs::remove_dir_all(&dir);
    // Dropping the variants stops their Envoys.
    drop(variants);
    Ok(())
}
