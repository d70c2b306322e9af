//! Kuadrant's `kuadrant.service.ratelimit.v1.RateLimitService`, written by hand (no build-time
//! codegen): the `Reserve`/`Commit` messages of Limitador's newer `kuadrantrls.proto`, the
//! service trait, the tonic server glue that routes the four methods, and a small client.
//!
//! ```proto
//! service RateLimitService {
//!   rpc CheckRateLimit(envoy.service.ratelimit.v3.RateLimitRequest) returns (envoy.service.ratelimit.v3.RateLimitResponse);
//!   rpc Report(envoy.service.ratelimit.v3.RateLimitRequest) returns (envoy.service.ratelimit.v3.RateLimitResponse);
//!   rpc Reserve(ReserveRequest) returns (ReserveResponse);
//!   rpc Commit(CommitRequest) returns (CommitResponse);
//! }
//! message ReserveRequest { string domain = 1; repeated envoy.extensions.common.ratelimit.v3.RateLimitDescriptor descriptors = 2; uint64 amount = 3; google.protobuf.Duration ttl = 4; }
//! message ReserveResponse { envoy.service.ratelimit.v3.RateLimitResponse.Code code = 1; string reservation_id = 2; }
//! message CommitRequest { string domain = 1; repeated envoy.extensions.common.ratelimit.v3.RateLimitDescriptor descriptors = 2; string reservation_id = 3; uint64 actual_amount = 4; }
//! message CommitResponse { bool reservation_released = 1; }
//! ```

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::codegen::http::uri::PathAndQuery;
use tonic::codegen::{http, Body, BoxFuture, Service, StdError};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

use crate::rls::{Duration, RateLimitDescriptor, RateLimitRequest, RateLimitResponse};

pub const SERVICE_NAME: &str = "kuadrant.service.ratelimit.v1.RateLimitService";
pub const CHECK_RATE_LIMIT: &str = "/kuadrant.service.ratelimit.v1.RateLimitService/CheckRateLimit";
pub const REPORT: &str = "/kuadrant.service.ratelimit.v1.RateLimitService/Report";
pub const RESERVE: &str = "/kuadrant.service.ratelimit.v1.RateLimitService/Reserve";
pub const COMMIT: &str = "/kuadrant.service.ratelimit.v1.RateLimitService/Commit";

#[derive(Clone, PartialEq, prost::Message)]
pub struct ReserveRequest {
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(message, repeated, tag = "2")]
    pub descriptors: Vec<RateLimitDescriptor>,
    #[prost(uint64, tag = "3")]
    pub amount: u64,
    #[prost(message, optional, tag = "4")]
    pub ttl: Option<Duration>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ReserveResponse {
    /// `envoy.service.ratelimit.v3.RateLimitResponse.Code` (1 OK, 2 OVER_LIMIT).
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// Only set when `code` is OK; passed back to `Commit`.
    #[prost(string, tag = "2")]
    pub reservation_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CommitRequest {
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(message, repeated, tag = "2")]
    pub descriptors: Vec<RateLimitDescriptor>,
    #[prost(string, tag = "3")]
    pub reservation_id: String,
    #[prost(uint64, tag = "4")]
    pub actual_amount: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CommitResponse {
    #[prost(bool, tag = "1")]
    pub reservation_released: bool,
}

type Answer<T> = Result<Response<T>, Status>;

/// The four methods of Kuadrant's rate limit service.
#[tonic::async_trait]
pub trait KuadrantRls: Send + Sync + 'static {
    async fn check_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Answer<RateLimitResponse>;
    async fn report(&self, request: Request<RateLimitRequest>) -> Answer<RateLimitResponse>;
    async fn reserve(&self, request: Request<ReserveRequest>) -> Answer<ReserveResponse>;
    async fn commit(&self, request: Request<CommitRequest>) -> Answer<CommitResponse>;
}

/// The tonic service that routes Kuadrant's method paths to a [`KuadrantRls`].
pub struct KuadrantRlsServer<T> {
    inner: Arc<T>,
}

impl<T> KuadrantRlsServer<T> {
    pub fn from_arc(inner: Arc<T>) -> Self {
        Self { inner }
    }
}

impl<T> Clone for KuadrantRlsServer<T> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T> tonic::server::NamedService for KuadrantRlsServer<T> {
    const NAME: &'static str = SERVICE_NAME;
}

/// One unary method as a `tonic::server::UnaryService`.
struct Unary<F, Res>(F, PhantomData<fn() -> Res>);

impl<Req, Res, F> tonic::server::UnaryService<Req> for Unary<F, Res>
where
    F: FnMut(Request<Req>) -> BoxFuture<Response<Res>, Status>,
{
    type Response = Res;
    type Future = BoxFuture<Response<Res>, Status>;
    fn call(&mut self, request: Request<Req>) -> Self::Future {
        (self.0)(request)
    }
}

fn unary<Req, Res, B, F>(
    req: http::Request<B>,
    f: F,
) -> BoxFuture<http::Response<tonic::body::Body>, Infallible>
where
    Req: prost::Message + Default + Send + 'static,
    Res: prost::Message + Send + 'static,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
    F: FnMut(Request<Req>) -> BoxFuture<Response<Res>, Status> + Send + 'static,
{
    Box::pin(async move {
        let mut grpc = tonic::server::Grpc::new(ProstCodec::<Res, Req>::default());
        Ok(grpc.unary(Unary(f, PhantomData), req).await)
    })
}

impl<T, B> Service<http::Request<B>> for KuadrantRlsServer<T>
where
    T: KuadrantRls,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let svc = Arc::clone(&self.inner);
        match req.uri().path() {
            CHECK_RATE_LIMIT => unary(req, move |r: Request<RateLimitRequest>| {
                let svc = Arc::clone(&svc);
                Box::pin(async move { svc.check_rate_limit(r).await })
            }),
            REPORT => unary(req, move |r: Request<RateLimitRequest>| {
                let svc = Arc::clone(&svc);
                Box::pin(async move { svc.report(r).await })
            }),
            RESERVE => unary(req, move |r: Request<ReserveRequest>| {
                let svc = Arc::clone(&svc);
                Box::pin(async move { svc.reserve(r).await })
            }),
            COMMIT => unary(req, move |r: Request<CommitRequest>| {
                let svc = Arc::clone(&svc);
                Box::pin(async move { svc.commit(r).await })
            }),
            _ => Box::pin(async move { Ok(Status::unimplemented("no such method").into_http()) }),
        }
    }
}

/// A client for Kuadrant's service (the tests use it; so can anyone poking the service).
#[derive(Clone)]
pub struct KuadrantRlsClient {
    inner: tonic::client::Grpc<Channel>,
}

impl KuadrantRlsClient {
    pub fn new(channel: Channel) -> Self {
        Self {
            inner: tonic::client::Grpc::new(channel),
        }
    }

    async fn call<Req, Res>(&mut self, path: &'static str, req: Request<Req>) -> Answer<Res>
    where
        Req: prost::Message + Send + Sync + 'static,
        Res: prost::Message + Default + Send + Sync + 'static,
    {
        self.inner
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("service not ready: {e}")))?;
        let codec = ProstCodec::<Req, Res>::default();
        self.inner
            .unary(req, PathAndQuery::from_static(path), codec)
            .await
    }

    pub async fn check_rate_limit(
        &mut self,
        req: impl tonic::IntoRequest<RateLimitRequest>,
    ) -> Answer<RateLimitResponse> {
        self.call(CHECK_RATE_LIMIT, req.into_request()).await
    }

    pub async fn report(
        &mut self,
        req: impl tonic::IntoRequest<RateLimitRequest>,
    ) -> Answer<RateLimitResponse> {
        self.call(REPORT, req.into_request()).await
    }

    pub async fn reserve(
        &mut self,
        req: impl tonic::IntoRequest<ReserveRequest>,
    ) -> Answer<ReserveResponse> {
        self.call(RESERVE, req.into_request()).await
    }

    pub async fn commit(
        &mut self,
        req: impl tonic::IntoRequest<CommitRequest>,
    ) -> Answer<CommitResponse> {
        self.call(COMMIT, req.into_request()).await
    }
}
