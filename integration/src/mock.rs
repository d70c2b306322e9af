//! A mock OpenAI-compatible LLM upstream: chat completions (plain and SSE) and embeddings.
//! It records every request it gets and answers as each test steers it: a queue of scripted
//! replies, a default reply, or per-request `x-mock-*` headers.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// How many requests the mock keeps for inspection (the newest).
const MAX_RECORDED: usize = 10_000;

/// One request as the mock received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path without the query.
    pub path: String,
    pub query: Option<String>,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// What the body of a reply is.
#[derive(Debug, Clone)]
pub enum Body {
    /// An OpenAI-shaped answer for what was asked: chat (plain or SSE when the request says
    /// `stream: true`) or embeddings, by path and body.
    Auto,
    Json(Value),
    Raw {
        content_type: String,
        bytes: Bytes,
    },
    /// Raw byte chunks written one by one with `interval` between them (for SSE framing
    /// tests: split anywhere).
    Chunks {
        content_type: String,
        chunks: Vec<Bytes>,
        interval: Duration,
    },
}

/// One answer. `Reply::default()` is a 200 with an automatic body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Wait before the response headers.
    pub delay: Duration,
    pub body: Body,
    /// Usage numbers for automatic bodies.
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Automatic SSE: content events, and the pause between events.
    pub events: usize,
    pub interval: Duration,
    /// Close the connection without answering.
    pub drop_connection: bool,
}

impl Default for Reply {
    fn default() -> Self {
        Reply {
            status: 200,
            headers: Vec::new(),
            delay: Duration::ZERO,
            body: Body::Auto,
            prompt_tokens: 11,
            completion_tokens: 7,
            events: 3,
            interval: Duration::ZERO,
            drop_connection: false,
        }
    }
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        let body = if status >= 400 {
            Body::Json(json!({"error": {"message": format!("mock error {status}"),
                                         "type": "mock_error", "code": status}}))
        } else {
            Body::Auto
        };
        Reply {
            status,
            body,
            ..Reply::default()
        }
    }

    pub fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            body: Body::Json(body),
            ..Reply::default()
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn delay(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }

    pub fn usage(mut self, prompt: u64, completion: u64) -> Reply {
        self.prompt_tokens = prompt;
        self.completion_tokens = completion;
        self
    }

    pub fn sse(mut self, events: usize, interval: Duration) -> Reply {
        self.events = events;
        self.interval = interval;
        self
    }

    pub fn dropped() -> Reply {
        Reply {
            drop_connection: true,
            ..Reply::default()
        }
    }
}

#[derive(Default)]
struct State {
    /// When each paced body chunk was handed to the connection.
    sent: Vec<std::time::Instant>,
    requests: VecDeque<Recorded>,
    script: VecDeque<Reply>,
    default: Reply,
    /// Replies for one path (health probe paths, say), before the script and default.
    by_path: std::collections::HashMap<String, Reply>,
}

/// A running mock. Dropping it does not stop the server task; it lives as long as the
/// test's runtime.
#[derive(Clone)]
pub struct MockLlm {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl MockLlm {
    /// Starts on a free port of 127.0.0.1 in the current tokio runtime.
    pub async fn start() -> anyhow::Result<MockLlm> {
        Self::start_on("127.0.0.1:0".parse()?).await
    }

    pub async fn start_on(addr: SocketAddr) -> anyhow::Result<MockLlm> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let mock = MockLlm { addr, state };
        let server = mock.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                // Like real providers: no Nagle delay on small SSE writes.
                let _ = stream.set_nodelay(true);
                let m = server.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let m = m.clone();
                        async move { m.handle(req).await }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(mock)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Queues a reply for the next request (used once, in order).
    pub fn push(&self, reply: Reply) {
        self.lock().script.push_back(reply);
    }

    /// The reply for every request to `path` (it takes precedence over the queue).
    pub fn set_path_reply(&self, path: &str, reply: Reply) {
        self.lock().by_path.insert(path.to_string(), reply);
    }

    /// The requests to `path` so far.
    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// The reply for every request when the queue is empty.
    pub fn set_default(&self, reply: Reply) {
        self.lock().default = reply;
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.iter().cloned().collect()
    }

    pub fn count(&self) -> usize {
        self.lock().requests.len()
    }

    pub fn last(&self) -> Option<Recorded> {
        self.lock().requests.back().cloned()
    }

    /// When each paced (streamed) body chunk was written, in order.
    pub fn sent_times(&self) -> Vec<std::time::Instant> {
        self.lock().sent.clone()
    }

    pub fn clear(&self) {
        self.lock().requests.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn handle(
        &self,
        req: Request<Incoming>,
    ) -> Result<Response<BoxBody<Bytes, Infallible>>, std::io::Error> {
        let (parts, body) = req.into_parts();
        let body = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return Err(std::io::Error::other(e)),
        };
        let recorded = Recorded {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            query: parts.uri.query().map(str::to_string),
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body,
        };
        let reply = {
            let mut st = self.lock();
            // Bounded, so that a long-running mock (demo, benchmarks) keeps its memory flat.
            if st.requests.len() >= MAX_RECORDED {
                st.requests.pop_front();
            }
            st.requests.push_back(recorded.clone());
            match st.by_path.get(&recorded.path) {
                Some(r) => r.clone(),
                None => st.script.pop_front().unwrap_or_else(|| st.default.clone()),
            }
        };
        let reply = steer_from_headers(reply, &recorded);

        if !reply.delay.is_zero() {
            tokio::time::sleep(reply.delay).await;
        }
        if reply.drop_connection {
            return Err(std::io::Error::other("mock: dropping the connection"));
        }
        Ok(respond(&reply, &recorded, self.state.clone()))
    }
}

/// `x-mock-status`, `x-mock-delay-ms`, `x-mock-events`, `x-mock-interval-ms` on the request
/// override the scripted reply (handy from curl).
fn steer_from_headers(mut reply: Reply, req: &Recorded) -> Reply {
    let num = |name| req.header(name).and_then(|v| v.parse::<u64>().ok());
    if let Some(s) = num("x-mock-status").and_then(|s| u16::try_from(s).ok()) {
        reply = Reply {
            delay: reply.delay,
            ..Reply::status(s)
        };
    }
    if let Some(ms) = num("x-mock-delay-ms") {
        reply.delay = Duration::from_millis(ms);
    }
    if let Some(n) = num("x-mock-events") {
        reply.events = usize::try_from(n).unwrap_or(3);
    }
    if let Some(ms) = num("x-mock-interval-ms") {
        reply.interval = Duration::from_millis(ms);
    }
    reply
}

fn respond(
    reply: &Reply,
    req: &Recorded,
    state: Arc<Mutex<State>>,
) -> Response<BoxBody<Bytes, Infallible>> {
    let mut builder = Response::builder().status(reply.status);
    let body: BoxBody<Bytes, Infallible> = match &reply.body {
        Body::Json(v) => {
            builder = builder.header("content-type", "application/json");
            Full::new(Bytes::from(v.to_string())).boxed()
        }
        Body::Raw {
            content_type,
            bytes,
        } => {
            builder = builder.header("content-type", content_type.as_str());
            Full::new(bytes.clone()).boxed()
        }
        Body::Chunks {
            content_type,
            chunks,
            interval,
        } => {
            builder = builder.header("content-type", content_type.as_str());
            paced(chunks.clone(), *interval, state)
        }
        Body::Auto => {
            let asked = req.json();
            let model = asked["model"].as_str().unwrap_or("mock-model").to_string();
            if req.path.ends_with("/embeddings") {
                builder = builder.header("content-type", "application/json");
                Full::new(Bytes::from(embeddings(&asked, &model, reply).to_string())).boxed()
            } else if asked["stream"] == json!(true) {
                builder = builder
                    .header("content-type", "text/event-stream")
                    .header("cache-control", "no-cache");
                let include_usage = asked["stream_options"]["include_usage"] == json!(true);
                paced(
                    sse_events(&model, reply, include_usage),
                    reply.interval,
                    state,
                )
            } else {
                builder = builder.header("content-type", "application/json");
                Full::new(Bytes::from(chat(&model, reply).to_string())).boxed()
            }
        }
    };
    for (n, v) in &reply.headers {
        builder = builder.header(n.as_str(), v.as_str());
    }
    builder
        .body(body)
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

fn paced(
    chunks: Vec<Bytes>,
    interval: Duration,
    state: Arc<Mutex<State>>,
) -> BoxBody<Bytes, Infallible> {
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
    tokio::spawn(async move {
        for (i, chunk) in chunks.into_iter().enumerate() {
            if i > 0 && !interval.is_zero() {
                tokio::time::sleep(interval).await;
            }
            if let Ok(mut st) = state.lock() {
                st.sent.push(std::time::Instant::now());
            }
            if tx.send(Ok(Frame::data(chunk))).await.is_err() {
                return;
            }
        }
    });
    let stream = futures_from_receiver(rx);
    BodyExt::boxed(StreamBody::new(stream))
}

/// `mpsc::Receiver` as a `Stream` without pulling in tokio-stream.
fn futures_from_receiver<T>(rx: mpsc::Receiver<T>) -> ReceiverStream<T> {
    ReceiverStream(rx)
}

pub struct ReceiverStream<T>(mpsc::Receiver<T>);

impl<T> futures_core::Stream for ReceiverStream<T> {
    type Item = T;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

fn usage(reply: &Reply) -> Value {
    json!({"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
           "total_tokens": reply.prompt_tokens + reply.completion_tokens})
}

pub fn chat(model: &str, reply: &Reply) -> Value {
    json!({
        "id": "chatcmpl-mock", "object": "chat.completion", "created": 1_700_000_000, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the mock."},
                     "finish_reason": "stop"}],
        "usage": usage(reply),
    })
}

fn embeddings(asked: &Value, model: &str, reply: &Reply) -> Value {
    let inputs = match &asked["input"] {
        Value::Array(a) => a.len().max(1),
        _ => 1,
    };
    let data: Vec<Value> = (0..inputs)
        .map(|i| json!({"object": "embedding", "index": i, "embedding": [0.0023, -0.0091, 0.0154]}))
        .collect();
    json!({"object": "list", "data": data, "model": model,
           "usage": {"prompt_tokens": reply.prompt_tokens, "total_tokens": reply.prompt_tokens}})
}

/// An OpenAI-style stream: a role chunk, `events` content chunks, a finish chunk, the
/// usage-only chunk when asked for, then `[DONE]`. One SSE event per element.
pub fn sse_events(model: &str, reply: &Reply, include_usage: bool) -> Vec<Bytes> {
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000,
               "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    for i in 0..reply.events {
        events.push(chunk(json!({"content": format!("tok{i} ")}), Value::Null));
    }
    events.push(chunk(json!({}), json!("stop")));
    if include_usage {
        events.push(
            json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk",
                           "created": 1_700_000_000, "model": model, "choices": [],
                           "usage": usage(reply)}),
        );
    }
    let mut out: Vec<Bytes> = events
        .into_iter()
        .map(|e| Bytes::from(format!("data: {e}\n\n")))
        .collect();
    out.push(Bytes::from_static(b"data: [DONE]\n\n"));
    out
}
