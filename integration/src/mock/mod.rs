//! A mock LLM provider for the tests: OpenAI chat completions, embeddings, Responses, legacy
//! completions and the model list, and Anthropic Messages, plain and streamed, each in the
//! shape of the API the request's path names. It records every request it gets and answers
//! as each test steers it: a queue of scripted replies, a default reply, replies per path,
//! or per-request `x-mock-*` headers. This file owns the server, the recording and the
//! choice of answer; `reply` what a test can ask for, and one file per API its wire format.

pub mod anthropic;
pub mod openai;
mod reply;
pub mod responses;
pub mod sse;

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

pub use openai::{chat, sse_events};
pub use reply::{Body, Reply, ToolCall};

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

    async fn handle(&self, req: Request<Incoming>) -> Result<Response<MockBody>, std::io::Error> {
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

fn respond(reply: &Reply, req: &Recorded, state: Arc<Mutex<State>>) -> Response<MockBody> {
    let mut builder = Response::builder().status(reply.status);
    let body: MockBody = match &reply.body {
        Body::Json(v) => {
            builder = builder.header("content-type", "application/json");
            full(Bytes::from(v.to_string()))
        }
        Body::Raw {
            content_type,
            bytes,
        } => {
            builder = builder.header("content-type", content_type.as_str());
            full(bytes.clone())
        }
        Body::Chunks {
            content_type,
            chunks,
            interval,
        } => {
            builder = builder.header("content-type", content_type.as_str());
            paced(chunks.clone(), *interval, reply, state)
        }
        Body::Error => {
            builder = builder.header("content-type", "application/json");
            let body = match Api::of(&req.path) {
                Api::Messages => reply::anthropic_error_body(
                    reply::anthropic_error_kind(reply.status),
                    &format!("mock error {}", reply.status),
                ),
                _ => openai::error(reply.status),
            };
            full(Bytes::from(body.to_string()))
        }
        Body::Auto => {
            let asked = req.json();
            let model = asked["model"].as_str().unwrap_or("mock-model").to_string();
            match automatic(reply, &req.path, &asked, &model) {
                Answer::Json(v) => {
                    builder = builder.header("content-type", "application/json");
                    full(Bytes::from(v.to_string()))
                }
                Answer::Sse(events) => {
                    builder = builder
                        .header("content-type", "text/event-stream")
                        .header("cache-control", "no-cache");
                    paced(events, reply.interval, reply, state)
                }
            }
        }
    };
    for (n, v) in &reply.headers {
        builder = builder.header(n.as_str(), v.as_str());
    }
    builder
        .body(body)
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

/// The API a path names (any prefix: `/v1/...`, `/openai/v1/...`).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Api {
    Chat,
    Embeddings,
    Responses,
    Completions,
    Messages,
    Models,
}

impl Api {
    fn of(path: &str) -> Api {
        let path = path.trim_end_matches('/');
        if path.ends_with("/embeddings") {
            Api::Embeddings
        } else if path.ends_with("/responses") {
            Api::Responses
        } else if path.ends_with("/chat/completions") {
            Api::Chat
        } else if path.ends_with("/completions") {
            Api::Completions
        } else if path.ends_with("/messages") {
            Api::Messages
        } else if path.ends_with("/models") {
            Api::Models
        } else {
            // Paths that name no API (`/`, `/anything`): chat, as before.
            Api::Chat
        }
    }
}

/// An automatic body: one JSON document, or SSE events.
enum Answer {
    Json(Value),
    Sse(Vec<Bytes>),
}

/// The automatic answer to `asked` (the request body) on `path`.
fn automatic(reply: &Reply, path: &str, asked: &Value, model: &str) -> Answer {
    let stream = asked["stream"] == json!(true);
    let include_usage = asked["stream_options"]["include_usage"] == json!(true);
    match (Api::of(path), stream) {
        (Api::Embeddings, _) => Answer::Json(openai::embeddings(asked, model, reply)),
        (Api::Models, _) => Answer::Json(openai::models(reply)),
        (Api::Responses, false) => Answer::Json(responses::plain(model, reply, asked)),
        (Api::Responses, true) => Answer::Sse(responses::sse_events(model, reply, asked)),
        (Api::Completions, false) => Answer::Json(openai::completion(model, reply)),
        (Api::Completions, true) => {
            Answer::Sse(openai::completion_sse_events(model, reply, include_usage))
        }
        (Api::Messages, false) => Answer::Json(anthropic::plain(model, reply, asked)),
        (Api::Messages, true) => Answer::Sse(anthropic::sse_events(model, reply, asked)),
        (Api::Chat, false) => Answer::Json(match reply.tool_call_for(asked) {
            Some(call) => openai::chat_tool_call(model, reply, call),
            None => chat(model, reply),
        }),
        (Api::Chat, true) => Answer::Sse(match reply.tool_call_for(asked) {
            Some(call) => openai::tool_call_sse_events(model, reply, call, include_usage),
            None => sse_events(model, reply, include_usage),
        }),
    }
}

/// A response body; an error resets the stream (an upstream that dies mid-answer).
type MockBody = BoxBody<Bytes, std::io::Error>;

fn full(bytes: Bytes) -> MockBody {
    Full::new(bytes)
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// Chunks written one by one, `interval` apart (and `reply.pause` after some); after
/// `reply.abort_after` of them (if set), the stream is reset instead of ended.
fn paced(
    chunks: Vec<Bytes>,
    interval: Duration,
    reply: &Reply,
    state: Arc<Mutex<State>>,
) -> MockBody {
    let (abort_after, pause) = (reply.abort_after, reply.pause);
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
    tokio::spawn(async move {
        for (i, chunk) in chunks.into_iter().enumerate() {
            if abort_after == Some(i) {
                let _ = tx
                    .send(Err(std::io::Error::other("mock: the upstream dies")))
                    .await;
                return;
            }
            if i > 0 && !interval.is_zero() {
                tokio::time::sleep(interval).await;
            }
            if let Some((at, wait)) = pause {
                if at == i {
                    tokio::time::sleep(wait).await;
                }
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

/// A stream of ready items (a request body sent in chunks, without a content-length).
pub fn iter_stream<T: Unpin>(items: Vec<T>) -> IterStream<T> {
    IterStream(items.into_iter())
}

pub struct IterStream<T>(std::vec::IntoIter<T>);

impl<T: Unpin> futures_core::Stream for IterStream<T> {
    type Item = T;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        std::task::Poll::Ready(self.0.next())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_names_the_api() {
        for (path, api) in [
            ("/v1/chat/completions", Api::Chat),
            ("/openai/v1/chat/completions", Api::Chat),
            ("/v1/completions", Api::Completions),
            ("/v1/responses", Api::Responses),
            ("/v1/messages", Api::Messages),
            ("/v1/models", Api::Models),
            ("/v1/embeddings", Api::Embeddings),
            ("/openai/deployments/x/embeddings", Api::Embeddings),
            ("/anything", Api::Chat),
            ("/", Api::Chat),
        ] {
            assert_eq!(Api::of(path), api, "{path}");
        }
    }

    #[test]
    fn errors_take_the_shape_of_the_api() {
        let reply = Reply::status(529);
        assert!(matches!(reply.body, Body::Error));
        let openai = openai::error(429);
        assert_eq!(openai["error"]["code"], 429);
        let kind = reply::anthropic_error_kind(529);
        assert_eq!(kind, "overloaded_error");
        assert_eq!(reply::anthropic_error_kind(429), "rate_limit_error");
        let explicit = Reply::anthropic_error(429, "rate_limit_error");
        match explicit.body {
            Body::Json(v) => {
                assert_eq!(v["type"], "error");
                assert_eq!(v["error"]["type"], "rate_limit_error");
            }
            other => panic!("{other:?}"),
        }
    }
}
