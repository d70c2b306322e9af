//! The per-request context: each proxy-wasm callback becomes one input of the exchange, and
//! its answer is applied as it comes.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use super::{drive, Env};
use crate::effect::Input;
use crate::exchange::{Exchange, Plugin};

pub struct Filter(Exchange, Env);

impl Filter {
    pub fn new(plugin: Option<Rc<Plugin>>) -> Filter {
        Filter(Exchange::new(plugin), Env::default())
    }

    fn on(&mut self, input: Input) -> Action {
        let env = self.1.callback();
        let out = self.0.on(input, env);
        drive(out, env, |i| self.0.on(i, env))
    }
}

impl Context for Filter {
    fn on_http_call_response(&mut self, token: u32, _: usize, body_size: usize, _: usize) {
        self.on(Input::CalloutAnswer { token, body_size });
    }

    fn on_grpc_call_response(&mut self, token: u32, status: u32, size: usize) {
        self.on(Input::GrpcAnswer {
            token,
            status,
            size,
        });
    }
}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        self.on(Input::RequestHeaders { end_of_stream })
    }

    fn on_http_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        self.on(Input::RequestBody {
            size,
            end_of_stream,
        })
    }

    fn on_http_request_trailers(&mut self, _: usize) -> Action {
        self.on(Input::RequestTrailers)
    }

    fn on_http_response_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        self.on(Input::ResponseHeaders { end_of_stream })
    }

    fn on_http_response_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        self.on(Input::ResponseBody {
            size,
            end_of_stream,
        })
    }

    fn on_log(&mut self) {
        self.on(Input::Log);
    }
}
