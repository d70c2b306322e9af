//! Fuzz target `sse`: the oracles of `envoy_ai_proxy_fuzz::sse` (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| envoy_ai_proxy_fuzz::sse::check(data));
