//! Fuzz target `usage`: the oracles of `envoy_ai_proxy_fuzz::usage` (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| envoy_ai_proxy_fuzz::usage::check(data));
