//! Native micro-benchmarks of the filter's hot paths, so regressions show without Envoy:
//! request shaping (1 KB and 100 KB bodies), SSE framing and usage per event, picking.
//! `cargo bench -p envoy-ai-proxy --bench hot_paths`.
#![allow(
    clippy::unwrap_used,
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing
)]

use std::hint::black_box;
use std::time::Instant;

use envoy_ai_proxy::balancer::RoundRobin;
use envoy_ai_proxy::config;
use envoy_ai_proxy::exchange::pick::{pick, Availability};
use envoy_ai_proxy::protocol;
use envoy_ai_proxy::usage::Meter;

/// Runs `f` for about half a second; prints ns per call.
fn bench(name: &str, f: impl FnMut()) {
    bench_per(name, 1, f);
}

/// As [`bench`], with each call doing `units` units of work; prints ns per unit.
fn bench_per(name: &str, units: u64, mut f: impl FnMut()) {
    for _ in 0..100 {
        f();
    }
    let mut n: u64 = 0;
    let start = Instant::now();
    while start.elapsed().as_millis() < 500 {
        for _ in 0..100 {
            f();
        }
        n += 100;
    }
    let ns = start.elapsed().as_nanos() as f64 / (n * units) as f64;
    println!("{name:<48} {ns:>12.0} ns/op");
}

fn body(size: usize) -> String {
    let filler = "x".repeat(size.saturating_sub(120));
    serde_json::json!({"model": "client-model", "messages": [
        {"role": "system", "content": "You are a benchmark."},
        {"role": "user", "content": filler}]})
    .to_string()
}

fn main() {
    let cfg = config::parse(
        br#"{"provider":"openai","auth":{"header":{"Authorization":"Bearer k"}},
             "options":{"model":"gpt-4o-mini","max_tokens":256}}"#,
    )
    .unwrap();
    for (label, size) in [("1 KB", 1024), ("100 KB", 100 * 1024)] {
        let b = body(size);
        bench(&format!("read + pick + shape, {label} body"), || {
            let req = protocol::read_request(black_box(b.as_bytes()), &cfg, None).unwrap();
            let i = pick(
                &cfg,
                &mut RoundRobin::default(),
                0,
                req.client.kind,
                &Availability::default(),
            )
            .unwrap();
            let up = protocol::shape(&cfg.instances[i], &req).unwrap();
            black_box(up.body.map(|b| b.len()));
        });
    }

    let event = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hello \"},\"finish_reason\":null}]}\n\n";
    let stream: String = event.repeat(100);
    bench_per(
        "SSE framing + usage, per event (100-event chunk)",
        100,
        || {
            let mut m = Meter::sse(true, false);
            black_box(m.push(black_box(stream.as_bytes())));
            black_box(m.finish());
        },
    );

    let multi = config::parse(
        br#"{"instances":[{"name":"a","provider":"openai","priority":1,"weight":8},
                          {"name":"b","provider":"openai","priority":1,"weight":2},
                          {"name":"c","provider":"deepseek","priority":0}]}"#,
    )
    .unwrap();
    let mut rr = RoundRobin::default();
    bench("pick, 3 instances in 2 priority groups", || {
        black_box(multi.balancer.pick(&mut rr, 0, |i| i != 0));
    });
}
