//! The vocabulary between the core and the host layer: what each proxy-wasm callback hands
//! the core (`Input`), what the core may read on demand (`Host`), and what it asks the host
//! to do (`Effect`), as plain values. The host applies effects in order and decides nothing.

use crate::headers::Headers;
use crate::metrics::Kind;
use crate::store::Store;

/// The longest filter state value, in bytes (a client-chosen model name could be any size).
pub const MAX_STATE_VALUE: usize = 256;

/// A header map and its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Map {
    Request,
    Response,
}

/// What the core reads from Envoy, when it needs it.
pub trait Host {
    /// The host's wall clock, in nanoseconds since the epoch.
    fn now_ns(&self) -> u64;
    /// Envoy's shared data.
    fn store(&self) -> &dyn Store;
    /// Every header of a map, names lower-case (one read of the whole map).
    fn headers(&self, map: Map) -> Headers;
    /// The first `size` bytes of the body (the buffered request, or the current response
    /// chunk, or the whole buffered response).
    fn body(&self, map: Map, size: usize) -> Result<Vec<u8>, String>;
    /// The headers and body of the callout answer being delivered.
    fn callout_answer(&self, body_size: usize) -> (Headers, Vec<u8>);
    /// The message of the gRPC answer being delivered.
    fn grpc_answer(&self, size: usize) -> Vec<u8>;
    /// An Envoy attribute (`response.code_details`, `source.address`, `request.id`, ...).
    fn property(&self, path: &[&str]) -> Option<Vec<u8>>;
    /// An environment variable of the VM (`vm_config.environment_variables`).
    fn env(&self, name: &str) -> Option<String>;
}

/// What a proxy-wasm callback hands the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    RequestHeaders {
        end_of_stream: bool,
    },
    RequestBody {
        size: usize,
        end_of_stream: bool,
    },
    /// The body ended with trailers (no `end_of_stream` on the last body callback).
    RequestTrailers,
    ResponseHeaders {
        end_of_stream: bool,
    },
    ResponseBody {
        size: usize,
        end_of_stream: bool,
    },
    /// The answer to an HTTP callout the core dispatched.
    CalloutAnswer {
        token: u32,
        body_size: usize,
    },
    /// The answer to a gRPC callout: its gRPC status (0: OK) and message size.
    GrpcAnswer {
        token: u32,
        status: u32,
        size: usize,
    },
    /// Feedback: what came of a `Dispatch` effect (the callout's token, or why it failed).
    Dispatched {
        purpose: Purpose,
        result: Result<u32, String>,
    },
    /// Feedback: a required effect could not be applied (the request must not go on).
    Failed(String),
    /// The exchange is over (`on_log`): the client got its answer or left.
    Log,
}

/// Why a callout is made; its answer is routed back by token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The next attempt of a request, to this instance.
    Fallback(usize),
    /// An active health probe of this instance.
    Probe(usize),
    /// Asking the quota service whether this instance may take the request.
    Quota(usize),
    /// Charging an answer's usage to the quota service (nobody waits for the answer).
    Settle,
}

/// A gRPC method, when a callout is gRPC (its body is the message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grpc {
    pub service: String,
    pub method: String,
}

/// An HTTP call to an Envoy cluster, outside the route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callout {
    pub purpose: Purpose,
    pub cluster: String,
    /// Request headers (HTTP), or initial metadata (gRPC).
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub timeout_ms: u64,
    pub grpc: Option<Grpc>,
}

/// A reply the filter sends itself instead of forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u32,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    SetHeader(Map, String, String),
    RemoveHeader(Map, String),
    /// Replace the first `size` bytes of the body (the whole request body, or the current
    /// response chunk) with these.
    ReplaceBody {
        map: Map,
        size: usize,
        bytes: Vec<u8>,
    },
    Reply(LocalReply),
    /// Start a callout; the host feeds back `Input::Dispatched`.
    Dispatch(Callout),
    /// Let the paused request go on (from a callout's answer; a callback continues by its
    /// step instead).
    Resume,
    /// A filter state value for access logs (`%FILTER_STATE(wasm.<name>:PLAIN)%`); made
    /// with [`Effect::state`].
    FilterState(&'static str, String),
    Metric {
        kind: Kind,
        name: String,
        value: u64,
    },
    /// Root context only: the tick period.
    TickPeriod(u32),
}

impl Effect {
    /// Whether the request must stop when this effect cannot be applied: a request
    /// half-shaped (say, without its routing header or auth) must never go out.
    pub fn required(&self) -> bool {
        matches!(
            self,
            Effect::Resume
                | Effect::SetHeader(Map::Request, ..)
                | Effect::RemoveHeader(Map::Request, _)
                | Effect::ReplaceBody {
                    map: Map::Request,
                    ..
                }
        )
    }

    /// A filter state value, made safe for any access-log format: control characters
    /// (a newline would forge a log line) are dropped and the length is capped.
    pub fn state(name: &'static str, value: impl AsRef<str> + Into<String>) -> Effect {
        // The usual value (short, printable) is kept as it is (an owned one is not even
        // copied). Control characters are U+0000-U+001F, U+007F and U+0080-U+009F (encoded
        // 0xC2 0x80-0x9F): a value without those bytes has none.
        let v = value.as_ref();
        if v.len() <= MAX_STATE_VALUE && v.bytes().all(|b| b >= 0x20 && b != 0x7f && b != 0xc2) {
            return Effect::FilterState(name, value.into());
        }
        let value = value.as_ref();
        let mut out = String::new();
        for c in value.chars().filter(|c| !c.is_control()) {
            if out.len().saturating_add(c.len_utf8()) > MAX_STATE_VALUE {
                out.push('…');
                break;
            }
            out.push(c);
        }
        Effect::FilterState(name, out)
    }

    pub fn counter(name: String, value: u64) -> Effect {
        Effect::Metric {
            kind: Kind::Counter,
            name,
            value,
        }
    }

    pub fn gauge(name: String, value: u64) -> Effect {
        Effect::Metric {
            kind: Kind::Gauge,
            name,
            value,
        }
    }

    pub fn histogram(name: String, value: u64) -> Effect {
        Effect::Metric {
            kind: Kind::Histogram,
            name,
            value,
        }
    }
}

/// What the callback returns to Envoy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Continue,
    /// Hold the headers, or buffer the body.
    Pause,
}

/// The core's answer to one input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Out {
    pub step: Step,
    pub effects: Vec<Effect>,
}

impl Out {
    pub fn go(effects: Vec<Effect>) -> Out {
        Out {
            step: Step::Continue,
            effects,
        }
    }

    pub fn hold(effects: Vec<Effect>) -> Out {
        Out {
            step: Step::Pause,
            effects,
        }
    }

    /// The same, with `first` applied before its effects.
    pub fn preceded_by(mut self, mut first: Vec<Effect>) -> Out {
        first.append(&mut self.effects);
        self.effects = first;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_state_values_cannot_forge_log_lines_or_grow_without_bound() {
        let forged = Effect::state("llm_model", "x\n200 request_type=ai_chat\r\u{7}");
        assert_eq!(
            forged,
            Effect::FilterState("llm_model", "x200 request_type=ai_chat".into())
        );
        let Effect::FilterState(_, long) = Effect::state("llm_model", "é".repeat(100_000)) else {
            panic!()
        };
        assert!(long.len() <= MAX_STATE_VALUE + '…'.len_utf8());
        assert!(long.ends_with('…'));
    }

    #[test]
    fn the_fast_path_keeps_exactly_what_the_filter_keeps() {
        let slow = |v: &str| {
            let mut out = String::new();
            for c in v.chars().filter(|c| !c.is_control()) {
                if out.len() + c.len_utf8() > MAX_STATE_VALUE {
                    out.push('…');
                    break;
                }
                out.push(c);
            }
            out
        };
        let long = "m".repeat(MAX_STATE_VALUE);
        let longer = "m".repeat(MAX_STATE_VALUE + 1);
        for v in [
            "",
            "gpt-4o",
            "é ü ñ \u{a0}",
            "\u{9f}x",
            "a\u{85}b",
            "\u{7f}",
            "tab\there",
            &long,
            &longer,
            "caf\u{e9}\u{80}",
        ] {
            assert_eq!(
                Effect::state("s", v),
                Effect::FilterState("s", slow(v)),
                "{v:?}"
            );
        }
    }
}
