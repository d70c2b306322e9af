//! Native micro-benchmarks of the filter's hot paths, so regressions show without Envoy:
//! reading the body (the scan, 1 KB and 100 KB, of prose, of code, and of text that is not
//! ASCII as encoders that escape it send it), request shaping, one
//! whole request through the exchange (the filter's own code per request, with a host that
//! answers at no cost), SSE framing and usage per event, picking. Each line also gives the heap allocations per call (counted by
//! this benchmark's allocator): in the wasm build every one is a call into dlmalloc.
//! `cargo bench -p envoy-ai-proxy --bench hot_paths`. The same benchmark runs as wasm under
//! Node's V8 (the engine Envoy embeds), where `node --cpu-prof` profiles the filter's code
//! by function: `cargo bench --target wasm32-wasip1 --bench hot_paths --no-run`, then
//! `node scripts/wasi-run.mjs target/wasm32-wasip1/release/deps/hot_paths-*.wasm`.
//! `HOT_PATHS=<substring>` runs only the matching lines, `HOT_PATHS_MS` sets each line's
//! time, `HOT_PATHS_CALLS=<n>` makes exactly n calls instead: under valgrind's callgrind, two
//! runs with different n give the instructions per call (the V8-compiled code included).
#![allow(
    clippy::unwrap_used,
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hint::black_box;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use envoy_ai_proxy::balancer::RoundRobin;
use envoy_ai_proxy::body::JsonBody;
use envoy_ai_proxy::config;
use envoy_ai_proxy::effect::{Host, Input, Map};
use envoy_ai_proxy::exchange::pick::{pick, Availability};
use envoy_ai_proxy::exchange::{Exchange, Plugin};
use envoy_ai_proxy::headers::Headers;
use envoy_ai_proxy::protocol;
use envoy_ai_proxy::root::Root;
use envoy_ai_proxy::store::{Store, StoreError};
use envoy_ai_proxy::usage::Meter;

/// The system allocator, counting allocations (a reallocation counts as one).
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is passed to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` for about half a second (HOT_PATHS_MS to change it); prints ns per call.
fn bench(name: &str, f: impl FnMut()) {
    bench_per(name, 1, f);
}

/// As [`bench`], with each call doing `units` units of work; prints ns per unit.
fn bench_per(name: &str, units: u64, mut f: impl FnMut()) {
    // HOT_PATHS=<substring>: only the benchmarks whose name contains it (for a profiler).
    if std::env::var("HOT_PATHS").is_ok_and(|only| !name.contains(&only)) {
        return;
    }
    for _ in 0..100 {
        f();
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    f();
    let allocs = ALLOCATIONS.load(Ordering::Relaxed) - before;
    let mut n: u64 = 0;
    let start = Instant::now();
    let ms = std::env::var("HOT_PATHS_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    // HOT_PATHS_CALLS=<n>: exactly n calls instead (for an instruction counter: two runs
    // with different n give the instructions per call by difference).
    let calls = std::env::var("HOT_PATHS_CALLS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(calls) = calls {
        for _ in 0..calls {
            f();
        }
        n = calls;
    }
    while calls.is_none() && start.elapsed().as_millis() < ms {
        for _ in 0..100 {
            f();
        }
        n += 100;
    }
    let ns = start.elapsed().as_nanos() as f64 / (n * units) as f64;
    println!(
        "{name:<48} {ns:>12.0} ns/op {:>8.0} allocs/op",
        allocs as f64 / units as f64
    );
}

fn body(size: usize) -> String {
    let filler = "x".repeat(size.saturating_sub(120));
    serde_json::json!({"model": "client-model", "messages": [
        {"role": "system", "content": "You are a benchmark."},
        {"role": "user", "content": filler}]})
    .to_string()
}

/// A chat body of about `size` bytes whose message is source code (JSON-escaped: `\n`,
/// `\"`, indentation), as agents send.
fn code_body(size: usize) -> String {
    let line = "    let name = format!(\"{}-{}\", key, value);\n";
    let code = line.repeat(size.saturating_sub(120) / line.len() + 1);
    serde_json::json!({"model": "client-model", "messages": [
        {"role": "system", "content": "You are a benchmark."},
        {"role": "user", "content": code}]})
    .to_string()
}

/// A chat body of about `size` bytes whose message is text that is not ASCII, every
/// character of it escaped (`\u4f60`), as encoders that keep to ASCII send it.
fn escaped_body(size: usize) -> String {
    let line = "你好，世界。这是一个测试。\n";
    let text = line.repeat(size.saturating_sub(120) / 80 + 1);
    let mut body = String::new();
    for c in serde_json::json!({"model": "client-model", "messages": [
        {"role": "system", "content": "You are a benchmark."},
        {"role": "user", "content": text}]})
    .to_string()
    .chars()
    {
        if c.is_ascii() {
            body.push(c);
        } else {
            body.push_str(&format!("\\u{:04x}", u32::from(c)));
        }
    }
    body
}

fn main() {
    let cfg = config::parse(
        br#"{"provider":"openai","auth":{"header":{"Authorization":"Bearer k"}},
             "options":{"model":"gpt-4o-mini","max_tokens":256}}"#,
    )
    .unwrap();
    for (label, size) in [("1 KB", 1024), ("100 KB", 100 * 1024)] {
        let b = body(size);
        bench(&format!("scan (JSON body read), {label} body"), || {
            black_box(JsonBody::parse(black_box(b.as_bytes())).unwrap());
        });
        // Code in a message: an escaped line break every 40 bytes or so, and quotes.
        let code = code_body(size);
        bench(&format!("scan (JSON body read), {label} of code"), || {
            black_box(JsonBody::parse(black_box(code.as_bytes())).unwrap());
        });
        // Text that is not ASCII, as Python's `json.dumps` spells it by default: `\uXXXX`.
        let escaped = escaped_body(size);
        bench(
            &format!("scan (JSON body read), {label} of \\u escapes"),
            || {
                black_box(JsonBody::parse(black_box(escaped.as_bytes())).unwrap());
            },
        );
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
            black_box(up.body.map(|b| b.prefix.len()));
        });
    }

    let single = r#"{"provider":"openai-compatible","cluster":"mock",
        "override":{"endpoint":"http://llm.internal"},
        "auth":{"header":{"Authorization":"Bearer sk-bench"}},"options":{"model":"gpt-4o-mini"}}"#;
    let instance = |name: &str, priority: u32| {
        format!(
            r#"{{"name":"{name}","provider":"openai-compatible","cluster":"mock","priority":{priority},
                "override":{{"endpoint":"http://llm.internal"}},
                "auth":{{"header":{{"Authorization":"Bearer sk-bench"}}}},
                "options":{{"model":"gpt-4o-mini"}},
                "checks":{{"active":{{"http_path":"/health","healthy":{{"interval":1}}}},"passive":{{}}}}}}"#
        )
    };
    let many = format!(
        r#"{{"fallback_strategy":["http_5xx","rate_limiting"],"instances":[{},{},{}],
            "rate_limiting":{{"limit":1000000000,"time_window":3600}}}}"#,
        instance("a", 0),
        instance("b", 0),
        instance("c", 1)
    );
    for (label, size) in [("1 KB", 1024), ("100 KB", 100 * 1024)] {
        let b = body(size);
        bench_exchange(&format!("whole request, one provider, {label}"), single, &b);
        bench_exchange(
            &format!("whole request, 3 instances + limits + health, {label}"),
            &many,
            &b,
        );
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

/// A host for the whole-exchange benchmark: fixed request and answer, a shared-data map with
/// CAS tokens, effects counted and dropped.
struct BenchHost {
    now: Cell<u64>,
    store: MapStore,
    request: Headers,
    body: Vec<u8>,
    response: Headers,
    answer: Vec<u8>,
}

#[derive(Default)]
struct MapStore(RefCell<HashMap<String, (Vec<u8>, u32)>>);

impl Store for MapStore {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
        Ok(match self.0.borrow().get(key) {
            Some((v, cas)) => (Some(v.clone()), Some(*cas)),
            None => (None, None),
        })
    }
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        let mut m = self.0.borrow_mut();
        let current = m.get(key).map(|(_, c)| *c);
        if cas.is_some() && cas != current {
            return Err(StoreError::CasMismatch);
        }
        m.insert(
            key.to_string(),
            (value.to_vec(), current.map_or(1, |c| c + 1)),
        );
        Ok(())
    }
}

impl Host for BenchHost {
    fn now_ns(&self) -> u64 {
        let t = self.now.get() + 1_000;
        self.now.set(t);
        t
    }
    fn store(&self) -> &dyn Store {
        &self.store
    }
    fn headers(&self, map: Map) -> Headers {
        match map {
            Map::Request => self.request.clone(),
            Map::Response => self.response.clone(),
        }
    }
    fn body(&self, map: Map, size: usize) -> Result<Vec<u8>, String> {
        let b = match map {
            Map::Request => &self.body,
            Map::Response => &self.answer,
        };
        Ok(b[..size.min(b.len())].to_vec())
    }
    fn callout_answer(&self, _: usize) -> (Headers, Vec<u8>) {
        (Headers::default(), Vec::new())
    }
    fn grpc_answer(&self, _: usize) -> Vec<u8> {
        Vec::new()
    }
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        (path == ["request", "id"]).then(|| b"0f0e0d0c-0b0a-0908-0706-050403020100".to_vec())
    }
    fn env(&self, _: &str) -> Option<String> {
        None
    }
}

fn pairs(h: &[(&str, &str)]) -> Headers {
    Headers::from_pairs(h)
}

/// One request through the whole exchange (headers, body, answer headers and body, log), as
/// the host layer drives it; returns how many effects it produced.
fn exchange_once(plugin: &Rc<Plugin>, host: &BenchHost) -> usize {
    let mut ex = Exchange::new(Some(plugin.clone()));
    let inputs = [
        Input::RequestHeaders {
            end_of_stream: false,
        },
        Input::RequestBody {
            size: host.body.len(),
            end_of_stream: true,
        },
        Input::ResponseHeaders {
            end_of_stream: false,
        },
        Input::ResponseBody {
            size: host.answer.len(),
            end_of_stream: true,
        },
        Input::Log,
    ];
    let mut effects = 0;
    for input in inputs {
        let out = ex.on(input, host);
        effects += out.effects.len();
        black_box(out);
    }
    effects
}

fn bench_exchange(name: &str, config: &str, body: &str) {
    let answer = br#"{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the benchmark upstream."},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19}}"#;
    let host = BenchHost {
        now: Cell::new(1_700_000_000_000_000_000),
        store: MapStore::default(),
        request: pairs(&[
            (":authority", "127.0.0.1:10000"),
            (":path", "/v1/chat/completions"),
            (":method", "POST"),
            (":scheme", "http"),
            ("content-length", &body.len().to_string()),
            ("content-type", "application/json"),
            ("x-ai-proxy-cluster", "mock"),
            ("x-forwarded-proto", "http"),
            ("x-request-id", "0f0e0d0c-0b0a-0908-0706-050403020100"),
        ]),
        body: body.as_bytes().to_vec(),
        response: pairs(&[
            (":status", "200"),
            ("content-type", "application/json"),
            ("content-length", &answer.len().to_string()),
            ("date", "Mon, 30 Nov 2026 14:00:00 GMT"),
            ("x-envoy-upstream-service-time", "1"),
        ]),
        answer: answer.to_vec(),
    };
    // Seed what `on_configure` seeds (counters and health keys), through the root.
    let mut root = Root::new("bench".into());
    root.configure(config.as_bytes(), b"bench", &host).unwrap();
    let plugin = root.plugin().unwrap();
    let effects = exchange_once(&plugin, &host);
    bench(&format!("{name} ({effects} effects)"), || {
        black_box(exchange_once(&plugin, &host));
    });
}
