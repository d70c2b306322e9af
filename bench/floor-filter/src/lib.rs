//! The body-read floor: a Proxy-Wasm HTTP filter that does only what any filter routing from
//! the request body must do. It holds the headers, lets Envoy buffer the whole body, reads
//! it into the VM once, and sets one request header (the routing header), then lets the
//! request go. The benchmarks report the AI proxy as a ratio to it.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

struct Root;
impl Context for Root {}
impl RootContext for Root {
    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Floor))
    }
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Floor;
impl Context for Floor {}
impl HttpContext for Floor {
    fn on_http_request_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
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
        let cluster = if body.is_empty() { "none" } else { "mock" };
        self.set_http_request_header("x-ai-proxy-cluster", Some(cluster));
        Action::Continue
    }
}
