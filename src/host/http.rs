//! The per-request context: each proxy-wasm callback becomes one input of the exchange, and
//! its answer is applied as it comes (`entry` maps the callbacks to inputs).

use std::rc::Rc;

use super::{drive, Env};
use crate::effect::{Input, Step};
use crate::exchange::{Exchange, Plugin};

pub struct Filter(Exchange, Env);

impl Filter {
    pub fn new(plugin: Option<Rc<Plugin>>) -> Filter {
        Filter(Exchange::new(plugin), Env::default())
    }

    /// One callback of the request (a phase, or a callout's answer): the step to take.
    pub fn on(&mut self, input: Input) -> Step {
        let env = self.1.callback();
        let out = self.0.on(input, env);
        drive(out, env, |i| self.0.on(i, env))
    }
}
