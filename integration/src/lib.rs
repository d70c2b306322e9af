//! Test support for the real-Envoy integration tests: the Envoy launcher and the mock LLM
//! upstream (and, for the dashboard test, a Prometheus launcher and a Grafana dashboard
//! reader). The tests themselves live in `tests/`.

pub mod apisix;
pub mod bootstrap;
pub mod clients;
pub mod envoy;
pub mod examples;
pub mod grafana;
pub mod mock;
pub mod prometheus;
pub mod rls;
pub mod scenarios;
pub mod services;
pub mod windows;

pub use envoy::{Envoy, EnvoyBuilder};
pub use mock::{MockLlm, Recorded, Reply};
