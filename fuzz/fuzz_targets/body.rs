//! Fuzz target `body`: the oracles of `envoy_ai_proxy_fuzz::body` (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| envoy_ai_proxy_fuzz::body::check(data));
