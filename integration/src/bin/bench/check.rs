//! What a rate limit service check adds to a request: the one-provider configuration with
//! its limit kept by the test rate limit service (`ratelimit-service/`, Limitador's
//! protocol; counters in Redis when `redis-server` is on PATH, else in memory), on the
//! loopback, against the same configuration without it, one request at a time, the two
//! interleaved. Runs when `RLS_BIN` is set (`scripts/bench.sh` builds the service, unless
//! `BENCH_RLS=0`).

use std::time::Instant;

use integration::bootstrap::http2_options;
use integration::services::{RateLimitService, Redis};
use integration::Envoy;
use serde_json::{json, Value};

/// A running service (and its Redis), stopped on drop.
pub struct Service {
    pub port: u16,
    /// Where its counters are: `Redis` or `memory`.
    pub store: &'static str,
    _rls: RateLimitService,
    _redis: Option<Redis>,
}

/// `single` with a limit (never reached) kept by the service on cluster `rls`.
pub fn config(single: &Value) -> Value {
    let mut c = single.clone();
    c["rate_limiting"] = json!({"limit": 1_000_000_000_000u64, "time_window": 3600,
        "service": {"cluster": "rls", "domain": "ai-proxy", "protocol": "limitador"}});
    c
}

/// Starts the service for `config` when `RLS_BIN` is set.
pub fn start(config: &Value) -> anyhow::Result<Option<Service>> {
    if std::env::var_os("RLS_BIN").is_none() {
        return Ok(None);
    }
    let on_path = std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let redis = if on_path { Some(Redis::start()?) } else { None };
    let limits = integration::rls::service_limits_file(config)?;
    let rls = RateLimitService::start("limitador", &limits, redis.as_ref())?;
    Ok(Some(Service {
        port: rls.port,
        store: if redis.is_some() { "Redis" } else { "memory" },
        _rls: rls,
        _redis: redis,
    }))
}

/// The service's Envoy cluster (gRPC: HTTP/2).
pub fn cluster(port: u16) -> Value {
    json!({"name": "rls", "type": "STATIC", "connect_timeout": "30s",
        "typed_extension_protocol_options": http2_options(),
        "load_assignment": {"cluster_name": "rls", "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}})
}

/// One plain 1 KB chat request, answered 200: its latency in ms.
pub async fn once(client: &reqwest::Client, envoy: &Envoy, body: &str) -> anyhow::Result<f64> {
    let start = Instant::now();
    let resp = client
        .post(envoy.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("x-ai-proxy-cluster", "mock")
        .body(body.to_string())
        .send()
        .await?;
    let status = resp.status();
    resp.bytes().await?;
    if status != 200 {
        anyhow::bail!("status {status}");
    }
    Ok(start.elapsed().as_secs_f64() * 1000.0)
}
