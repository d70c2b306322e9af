//! What the filter costs, measured in the real Envoy: `scripts/bench.sh` runs this. Every
//! variant gets the same Envoy (`--concurrency 1`), bootstrap, load (wrk) and upstream, in
//! interleaved rounds; only the HTTP filters differ:
//! - plain Envoy (no filter), a no-op Wasm filter (the floor for any Wasm filter), the
//!   body-read floor (`bench/floor-filter`: holds the headers, buffers the body, reads it
//!   once, sets one header: what any filter that routes from the body must do), and the
//!   contract floor (the same filter making the host calls the AI proxy's contract takes for
//!   one request, and nothing else);
//! - the contract floor with the body's bytes, three ways: validated and its top-level
//!   members located by the AI proxy's own scan (what the contract asks of the body);
//!   classified (each byte told apart from `"`, `\`, control characters and bytes that are
//!   not ASCII, the cheapest way known, nothing parsed); loaded once and nothing else (less
//!   than any validation can do);
//! - the AI proxy with one provider, and with three instances, token limits and active and
//!   passive health checks;
//! - with `RLS_BIN` set (the test rate limit service, `scripts/lib.sh build_rls`): the
//!   one-provider configuration with its limit kept by that service (`check.rs`), whose
//!   added latency per request is measured one request at a time;
//! - with `BENCH_ABLATION=<dir>`: the many-instance configuration (summary logs on) on the
//!   normal build and on each `ablate-*.wasm` build found in the directory (one cost centre
//!   switched off each; see src/ablate.rs), and on the folder's `full.wasm` instead of the
//!   normal build when it has one (to measure an older build's ablation).
//!
//! Prints, per body size, requests/s as a ratio to the floor (the medians', and each round's
//! lowest and highest) and to the no-op filter, Envoy CPU per request (and over the
//! floor's), latency; the cost per KB; the streaming time to first byte and peak RSS against
//! the no-op filter; the latency a rate limit service check adds (p50, p99); the ablation
//! table; the `.wasm` sizes.
//!
//! Env: BENCH_SECONDS (per run, 5), BENCH_ROUNDS (3), BENCH_CONNECTIONS (64),
//! BENCH_MB_ROUNDS (rounds with 1 MB bodies, 1; 0: none), BENCH_STREAMS (30),
//! BENCH_VARIANTS (substrings of the variant names to run), BENCH_PIN (the CPU for Envoy),
//! BENCH_ABLATION, BENCH_BUILDS (a directory of `.wasm` builds to compare side by side),
//! BENCH_BUILD_CONFIG, BENCH_WARMUP (seconds per variant and size, 1), BENCH_BODY=code (the
//! message is source code, dense in escapes, instead of one run of text; `unicode`: text
//! that is not ASCII, all `\uXXXX`), BENCH_CALLGRIND=1 (count Envoy's instructions instead
//! of its CPU time: see `callgrind`), BENCH_CHECKS (requests per variant for the rate limit
//! service check, 300).

mod check;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Command;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use integration::envoy::{render, repo_root, wasm_path, yaml_str};
use integration::Envoy;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const PLAIN: &str = "plain Envoy";
const NOOP: &str = "no-op Wasm filter";
const FLOOR: &str = "body-read floor";
const CONTRACT: &str = "contract floor";
const CONTRACT_SCAN: &str = "contract floor + scan";
const CONTRACT_LOAD: &str = "contract floor + bytes loaded";
const CONTRACT_CLASSIFY: &str = "contract floor + bytes classified";
const ONE: &str = "AI proxy, one provider";
const MANY: &str = "AI proxy, 3 instances + limits + health";
const RLS: &str = "AI proxy, one provider + rate limit service";
const SIZES: [(&str, usize); 3] = [
    ("1 KB", 1024),
    ("100 KB", 100 * 1024),
    ("1 MB", 1024 * 1024),
];

struct Variant {
    name: String,
    envoy: Envoy,
    /// Runs the 100 KB and 1 MB bodies too (the ablation builds run 1 KB only).
    big: bool,
    /// Peak RSS once started, before any request (MB): the module and its VMs.
    start_rss: f64,
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

fn bootstrap(filters: &[Value], upstream_port: u16, rls: Option<u16>) -> anyhow::Result<String> {
    let filters = filters
        .iter()
        .map(|f| format!("- {f}"))
        .collect::<Vec<_>>()
        .join("\n          ");
    let mut clusters = vec![json!({
        "name": "mock", "type": "STATIC", "connect_timeout": "30s",
        "load_assignment": {"cluster_name": "mock", "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": upstream_port}}}}]}]}
    })];
    clusters.extend(rls.map(check::cluster));
    let clusters = Value::Array(clusters);
    render(
        "bench.yaml.tmpl",
        &[("FILTERS", filters), ("CLUSTERS", clusters.to_string())],
    )
}

/// A chat body of about `size` bytes: a message of one long run of text, or with
/// `BENCH_BODY=code` one of source code, as agents send (once JSON-escaped, a line break and
/// two quotes every 47 bytes: the escapes are what reading it costs), or with
/// `BENCH_BODY=unicode` one of Chinese text with every character escaped (`\u4f60`).
fn chat_body(size: usize) -> String {
    let room = size.saturating_sub(120);
    let kind = std::env::var("BENCH_BODY").unwrap_or_default();
    let filler = if kind == "code" {
        let line = "    let name = format!(\"{}-{}\", key, value);\n";
        // About `room` bytes once escaped (the line's 44 characters are 47 bytes in JSON).
        let mut code = line.repeat(room / 47 + 1);
        code.truncate(room * 44 / 47);
        code
    } else if kind == "unicode" {
        // Spelt below as `\uXXXX`, six bytes a character: 13 of them and a line break are
        // 80 bytes.
        "你好，世界。这是一个测试。\n".repeat(room / 80)
    } else {
        "x".repeat(room)
    };
    let body = json!({"model": "client-model", "messages": [
        {"role": "system", "content": "You are a benchmark."},
        {"role": "user", "content": filler}]})
    .to_string();
    if kind != "unicode" {
        return body;
    }
    // As encoders that keep to ASCII send it (Python's `json.dumps` by default).
    let mut ascii = String::with_capacity(body.len() * 2);
    for c in body.chars() {
        if c.is_ascii() {
            ascii.push(c);
        } else {
            ascii.push_str(&format!("\\u{:04x}", u32::from(c)));
        }
    }
    ascii
}

// ---- The upstream: a fixed answer, as cheap as can be, so the load core is not the limit.

type UpBody = BoxBody<Bytes, Infallible>;

const ANSWER: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the benchmark upstream."},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19}}"#;

fn event(v: Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

/// An OpenAI stream of `n` content events: role, contents, finish, usage, `[DONE]`.
fn stream_events(n: usize) -> Vec<Bytes> {
    let chunk = |delta: Value, finish: Value| {
        event(
            json!({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000,
                     "model": "gpt-4o-mini", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}),
        )
    };
    let mut out = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    out.extend((0..n).map(|i| chunk(json!({"content": format!("word{i} ")}), Value::Null)));
    out.push(chunk(json!({}), json!("stop")));
    out.push(event(
        json!({"id": "chatcmpl-bench", "object": "chat.completion.chunk",
        "created": 1700000000, "model": "gpt-4o-mini", "choices": [],
        "usage": {"prompt_tokens": 12, "completion_tokens": n, "total_tokens": 12 + n}}),
    ));
    out.push(Bytes::from_static(b"data: [DONE]\n\n"));
    out
}

struct Events(mpsc::Receiver<Bytes>);

impl futures_core::Stream for Events {
    type Item = Result<Frame<Bytes>, Infallible>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

/// Any request: its body is drained, the fixed chat answer goes back; with `x-mock-events:
/// N` (and `x-mock-interval-ms`), a stream of N events instead.
async fn answer(req: Request<Incoming>) -> Result<Response<UpBody>, Infallible> {
    let num = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
    };
    let events = num("x-mock-events");
    let interval = Duration::from_millis(num("x-mock-interval-ms").unwrap_or(0));
    let mut body = req.into_body();
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            break;
        }
    }
    let response = Response::builder().status(200);
    let response = match events {
        None => response
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(ANSWER.as_bytes())).boxed()),
        Some(n) => {
            let (tx, rx) = mpsc::channel(4);
            tokio::spawn(async move {
                for e in stream_events(usize::try_from(n).unwrap_or(3)) {
                    if tx.send(e).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(interval).await;
                }
            });
            response
                .header("content-type", "text/event-stream")
                .body(StreamBody::new(Events(rx)).boxed())
        }
    };
    Ok(response.unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed())))
}

async fn start_upstream() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), hyper::service::service_fn(answer))
                    .await;
            });
        }
    });
    Ok(port)
}

// ---- Measuring.

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
fn wrk(url: &str, script: &Path, seconds: u64, connections: u64) -> anyhow::Result<(Run, u64)> {
    let out = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--timeout",
            "30s",
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

/// One wrk run with Envoy's CPU time over it.
fn measure(
    v: &Variant,
    script: &Path,
    seconds: u64,
    connections: u64,
    tck: f64,
) -> anyhow::Result<Run> {
    let pid = v.envoy.pid();
    if callgrind() {
        callgrind_control(&["-i", "on"], pid)?;
        callgrind_control(&["-z"], pid)?;
    }
    let before = cpu_ticks(pid)?;
    let (mut run, requests) = wrk(
        &v.envoy.url("/v1/chat/completions"),
        script,
        seconds,
        connections,
    )
    .with_context(|| v.name.clone())?;
    let cpu_s = (cpu_ticks(pid)? - before) as f64 / tck;
    run.cpu_us_per_req = if requests > 0 {
        cpu_s * 1e6 / requests as f64
    } else {
        0.0
    };
    if callgrind() {
        // Under callgrind the "CPU" column is thousands of instructions per request.
        let loaded = callgrind_dump(pid)?;
        run.cpu_us_per_req = callgrind_per_request(pid, &loaded, seconds, requests)? / 1000.0;
    }
    Ok(run)
}

/// BENCH_CALLGRIND=1: Envoy runs under valgrind's callgrind, and each run counts the
/// instructions its worker thread executed per request (user space: Envoy's own code and
/// the filter's compiled code; not the kernel, not V8's compiler threads), net of what the
/// worker does when idle. The load on the machine does not change the count. About fifty
/// times slower than a plain run.
/// What the cost column holds.
fn cost_unit() -> &'static str {
    if callgrind() {
        "Envoy k instructions/req"
    } else {
        "Envoy CPU µs/req"
    }
}

fn callgrind() -> bool {
    std::env::var("BENCH_CALLGRIND").is_ok_and(|v| v == "1")
}

fn callgrind_dir() -> PathBuf {
    std::env::temp_dir().join(format!("ai-proxy-bench-cg-{}", std::process::id()))
}

/// A script that starts `envoy` under callgrind, instrumenting nothing until told.
fn callgrind_wrapper(envoy: &Path) -> anyhow::Result<PathBuf> {
    let dir = callgrind_dir();
    std::fs::create_dir_all(&dir)?;
    let script = dir.join("envoy");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec valgrind --tool=callgrind --smc-check=all-non-file \
             --instr-atstart=no --separate-threads=yes --callgrind-out-file={d}/cg.%p --log-file={d}/vg.%p.log {e} \"$@\"\n",
            d = dir.display(),
            e = envoy.display()
        ),
    )?;
    Command::new("chmod").arg("+x").arg(&script).status()?;
    Ok(script)
}

fn callgrind_control(args: &[&str], pid: u32) -> anyhow::Result<()> {
    let out = Command::new("callgrind_control")
        .args(args)
        .arg(pid.to_string())
        .output()
        .context("running callgrind_control")?;
    if !out.status.success() {
        bail!(
            "callgrind_control {args:?} {pid}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The instructions of each thread since the last zeroing, by thread (the dump's file
/// suffix): the counters are dumped and the newest dump of `pid` read.
fn callgrind_dump(pid: u32) -> anyhow::Result<BTreeMap<String, u64>> {
    callgrind_control(&["-d"], pid)?;
    let dir = callgrind_dir();
    let prefix = format!("cg.{pid}.");
    // With --separate-threads: cg.<pid>.<dump>-<thread>.
    let mut dumps: BTreeMap<u64, Vec<(String, PathBuf)>> = BTreeMap::new();
    for e in std::fs::read_dir(&dir)?.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((n, thread)) = name.strip_prefix(&prefix).and_then(|r| r.split_once('-')) else {
            continue;
        };
        if let Ok(n) = n.parse() {
            dumps
                .entry(n)
                .or_default()
                .push((thread.to_string(), e.path()));
        }
    }
    let (_, files) = dumps.pop_last().context("no callgrind dump")?;
    let mut out = BTreeMap::new();
    for (thread, path) in files {
        let text = std::fs::read_to_string(&path)?;
        let ir = text
            .lines()
            .find_map(|l| l.strip_prefix("summary:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        out.insert(thread, ir);
        let _ = std::fs::remove_file(&path);
    }
    Ok(out)
}

/// Under callgrind: the worker thread's instructions per request, net of what it does when
/// idle (ticks, timers) over as long, measured right after the run.
fn callgrind_per_request(
    pid: u32,
    loaded: &BTreeMap<String, u64>,
    seconds: u64,
    requests: u64,
) -> anyhow::Result<f64> {
    let Some((worker, ir)) = loaded.iter().max_by_key(|(_, ir)| **ir) else {
        bail!("no thread in the callgrind dump");
    };
    const IDLE_SECONDS: u64 = 3;
    callgrind_control(&["-z"], pid)?;
    std::thread::sleep(Duration::from_secs(IDLE_SECONDS));
    let idle = callgrind_dump(pid)?;
    callgrind_control(&["-i", "off"], pid)?;
    let idle_rate = idle.get(worker).copied().unwrap_or(0) as f64 / IDLE_SECONDS as f64;
    let net = (*ir as f64 - idle_rate * seconds as f64).max(0.0);
    Ok(if requests > 0 {
        net / requests as f64
    } else {
        0.0
    })
}

/// The `q` quantile (0 to 1) of `v`, nearest rank.
fn percentile(v: &[f64], q: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len().max(1));
    v.get(rank - 1).copied().unwrap_or(0.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// One stream of 20 events 5 ms apart: (time to first byte, total), in ms.
async fn stream_once(client: &reqwest::Client, envoy: &Envoy) -> anyhow::Result<(f64, f64)> {
    let body =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
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
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok((ms(first.unwrap_or_default()), ms(start.elapsed())))
}

// ---- The variants.

fn configs() -> (Value, Value) {
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
    let many = json!({"fallback_strategy": ["http_5xx", "rate_limiting"],
                      "instances": [instance("a", 0), instance("b", 0), instance("c", 1)],
                      "rate_limiting": {"limit": 1_000_000_000u64, "time_window": 3600}});
    (single, many)
}

/// The `.wasm` builds in `dir` whose name starts with `prefix`, by name, sorted.
fn builds_in(dir: &Path, prefix: &str) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("")
            .to_string();
        if name.starts_with(prefix) && path.extension().is_some_and(|e| e == "wasm") {
            out.push((name, path));
        }
    }
    out.sort();
    Ok(out)
}

/// The machine's CPUs (not this process's affinity: the driver runs pinned).
fn cpus() -> usize {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| s.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(0)
}

fn wasm_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds = env_num("BENCH_SECONDS", 5);
    let rounds = env_num("BENCH_ROUNDS", 3);
    let mb_rounds = env_num("BENCH_MB_ROUNDS", 1);
    let connections = env_num("BENCH_CONNECTIONS", 64);
    let n_streams = env_num("BENCH_STREAMS", 30);
    let started = Instant::now();

    if callgrind() {
        // The real binary (ENVOY_REAL_BIN, set by scripts/bench.sh), not a wrapper script.
        let real = std::env::var_os("ENVOY_REAL_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(integration::envoy::envoy_bin);
        std::env::set_var("ENVOY_BIN", callgrind_wrapper(&real)?);
    }
    let upstream = start_upstream().await?;
    let filter = wasm_str(&wasm_path()?);
    let built = repo_root().join("target/wasm32-wasip1/release");
    let (noop, floor) = (
        built.join("noop_filter.wasm"),
        built.join("floor_filter.wasm"),
    );
    for p in [&noop, &floor] {
        if !p.exists() {
            bail!("{} is missing: scripts/bench.sh builds it", p.display());
        }
    }
    let (noop, floor) = (wasm_str(&noop), wasm_str(&floor));
    let (single, many) = configs();
    let rls_config = check::config(&single);
    let service = check::start(&rls_config)?;

    let mut specs: Vec<(String, Vec<Value>, bool)> = vec![
        (PLAIN.into(), vec![], true),
        (NOOP.into(), vec![wasm_filter(&noop, "noop", "")], true),
        (FLOOR.into(), vec![wasm_filter(&floor, "floor", "")], true),
    ];
    // The contract floors: the floor filter's configurations (bench/floor-filter).
    for (name, config) in [
        (CONTRACT, "contract"),
        (CONTRACT_SCAN, "contract+scan"),
        (CONTRACT_LOAD, "contract+load"),
        (CONTRACT_CLASSIFY, "contract+classify"),
    ] {
        specs.push((
            name.into(),
            vec![wasm_filter(&floor, "floor", config)],
            true,
        ));
    }
    specs.extend([
        (
            ONE.into(),
            vec![wasm_filter(&filter, "ai_proxy", &single.to_string())],
            true,
        ),
        (
            MANY.into(),
            vec![wasm_filter(&filter, "ai_proxy", &many.to_string())],
            true,
        ),
    ]);
    if service.is_some() {
        let cfg = rls_config.to_string();
        specs.push((
            RLS.into(),
            vec![wasm_filter(&filter, "ai_proxy", &cfg)],
            false,
        ));
    }
    // BENCH_VARIANTS: comma-separated substrings of the variant names (all by default).
    let only = std::env::var("BENCH_VARIANTS").unwrap_or_default();
    let wanted = |name: &str| only.is_empty() || only.split(',').any(|w| name.contains(w.trim()));
    specs.retain(|(n, _, _)| wanted(n));
    let mut ablation = Vec::new();
    if let Ok(dir) = std::env::var("BENCH_ABLATION") {
        let mut logged = many.clone();
        logged["logging"] = json!({"summaries": true});
        let cfg = logged.to_string();
        // The folder's own `full.wasm` when it has one (the ablation of an older build).
        let full = Path::new(&dir).join("full.wasm");
        let full = if full.exists() {
            wasm_str(&full)
        } else {
            filter.clone()
        };
        ablation.push("ablation: full".to_string());
        specs.push((
            "ablation: full".into(),
            vec![wasm_filter(&full, "ai_proxy", &cfg)],
            false,
        ));
        for (feature, path) in builds_in(Path::new(&dir), "ablate-")? {
            let name = format!("ablation: {feature}");
            ablation.push(name.clone());
            specs.push((
                name,
                vec![wasm_filter(&wasm_str(&path), "ai_proxy", &cfg)],
                false,
            ));
        }
    }

    // BENCH_BUILDS=<dir>: every `.wasm` there, as a variant of its own on the one-provider
    // configuration (BENCH_BUILD_CONFIG=many: the many-instance one), at every size: to
    // compare builds side by side.
    if let Ok(dir) = std::env::var("BENCH_BUILDS") {
        let many_cfg = std::env::var("BENCH_BUILD_CONFIG").is_ok_and(|c| c == "many");
        let cfg = if many_cfg { &many } else { &single }.to_string();
        for (stem, path) in builds_in(Path::new(&dir), "")? {
            let name = format!("build: {stem}");
            specs.push((
                name,
                vec![wasm_filter(&wasm_str(&path), "ai_proxy", &cfg)],
                true,
            ));
        }
    }

    let mut variants = Vec::new();
    for (name, filters, big) in specs {
        let envoy = Envoy::with_bootstrap(bootstrap(
            &filters,
            upstream,
            service.as_ref().map(|s| s.port),
        )?)
        .start()
        .await
        .with_context(|| format!("starting Envoy for {name}"))?;
        // BENCH_PIN=<cpu>: Envoy (all its threads) on that CPU, away from wrk and the
        // upstream, so its CPU per request is measured without them competing.
        if let Ok(cpu) = std::env::var("BENCH_PIN") {
            let ok = Command::new("taskset")
                .args(["-a", "-p", "-c", &cpu, &envoy.pid().to_string()])
                .output()
                .is_ok_and(|o| o.status.success());
            if !ok {
                eprintln!("could not pin Envoy to CPU {cpu}");
            }
        }
        let start_rss = peak_rss_mb(envoy.pid());
        variants.push(Variant {
            name,
            envoy,
            big,
            start_rss,
        });
    }

    let dir = std::env::temp_dir().join(format!("ai-proxy-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut scripts = BTreeMap::new();
    for (label, size) in SIZES {
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

    // Warm every variant up (VM start, connections, V8 tier-up of both paths).
    let tck = clk_tck();
    // Under callgrind the same number of requests takes fifty times longer: V8 tiers code
    // up by what ran, not by time.
    let warmup = env_num("BENCH_WARMUP", if callgrind() { 20 } else { 1 });
    for v in &variants {
        measure(v, &scripts["1 KB"], warmup, connections, tck)?;
        if v.big {
            measure(v, &scripts["100 KB"], warmup, connections, tck)?;
        }
    }

    let mut results: BTreeMap<(&str, String), Vec<Run>> = BTreeMap::new();
    let total_rounds = rounds.max(mb_rounds);
    for round in 0..total_rounds {
        eprintln!("round {}/{total_rounds} ...", round + 1);
        // Rotate the order so no variant always runs first or last.
        let order: Vec<usize> = (0..variants.len())
            .map(|i| (i + round as usize) % variants.len())
            .collect();
        for (label, _) in SIZES {
            let n = if label == "1 MB" { mb_rounds } else { rounds };
            if round >= n {
                continue;
            }
            for &i in &order {
                let v = &variants[i];
                if label != "1 KB" && !v.big {
                    continue;
                }
                let run = measure(v, &scripts[label], seconds, connections, tck)?;
                results
                    .entry((label, v.name.clone()))
                    .or_default()
                    .push(run);
            }
        }
    }

    // Streams, interleaved one request at a time across the variants.
    let streamed: Vec<&Variant> = variants
        .iter()
        .filter(|v| [PLAIN, NOOP, FLOOR, ONE].contains(&v.name.as_str()))
        .collect();
    let client = reqwest::Client::new();
    let mut stream_runs: BTreeMap<&str, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for _ in 0..n_streams {
        for v in &streamed {
            let (ttfb, total) = stream_once(&client, &v.envoy).await?;
            let e = stream_runs.entry(v.name.as_str()).or_default();
            e.0.push(ttfb);
            e.1.push(total);
        }
    }

    // A rate limit service check: one request at a time, with and without, interleaved.
    let checked: Vec<&Variant> = variants
        .iter()
        .filter(|v| [ONE, RLS].contains(&v.name.as_str()))
        .collect();
    let mut check_runs: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    if checked.len() == 2 {
        let body = chat_body(1024);
        for _ in 0..env_num("BENCH_CHECKS", 300) {
            for v in &checked {
                let ms = check::once(&client, &v.envoy, &body).await?;
                check_runs.entry(v.name.as_str()).or_default().push(ms);
            }
        }
    }

    // ---- Report.
    let med = |label: &str, name: &str, f: fn(&Run) -> f64| {
        median(
            results
                .get(&(label, name.to_string()))
                .map(|r| r.iter().map(f).collect())
                .unwrap_or_default(),
        )
    };
    let spread = |label: &str, name: &str| {
        let v: Vec<f64> = results
            .get(&(label, name.to_string()))
            .map(|r| r.iter().map(|r| r.cpu_us_per_req).collect())
            .unwrap_or_default();
        let (lo, hi) = v
            .iter()
            .fold((f64::MAX, f64::MIN), |(l, h), x| (l.min(*x), h.max(*x)));
        if v.len() > 1 {
            (hi - lo) / 2.0
        } else {
            0.0
        }
    };
    let ratio = |a: f64, b: f64| {
        if b > 0.0 {
            format!("{:.2}", a / b)
        } else {
            "-".into()
        }
    };
    // Each round's req/s over the floor's in the same round: the lowest and the highest.
    let per_round = |label: &str, name: &str| {
        let (Some(runs), Some(floors)) = (
            results.get(&(label, name.to_string())),
            results.get(&(label, FLOOR.to_string())),
        ) else {
            return "-".to_string();
        };
        let r: Vec<f64> = runs
            .iter()
            .zip(floors)
            .filter(|(_, f)| f.rps > 0.0)
            .map(|(v, f)| v.rps / f.rps)
            .collect();
        let (lo, hi) = r
            .iter()
            .fold((f64::MAX, f64::MIN), |(l, h), x| (l.min(*x), h.max(*x)));
        if r.len() > 1 {
            format!("{lo:.2} to {hi:.2}")
        } else {
            "-".to_string()
        }
    };
    println!();
    let pinned = std::env::var("BENCH_PIN")
        .map(|c| format!("Envoy pinned to CPU {c}, wrk and the upstream on the others"))
        .unwrap_or_else(|_| "no CPU pinning".into());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "envoy-ai-proxy benchmark: Envoy --concurrency 1, wrk -t1 -c{connections}, {seconds} s runs, \
         {rounds} interleaved rounds ({mb_rounds} with 1 MB), medians; {pinned}; {} CPUs; load average at the end: {}",
        cpus(),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    let main_variants: Vec<&Variant> = variants.iter().filter(|v| v.big || v.name == RLS).collect();
    for (label, _) in SIZES {
        if !main_variants
            .iter()
            .any(|v| results.contains_key(&(label, v.name.clone())))
        {
            continue;
        }
        let floor_rps = med(label, FLOOR, |r| r.rps);
        let noop_rps = med(label, NOOP, |r| r.rps);
        let floor_cpu = med(label, FLOOR, |r| r.cpu_us_per_req);
        println!();
        println!("POST /v1/chat/completions, {label} JSON body");
        println!(
            "| variant | req/s | vs floor | vs floor per round | vs no-op | {} | over floor | p50 ms | p99 ms |",
            cost_unit()
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for v in &main_variants {
            if !results.contains_key(&(label, v.name.clone())) {
                continue;
            }
            let rps = med(label, &v.name, |r| r.rps);
            let cpu = med(label, &v.name, |r| r.cpu_us_per_req);
            println!(
                "| {} | {:.0} | {} | {} | {} | {:.1} ±{:.1} | {:+.1} | {:.2} | {:.2} |",
                v.name,
                rps,
                ratio(rps, floor_rps),
                per_round(label, &v.name),
                ratio(rps, noop_rps),
                cpu,
                spread(label, &v.name),
                cpu - floor_cpu,
                med(label, &v.name, |r| r.p50_ms),
                med(label, &v.name, |r| r.p99_ms),
            );
        }
    }

    println!();
    println!("Cost per KB of body (Envoy CPU, from 1 KB to 100 KB)");
    let unit = if callgrind() { "k instr" } else { "µs" };
    println!("| variant | {unit}/req 1 KB | {unit}/req 100 KB | {unit} per KB | vs floor |");
    println!("|---|---:|---:|---:|---:|");
    let per_kb = |name: &str| {
        (med("100 KB", name, |r| r.cpu_us_per_req) - med("1 KB", name, |r| r.cpu_us_per_req)) / 99.0
    };
    for v in &main_variants {
        if !results.contains_key(&("100 KB", v.name.clone())) {
            continue;
        }
        println!(
            "| {} | {:.1} | {:.1} | {:.2} | {} |",
            v.name,
            med("1 KB", &v.name, |r| r.cpu_us_per_req),
            med("100 KB", &v.name, |r| r.cpu_us_per_req),
            per_kb(&v.name),
            ratio(per_kb(&v.name), per_kb(FLOOR)),
        );
    }

    if !stream_runs.is_empty() {
        let noop_ttfb = stream_runs.get(NOOP).map(|r| median(r.0.clone()));
        println!();
        println!(
            "Streaming, 20 events 5 ms apart, {n_streams} requests each (interleaved), medians"
        );
        println!("| variant | time to first byte ms | vs no-op ms | total ms |");
        println!("|---|---:|---:|---:|");
        for v in &streamed {
            let Some((ttfb, total)) = stream_runs.get(v.name.as_str()) else {
                continue;
            };
            let t = median(ttfb.clone());
            let vs = noop_ttfb.map_or("-".into(), |n| format!("{:+.2}", t - n));
            println!(
                "| {} | {t:.2} | {vs} | {:.1} |",
                v.name,
                median(total.clone())
            );
        }
    }

    if let (Some(without), Some(with), Some(s)) =
        (check_runs.get(ONE), check_runs.get(RLS), service.as_ref())
    {
        let (p50, p99) = (percentile(without, 0.5), percentile(without, 0.99));
        let (c50, c99) = (percentile(with, 0.5), percentile(with, 0.99));
        println!();
        println!(
            "A rate limit service check (Limitador protocol, the test service with counters in {}, loopback), {} requests one at a time each (interleaved)",
            s.store,
            without.len()
        );
        println!("| variant | p50 ms | p99 ms |");
        println!("|---|---:|---:|");
        println!("| {ONE} | {p50:.2} | {p99:.2} |");
        println!("| {RLS} | {c50:.2} | {c99:.2} |");
        println!(
            "| added by the check | {:+.2} | {:+.2} |",
            c50 - p50,
            c99 - p99
        );
    }

    println!();
    println!("Peak RSS (VmHWM): once started (before any request), and after every run above");
    println!("| variant | at start MB | vs no-op MB | peak RSS MB | vs no-op MB |");
    println!("|---|---:|---:|---:|---:|");
    let noop_rss = variants
        .iter()
        .find(|v| v.name == NOOP)
        .map(|v| (v.start_rss, peak_rss_mb(v.envoy.pid())));
    for v in &variants {
        let rss = peak_rss_mb(v.envoy.pid());
        let vs = |n: Option<f64>, x: f64| n.map_or("-".into(), |n| format!("{:+.1}", x - n));
        println!(
            "| {} | {:.1} | {} | {rss:.1} | {} |",
            v.name,
            v.start_rss,
            vs(noop_rss.map(|n| n.0), v.start_rss),
            vs(noop_rss.map(|n| n.1), rss)
        );
    }

    if !ablation.is_empty() {
        let full = med("1 KB", "ablation: full", |r| r.cpu_us_per_req);
        let floor_cpu = med("1 KB", FLOOR, |r| r.cpu_us_per_req);
        println!();
        println!("Ablation: the many-instance configuration with summary logs, 1 KB, each build with one cost centre off");
        println!("| build | {} | saved vs full | req/s |", cost_unit());
        println!("|---|---:|---:|---:|");
        for name in &ablation {
            let cpu = med("1 KB", name, |r| r.cpu_us_per_req);
            println!(
                "| {} | {cpu:.1} ±{:.1} | {:.1} | {:.0} |",
                name.trim_start_matches("ablation: "),
                spread("1 KB", name),
                full - cpu,
                med("1 KB", name, |r| r.rps)
            );
        }
        if floor_cpu > 0.0 {
            println!(
                "| (body-read floor) | {floor_cpu:.1} | {:.1} | {:.0} |",
                full - floor_cpu,
                med("1 KB", FLOOR, |r| r.rps)
            );
        }
    }

    println!();
    let size = |p: &str| std::fs::metadata(p).map_or(0, |m| m.len());
    println!(
        "envoy_ai_proxy.wasm: {} bytes; noop_filter.wasm: {} bytes; floor_filter.wasm: {} bytes",
        size(&filter),
        size(&noop),
        size(&floor)
    );
    println!("took {:.0} s", started.elapsed().as_secs_f64());
    let _ = std::fs::remove_dir_all(&dir);
    // Dropping the variants stops their Envoys.
    drop(variants);
    Ok(())
}
