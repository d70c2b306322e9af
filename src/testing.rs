//! Test support (native tests only): a fake Envoy that answers the core's reads from plain
//! fields and applies its effects to them, so lifecycle tests feed inputs and assert the
//! resulting state (headers sent upstream, replies, filter state, metrics, counters), never
//! the order of host calls.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use crate::effect::{Callout, Effect, Host, Input, LocalReply, Map, Out, Step};
use crate::headers::Headers;

type Pairs = Vec<(String, String)>;
use crate::metrics::Kind;
use crate::store::mem::Mem;
use crate::store::Store;

#[derive(Default)]
pub struct FakeHost {
    pub now_ns: Cell<u64>,
    pub store: Mem,
    pub request_headers: RefCell<Vec<(String, String)>>,
    pub request_body: RefCell<Vec<u8>>,
    pub response_headers: RefCell<Vec<(String, String)>>,
    pub response_body: RefCell<Vec<u8>>,
    pub callout_answer: RefCell<(Pairs, Vec<u8>)>,
    pub grpc_answer: RefCell<Vec<u8>>,
    /// The paused request was resumed.
    pub resumed: Cell<bool>,
    pub properties: RefCell<HashMap<String, Vec<u8>>>,
    pub env: RefCell<HashMap<String, String>>,
    /// What the host did.
    pub replies: RefCell<Vec<LocalReply>>,
    pub callouts: RefCell<Vec<(u32, Callout)>>,
    pub filter_state: RefCell<HashMap<&'static str, String>>,
    pub counters: RefCell<HashMap<String, u64>>,
    pub gauges: RefCell<HashMap<String, u64>>,
    pub histograms: RefCell<HashMap<String, Vec<u64>>>,
    /// Clusters whose callouts Envoy refuses to start.
    pub refuse_cluster: RefCell<Vec<String>>,
    /// Request-side edits of this header fail (as the host refuses them in the wrong phase).
    pub fail_request_edit: RefCell<Option<String>>,
    next_token: Cell<u32>,
}

impl Host for FakeHost {
    fn now_ns(&self) -> u64 {
        self.now_ns.get()
    }
    fn store(&self) -> &dyn Store {
        &self.store
    }
    fn headers(&self, map: Map) -> Headers {
        Headers::from_pairs(&self.map(map).borrow())
    }
    fn body(&self, map: Map, size: usize) -> Result<Vec<u8>, String> {
        let b = match map {
            Map::Request => self.request_body.borrow(),
            Map::Response => self.response_body.borrow(),
        };
        Ok(b.get(..size.min(b.len())).unwrap_or(&[]).to_vec())
    }
    fn callout_answer(&self, _body_size: usize) -> (Headers, Vec<u8>) {
        let (headers, body) = &*self.callout_answer.borrow();
        (Headers::from_pairs(headers), body.clone())
    }
    fn grpc_answer(&self, size: usize) -> Vec<u8> {
        let m = self.grpc_answer.borrow();
        m.get(..size.min(m.len())).unwrap_or(&[]).to_vec()
    }
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.properties.borrow().get(&path.join(".")).cloned()
    }
    fn env(&self, name: &str) -> Option<String> {
        self.env.borrow().get(name).cloned()
    }
}

impl FakeHost {
    pub fn at_ms(ms: u64) -> FakeHost {
        let h = FakeHost::default();
        h.now_ns.set(ms * 1_000_000);
        h
    }

    fn map(&self, map: Map) -> &RefCell<Vec<(String, String)>> {
        match map {
            Map::Request => &self.request_headers,
            Map::Response => &self.response_headers,
        }
    }

    pub fn header(&self, map: Map, name: &str) -> Option<String> {
        self.map(map)
            .borrow()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    pub fn set_request(&self, headers: &[(&str, &str)], body: &[u8]) {
        *self.request_headers.borrow_mut() = pairs(headers);
        *self.request_body.borrow_mut() = body.to_vec();
    }

    pub fn set_response(&self, headers: &[(&str, &str)], body: &[u8]) {
        *self.response_headers.borrow_mut() = pairs(headers);
        *self.response_body.borrow_mut() = body.to_vec();
    }

    pub fn set_callout_answer(&self, headers: &[(&str, &str)], body: &[u8]) {
        *self.callout_answer.borrow_mut() = (pairs(headers), body.to_vec());
    }

    pub fn set_property(&self, path: &str, value: &[u8]) {
        self.properties
            .borrow_mut()
            .insert(path.to_string(), value.to_vec());
    }

    pub fn state(&self, name: &str) -> Option<String> {
        self.filter_state.borrow().get(name).cloned()
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.counters.borrow().get(name).copied().unwrap_or(0)
    }

    /// Applies one effect; returns the feedback input it calls for.
    fn apply(&self, effect: Effect) -> Option<Input> {
        if let (Effect::SetHeader(Map::Request, n, _), Some(bad)) =
            (&effect, self.fail_request_edit.borrow().as_ref())
        {
            if n == bad {
                return Some(Input::Failed("BadArgument".into()));
            }
        }
        match effect {
            Effect::SetHeader(map, n, v) => {
                let mut m = self.map(map).borrow_mut();
                m.retain(|(k, _)| *k != n);
                m.push((n, v));
            }
            Effect::RemoveHeader(map, n) => self.map(map).borrow_mut().retain(|(k, _)| *k != n),
            Effect::ReplaceBody { map, size, bytes } => {
                let mut b = match map {
                    Map::Request => self.request_body.borrow_mut(),
                    Map::Response => self.response_body.borrow_mut(),
                };
                let size = size.min(b.len());
                b.splice(..size, bytes);
            }
            Effect::Reply(r) => self.replies.borrow_mut().push(r),
            Effect::Dispatch(c) => {
                let purpose = c.purpose;
                if self.refuse_cluster.borrow().contains(&c.cluster) {
                    return Some(Input::Dispatched {
                        purpose,
                        result: Err("BadArgument".into()),
                    });
                }
                let token = self.next_token.get() + 1;
                self.next_token.set(token);
                self.callouts.borrow_mut().push((token, c));
                return Some(Input::Dispatched {
                    purpose,
                    result: Ok(token),
                });
            }
            Effect::FilterState(n, v) => {
                self.filter_state.borrow_mut().insert(n, v);
            }
            Effect::Metric { kind, name, value } => match kind {
                Kind::Counter => *self.counters.borrow_mut().entry(name).or_insert(0) += value,
                Kind::Gauge => {
                    self.gauges.borrow_mut().insert(name, value);
                }
                Kind::Histogram => self
                    .histograms
                    .borrow_mut()
                    .entry(name)
                    .or_default()
                    .push(value),
            },
            Effect::TickPeriod(_) => {}
            Effect::Resume => self.resumed.set(true),
        }
        None
    }

    /// Applies an answer's effects in order, feeding back what they call for through
    /// `again` once the batch is applied, as the host layer does: a failed required effect
    /// ends its batch. Returns the last step.
    pub fn run(&self, out: Out, mut again: impl FnMut(Input) -> Out) -> Step {
        let mut step = out.step;
        let mut effects = out.effects;
        let mut queue = std::collections::VecDeque::new();
        loop {
            for e in effects {
                match self.apply(e) {
                    Some(failed @ Input::Failed(_)) => {
                        queue.push_back(failed);
                        break;
                    }
                    Some(input) => queue.push_back(input),
                    None => {}
                }
            }
            let Some(input) = queue.pop_front() else {
                return step;
            };
            let out = again(input);
            step = out.step;
            effects = out.effects;
        }
    }

    /// The last callout's token.
    pub fn last_token(&self) -> u32 {
        self.callouts.borrow().last().map_or(0, |c| c.0)
    }
}

pub fn pairs(headers: &[(&str, &str)]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// A small deterministic generator (xorshift), so failures reproduce; and the byte-level
/// mutation the differential tests apply to their inputs.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }

    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    /// Changes `b` at one place: a byte taken out, or one of `alphabet` put in or over one.
    pub fn mutate(&mut self, b: &mut Vec<u8>, alphabet: &[u8]) {
        let at = self.below(b.len() + 1);
        match self.below(3) {
            0 if at < b.len() => {
                b.remove(at);
            }
            1 => b.insert(at, alphabet[self.below(alphabet.len())]),
            _ if at < b.len() => b[at] = alphabet[self.below(alphabet.len())],
            _ => {}
        }
    }
}
