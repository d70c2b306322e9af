//! Fuzz target `config`: the oracles of `envoy_ai_proxy_fuzz::config` (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| envoy_ai_proxy_fuzz::config::check(data));
