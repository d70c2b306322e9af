//! The Grafana dashboard (`deploy/grafana/ai-proxy.json`), tested the way operators use it:
//! Debian's Prometheus scrapes a live Envoy with the filter while a little traffic goes
//! through it (chat and streams with usage, consumers named by `api_key_auth`, a fallback
//! from an instance answering 503, a rate-limit rejection, health-checked instances up and
//! down), then every panel's query, read from the JSON with its template variables
//! substituted, must return series with a number, and every template variable must offer
//! values. A panel added later is tested the same way.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use integration::envoy::repo_root;
use integration::grafana::{self, Dashboard};
use integration::prometheus::{self, Prometheus};
use integration::{Envoy, MockLlm, Reply};
use serde_json::{json, Value};

/// What `$__rate_interval`, `$__interval` and `$__range` become: the test's data spans a
/// few seconds, well inside it.
const RANGE_SECS: u64 = 60;

fn dashboard() -> Dashboard {
    Dashboard::load(&repo_root().join("deploy/grafana/ai-proxy.json")).unwrap()
}

fn uses_datasource_variable(ds: &Value) -> bool {
    matches!(ds["uid"].as_str(), Some("${datasource}" | "$datasource"))
}

/// The Prometheus names in the metrics table of docs/observability.md.
fn documented_metrics() -> Vec<String> {
    let doc = std::fs::read_to_string(repo_root().join("docs/observability.md")).unwrap();
    doc.lines()
        .filter_map(|l| l.strip_prefix("| `aiproxy_"))
        .filter_map(|l| l.split('`').next())
        .map(|name| format!("aiproxy_{name}"))
        .collect()
}

#[test]
fn the_dashboard_is_importable_and_shows_every_documented_metric() {
    let dash = dashboard();
    let j = &dash.json;
    assert_eq!(j["uid"], "envoy-ai-proxy");
    assert!(j["id"].is_null(), "an exported id clashes on import");
    assert!(j["schemaVersion"].as_u64().unwrap() >= 36, "Grafana 10+");

    let vars = dash.variables();
    let ds = vars.iter().find(|v| v.name == "datasource").unwrap();
    assert_eq!(ds.kind, "datasource");
    assert_eq!(dash.json["templating"]["list"][0]["query"], "prometheus");
    for v in vars.iter().filter(|v| v.kind == "query") {
        assert!(
            uses_datasource_variable(&v.datasource),
            "variable ${} must use ${{datasource}}",
            v.name
        );
        let query = v.query.as_deref().unwrap_or("");
        assert!(
            grafana::label_values_query(query).is_some(),
            "${}: {query:?} is not label_values(...)",
            v.name
        );
    }
    // Every variable a query uses has a value for the live test.
    let values = dash.test_values(RANGE_SECS).unwrap();
    let mut ids = Vec::new();
    for p in dash.panels() {
        ids.push(p.json["id"].as_u64().unwrap());
        if p.kind == "row" {
            continue;
        }
        assert!(
            uses_datasource_variable(&p.json["datasource"]),
            "panel {:?}: datasource must be ${{datasource}}",
            p.title
        );
        let targets = p.json["targets"].as_array().map_or(0, Vec::len);
        assert!(targets > 0, "panel {:?} has no query", p.title);
        assert!(
            !p.json["description"].as_str().unwrap_or("").is_empty(),
            "panel {:?}: say what it shows in its description",
            p.title
        );
    }
    let unique: std::collections::BTreeSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "panel ids are unique");
    let targets = dash.targets();
    for t in &targets {
        assert!(
            uses_datasource_variable(&t.datasource),
            "{}/{}: datasource must be ${{datasource}}",
            t.panel,
            t.ref_id
        );
        assert!(
            !t.expr.trim().is_empty(),
            "{}/{}: no expr",
            t.panel,
            t.ref_id
        );
        grafana::substitute(&t.expr, &values).unwrap();
    }

    let documented = documented_metrics();
    assert!(documented.len() >= 9, "the metrics table: {documented:?}");
    for metric in documented {
        assert!(
            targets.iter().any(|t| t.expr.contains(&metric)),
            "no panel shows {metric} (docs/observability.md lists it)"
        );
    }
}

fn api_key_auth() -> Value {
    json!({
        "name": "envoy.filters.http.api_key_auth",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuth",
            "credentials": [{"key": "john-key", "client": "john"}, {"key": "jane-key", "client": "jane"}],
            "key_sources": [{"header": "apikey"}],
            "forwarding": {"header": "x-consumer", "hide_credentials": true}
        }
    })
}

fn probes(path: &str) -> Value {
    json!({"active": {
        "http_path": path,
        "healthy": {"interval": 0.5, "successes": 1},
        "unhealthy": {"interval": 0.5, "http_failures": 1}
    }})
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// POSTs a chat request with `key` to `listener`; returns the status once the whole answer
/// has arrived.
async fn chat(envoy: &Envoy, listener: &str, key: &str, stream: bool) -> u16 {
    let body = json!({"model": "gpt-4o-mini", "stream": stream,
                      "messages": [{"role": "user", "content": "hi"}]});
    let resp = envoy
        .client()
        .post(envoy.url_on(listener, "/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("apikey", key)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    resp.bytes().await.unwrap();
    status
}

/// One round of traffic: on the main listener chat and streams by john and jane, the first
/// falling back from `flaky` (503) to `steady`; on the second listener requests until the
/// route's token limit rejects one.
async fn round(envoy: &Envoy, flaky: &MockLlm) {
    flaky.push(Reply::status(503));
    for (key, stream) in [
        ("john-key", false),
        ("john-key", true),
        ("jane-key", false),
        ("jane-key", true),
        ("john-key", false),
    ] {
        assert_eq!(chat(envoy, "ai_gateway", key, stream).await, 200);
    }
    let mut statuses = Vec::new();
    while statuses.last() != Some(&429) && statuses.len() < 6 {
        statuses.push(chat(envoy, "ai_gateway_b", "jane-key", false).await);
    }
    assert_eq!(statuses.last(), Some(&429), "no rejection: {statuses:?}");
}

/// Waits until Envoy's own `/stats/prometheus` has `line`.
async fn wait_envoy_line(envoy: &Envoy, line: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let text = envoy.prometheus().await;
        if text.lines().any(|l| l == line) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Envoy never showed {line:?}:\n{}",
            text.lines()
                .filter(|l| l.starts_with("aiproxy_") && !l.contains("_bucket"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn has_series(prom: &Prometheus, expr: &str) -> bool {
    !prom.query(expr).await.unwrap().is_empty()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_panel_shows_data_from_a_real_prometheus() {
    let started = Instant::now();
    let Some(bin) = prometheus::binary().unwrap() else {
        eprintln!(
            "SKIPPED: no Prometheus. scripts/test.sh installs Debian's package into \
             .venv/prometheus (`source scripts/lib.sh && ensure_prometheus`); it could not \
             here, or set PROMETHEUS_BIN."
        );
        return;
    };
    eprintln!(
        "prometheus: {} ({})",
        bin.display(),
        prometheus::version(&bin).unwrap_or_default()
    );
    let dash = dashboard();
    let values = dash.test_values(RANGE_SECS).unwrap();

    let flaky = MockLlm::start().await.unwrap();
    let steady = MockLlm::start().await.unwrap();
    let down = MockLlm::start().await.unwrap();
    let limited = MockLlm::start().await.unwrap();
    flaky.set_default(
        Reply::default()
            .usage(30, 12)
            .delay(Duration::from_millis(20)),
    );
    steady.set_default(
        Reply::default()
            .usage(50, 20)
            .delay(Duration::from_millis(60)),
    );
    down.set_path_reply("/v1/models", Reply::status(503));
    limited.set_default(Reply::default().usage(6, 4));
    let envoy = Envoy::with_config(&json!({
        "fallback_strategy": "http_5xx",
        "instances": [
            {"name": "flaky", "provider": "openai", "priority": 2,
             "options": {"model": "gpt-4o"}, "checks": {"passive": {}}},
            {"name": "steady", "provider": "deepseek", "priority": 1,
             "options": {"model": "deepseek-chat"}, "checks": probes("/v1/models")},
            {"name": "down", "provider": "openai", "priority": 0, "checks": probes("/v1/models")}
        ],
        "consumers": [
            {"name": "john", "rate_limiting": {"instances": [{"name": "flaky", "limit": 1000000, "time_window": 3600}]}}
        ]
    }))
    .second_listener(&json!({
        "provider": "openai",
        "rate_limiting": {"limit": 30, "time_window": 60}
    }))
    .pre_filter(api_key_auth())
    .cluster("flaky", flaky.port())
    .cluster("steady", steady.port())
    .cluster("down", down.port())
    .cluster("openai", limited.port())
    .start()
    .await
    .unwrap();
    let prom = Prometheus::start(&bin, &[format!("127.0.0.1:{}", envoy.admin_port)])
        .await
        .unwrap();

    // The probes take `down` out (and keep `steady` in) before any traffic.
    wait_envoy_line(
        &envoy,
        "aiproxy_healthy{aiproxy_instance=\"down\"} 0",
        Duration::from_secs(10),
    )
    .await;

    // Two rounds, each seen by a scrape after Envoy's stats flush (1 s in the test
    // bootstraps): the first creates every series, the second makes the rates non-zero
    // (a counter's first sample is no increase for rate()).
    for _ in 0..2 {
        round(&envoy, &flaky).await;
        let flushed = now_secs() + 1.2;
        prom.wait_scraped_after(flushed, Duration::from_secs(15))
            .await
            .unwrap();
    }

    // Every template variable offers values.
    for v in dash.variables().iter().filter(|v| v.kind == "query") {
        let query = v.query.clone().unwrap_or_default();
        let (selector, label) = grafana::label_values_query(&query).unwrap();
        let selector = selector.map(|s| grafana::substitute(&s, &values).unwrap());
        let got = prom
            .label_values(&label, selector.as_deref())
            .await
            .unwrap();
        eprintln!("variable ${}: {got:?}", v.name);
        assert!(
            !got.is_empty(),
            "variable ${} ({query}) offers nothing",
            v.name
        );
    }

    // Every label a variable filters on exists on the metric it filters: otherwise picking
    // a value in the drop-down would empty the panel.
    let mut failures = Vec::new();
    for t in dash.targets() {
        for (metric, label) in grafana::variable_filters(&t.expr) {
            if metric.is_empty() || label == "job" {
                continue;
            }
            if !has_series(&prom, &format!("count({metric})")).await {
                failures.push(format!("{} / {}: no series {metric}", t.panel, t.ref_id));
            } else if !has_series(&prom, &format!("count({metric}{{{label}!=\"\"}})")).await {
                failures.push(format!(
                    "{} / {}: filters {metric} on {label}, a label it does not have",
                    t.panel, t.ref_id
                ));
            }
        }
    }

    // Every panel query returns at least one series with a number. Rates need the second
    // round's scrape, which the loop above waited for; a little slack for slow machines.
    let deadline = Instant::now() + Duration::from_secs(10);
    for t in dash.targets() {
        let expr = grafana::substitute(&t.expr, &values).unwrap();
        let series = loop {
            let series = prom.query(&expr).await;
            let good = matches!(&series, Ok(s) if s.iter().any(|s| s.has_number()));
            if good || Instant::now() > deadline {
                break series;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        match series {
            Ok(s) if s.iter().any(|s| s.has_number()) => {
                let shown: Vec<String> = s
                    .iter()
                    .take(4)
                    .map(|s| format!("{} = {:?}", s.labels, s.values.first().unwrap_or(&0.0)))
                    .collect();
                eprintln!(
                    "ok  {} / {}: {} series, {}",
                    t.panel,
                    t.ref_id,
                    s.len(),
                    shown.join("; ")
                );
            }
            Ok(s) => failures.push(format!(
                "{} / {}: {} series, none with a number\n    {expr}",
                t.panel,
                t.ref_id,
                s.len()
            )),
            Err(e) => failures.push(format!("{} / {}: {e}\n    {expr}", t.panel, t.ref_id)),
        }
    }
    assert!(
        failures.is_empty(),
        "panels without data:\n{}",
        failures.join("\n")
    );
    eprintln!(
        "{} panel queries checked in {:?}",
        dash.targets().len(),
        started.elapsed()
    );
}
