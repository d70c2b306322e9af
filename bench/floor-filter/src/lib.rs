//! The floors of the benchmarks, as one Proxy-Wasm HTTP filter.
//!
//! - The body-read floor (configuration ``): what any filter routing from the request body
//!   must do. It holds the headers, lets Envoy buffer the whole body, reads it into the VM
//!   once, and sets one request header (the routing header), then lets the request go.
//! - The contract floor (configuration `contract`): the host calls that the AI proxy's
//!   contract takes for one plain request with one provider, and nothing else: the request
//!   and response header maps read, the routing header dropped, the request's edits as one
//!   write of the map, the model in the body replaced, the answer read for its usage, the
//!   13 access-log values (`llm_*` filter state), the request, token and latency metrics,
//!   the clock once per callback. Its cost over the body-read floor is what the host calls
//!   alone cost; the AI proxy over it is its own code.
//! - The contract floor with the body read (configuration `contract+scan`): the same, plus
//!   what the contract asks of the body's bytes: every byte validated as JSON (a body that is
//!   not gets a 400) and the top-level members located (`model`, `stream`), by the AI
//!   proxy's own scan (`src/scan.rs`, compiled in here as it is). Its cost over the contract
//!   floor is the validation every byte needs; the AI proxy over it is the rest of its code.
//! - The contract floor with every byte loaded (configuration `contract+load`): the contract
//!   floor, plus the least any validation of the body does: each byte loaded into the VM's
//!   registers once, sixteen at a time, and nothing else (`load_all`). No filter that
//!   validates the body can cost less than this.
//! - The contract floor with every byte classified (configuration `contract+classify`): each
//!   byte loaded once and told apart from the bytes that end a run of string content (`"`,
//!   `\`, a control character) and from those that are not ASCII, which a JSON validation
//!   must do with every byte inside a string (and a body is mostly strings), the cheapest
//!   way known here and with no parsing around it (`classify_all`).

use std::cell::Cell;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType};

// The AI proxy's structural scan, as it is (only `object` is used here).
#[allow(dead_code)]
#[path = "../../../src/scan.rs"]
mod scan;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { contract: None, bytes: Bytes::Untouched })
    });
}}

/// The contract's metric ids (defined once per VM).
struct Metrics {
    requests: u32,
    tokens_in: u32,
    tokens_out: u32,
    ttft: u32,
    duration: u32,
}

/// What the contract floor does with the body's bytes besides reading them.
#[derive(Clone, Copy, PartialEq)]
enum Bytes {
    /// Nothing (`contract`).
    Untouched,
    /// Validated and its members located by the AI proxy's scan (`contract+scan`).
    Scanned,
    /// Each loaded once, and nothing else (`contract+load`).
    Loaded,
    /// Each loaded once and told apart from `"`, `\`, control characters and bytes that are
    /// not ASCII (`contract+classify`).
    Classified,
}

struct Root {
    contract: Option<Rc<Metrics>>,
    bytes: Bytes,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        self.bytes = match config.as_slice() {
            b"contract+scan" => Bytes::Scanned,
            b"contract+load" => Bytes::Loaded,
            b"contract+classify" => Bytes::Classified,
            _ => Bytes::Untouched,
        };
        if config.as_slice() == b"contract" || self.bytes != Bytes::Untouched {
            let define = |kind, name: &str| hostcalls::define_metric(kind, name).unwrap_or(0);
            let m = "floor.instance.a.model.gpt-4o-mini";
            self.contract = Some(Rc::new(Metrics {
                requests: define(MetricType::Counter, &format!("{m}.requests_total")),
                tokens_in: define(MetricType::Counter, &format!("{m}.input.tokens_total")),
                tokens_out: define(MetricType::Counter, &format!("{m}.output.tokens_total")),
                ttft: define(MetricType::Histogram, &format!("{m}.ttft_ms")),
                duration: define(MetricType::Histogram, &format!("{m}.duration_ms")),
            }));
        }
        true
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Floor {
            contract: self.contract.clone(),
            bytes: self.bytes,
            started: Cell::new(0),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Floor {
    contract: Option<Rc<Metrics>>,
    bytes: Bytes,
    started: Cell<u64>,
}

impl Floor {
    fn now_ms(&self) -> u64 {
        self.get_current_time()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    fn state(&self, name: &str, value: &str) {
        self.set_property(vec![name], Some(value.as_bytes()));
    }
}

/// Every byte of `b` loaded once, sixteen at a time (four vectors a step), OR-ed together:
/// the least any pass that looks at each byte does. Whether any byte is not zero.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn load_all(b: &[u8]) -> bool {
    use core::arch::wasm32::{u8x16_splat, v128, v128_any_true, v128_or};
    let mut acc = [u8x16_splat(0); 4];
    let mut chunks = b.chunks_exact(64);
    for c in &mut chunks {
        for (k, a) in acc.iter_mut().enumerate() {
            // SAFETY: `c` holds 64 bytes; each unaligned 16-byte load reads inside it.
            let v = unsafe { (c.as_ptr().add(k * 16) as *const v128).read_unaligned() };
            *a = v128_or(*a, v);
        }
    }
    let [a, b2, c, d] = acc;
    v128_any_true(v128_or(v128_or(a, b2), v128_or(c, d)))
        || chunks.remainder().iter().any(|&x| x != 0)
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
fn load_all(b: &[u8]) -> bool {
    b.iter().fold(0u8, |a, &x| a | x) != 0
}

/// Every byte of `b` loaded once and told apart from `"`, `\`, the control characters and
/// the bytes at or above 0x80, sixteen at a time, the cheapest way known here: the AI proxy's
/// scan's own test of a clean run (`src/scan/simd.rs`, `clean`), two running minimums (of
/// the bytes with bit 1 flipped, signed, and of the bytes XOR a backslash, unsigned: five
/// vector operations per sixteen bytes with the load) and one test at the end, with no
/// parsing around it. Whether any byte is one of them.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn classify_all(b: &[u8]) -> bool {
    use core::arch::wasm32::{
        i8x16_eq, i8x16_lt, i8x16_min, i8x16_splat, u8x16_min, u8x16_splat, v128, v128_any_true,
        v128_or, v128_xor,
    };
    let (mut low, mut slash) = (i8x16_splat(0x7f), u8x16_splat(0xff));
    let mut chunks = b.chunks_exact(64);
    for c in &mut chunks {
        for k in 0..4 {
            // SAFETY: `c` holds 64 bytes; each unaligned 16-byte load reads inside it.
            let v = unsafe { (c.as_ptr().add(k * 16) as *const v128).read_unaligned() };
            low = i8x16_min(low, v128_xor(v, i8x16_splat(0x02)));
            slash = u8x16_min(slash, v128_xor(v, u8x16_splat(b'\\')));
        }
    }
    v128_any_true(v128_or(
        i8x16_lt(low, i8x16_splat(0x21)),
        i8x16_eq(slash, u8x16_splat(0)),
    )) || chunks
        .remainder()
        .iter()
        .any(|&x| x == b'"' || x == b'\\' || !(0x20..0x80).contains(&x))
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
fn classify_all(b: &[u8]) -> bool {
    b.iter()
        .any(|&x| x == b'"' || x == b'\\' || !(0x20..0x80).contains(&x))
}

impl Context for Floor {}

impl HttpContext for Floor {
    fn on_http_request_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        if self.contract.is_some() {
            self.started.set(self.now_ms());
            let headers = self.get_http_request_headers();
            let path = headers
                .iter()
                .find(|(n, _)| n == ":path")
                .map_or(String::new(), |(_, v)| v.clone());
            self.set_http_request_header("x-ai-proxy-cluster", None);
            self.state("llm_client_path", &path);
        }
        // Routing waits for the body (needs `allow_on_headers_stop_iteration: true`).
        if end_of_stream {
            Action::Continue
        } else {
            Action::Pause
        }
    }

    fn on_http_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        // Read once; what a router would look at (here: only that it is there).
        let body = self.get_http_request_body(0, size).unwrap_or_default();
        // `contract+scan`: validated and its members located, as the contract needs;
        // `contract+load`: each byte loaded once; `contract+classify`: each byte classified
        // once. The result decides the cluster, so none of them is optimised away.
        let read = match self.bytes {
            Bytes::Untouched => true,
            Bytes::Scanned => scan::object(&body).is_some_and(|(_, m)| !m.is_empty()),
            Bytes::Loaded => load_all(&body),
            Bytes::Classified => classify_all(&body),
        };
        let cluster = if body.is_empty() || !read {
            "none"
        } else {
            "mock"
        };
        if self.contract.is_none() {
            self.set_http_request_header("x-ai-proxy-cluster", Some(cluster));
            return Action::Continue;
        }
        let _ = self.now_ms();
        // The request's edits, as one write of the map (as the AI proxy makes them).
        let mut headers = self.get_http_request_headers();
        let edits = [
            ("x-ai-proxy-cluster", Some(cluster)),
            (":authority", Some("llm.internal")),
            ("accept-encoding", None),
            ("api-key", None),
            ("x-api-key", None),
            ("authorization", Some("Bearer sk-bench")),
            ("x-envoy-upstream-rq-timeout-ms", Some("60000")),
        ];
        for (name, value) in edits {
            headers.retain(|(n, _)| n != name);
            if let Some(v) = value {
                headers.push((name.to_string(), v.to_string()));
            }
        }
        // The model replaced: a prefix of the body, and its length.
        let prefix = b"{\"model\":\"gpt-4o-mini\"";
        let old = b"{\"model\":\"client-model\"";
        let len = body.len() + prefix.len() - old.len();
        headers.retain(|(n, _)| n != "content-length");
        headers.push(("content-length".into(), len.to_string()));
        self.set_http_request_headers(
            headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect(),
        );
        self.set_http_request_body(0, old.len(), prefix);
        for (name, value) in [
            ("request_type", "ai_chat"),
            ("request_llm_model", "client-model"),
            ("llm_model", "gpt-4o-mini"),
            ("llm_instance", "a"),
            ("llm_provider", "openai-compatible"),
            ("llm_attempts", "1"),
            ("llm_api", "chat"),
            ("llm_error_code", "-"),
        ] {
            self.state(name, value);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        if self.contract.is_some() {
            let _ = self.now_ms();
            let _ = self.get_http_response_headers();
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        let Some(m) = self.contract.clone() else {
            return Action::Continue;
        };
        let now = self.now_ms();
        let _ = self.get_http_response_body(0, size);
        if end_of_stream {
            for (name, value) in [
                ("llm_time_to_first_token", "1"),
                ("llm_prompt_tokens", "12"),
                ("llm_completion_tokens", "7"),
                ("llm_total_tokens", "19"),
            ] {
                self.state(name, value);
            }
            let _ = hostcalls::increment_metric(m.tokens_in, 12);
            let _ = hostcalls::increment_metric(m.tokens_out, 7);
            let _ = hostcalls::record_metric(m.ttft, 1);
            let _ = hostcalls::record_metric(m.duration, now.saturating_sub(self.started.get()));
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        if let Some(m) = &self.contract {
            let _ = hostcalls::increment_metric(m.requests, 1);
        }
    }
}
