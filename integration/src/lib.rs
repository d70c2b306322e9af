//! Test support for the real-Envoy integration tests: the Envoy launcher and the mock LLM
//! upstream. The tests themselves live in `tests/`.

pub mod bootstrap;
pub mod demo;
pub mod envoy;
pub mod examples;
pub mod mock;
pub mod rls;

pub use envoy::{Envoy, EnvoyBuilder};
pub use mock::{MockLlm, Recorded, Reply};
