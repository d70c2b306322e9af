//! Start-up: builds the flavor's service from the arguments, binds, prints the readiness
//! line (`listening on HOST:PORT`, the first line on stdout) and serves until SIGINT/SIGTERM.

use std::io::Write;
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

use crate::cli::{Args, Flavor};
use crate::envoy_config::RateLimitConfig;
use crate::envoy_flavor::EnvoyRatelimitService;
use crate::envoy_store::Store;
use crate::kuadrant::KuadrantRlsServer;
use crate::limitador_flavor::{LimitadorService, Limiter};
use crate::rls::RateLimitServiceServer;

async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// Runs the service; returns when it is told to stop, or `Err` when it cannot start.
pub async fn run(args: Args) -> Result<(), String> {
    let router = match args.flavor {
        Flavor::Limitador => {
            let limiter = Limiter::new(args.redis.as_deref()).await?;
            if let Some(path) = &args.limits {
                let n = limiter.load_limits(path).await?;
                eprintln!("ai-ratelimit-service: {n} limits from {}", path.display());
            }
            let svc = Arc::new(LimitadorService::new(limiter, args.draft03_headers));
            Server::builder()
                .add_service(RateLimitServiceServer::from_arc(Arc::clone(&svc)))
                .add_service(KuadrantRlsServer::from_arc(svc))
        }
        Flavor::EnvoyRatelimit => {
            let path = args.limits.as_deref().ok_or("--limits is required")?;
            let config = RateLimitConfig::load(path)?;
            let store = Store::new(args.redis.as_deref()).await?;
            let svc = EnvoyRatelimitService::new(config, store);
            Server::builder().add_service(RateLimitServiceServer::new(svc))
        }
    };
    let listener = TcpListener::bind((args.host.as_str(), args.port))
        .await
        .map_err(|e| format!("cannot listen on {}:{}: {e}", args.host, args.port))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let mut out = std::io::stdout();
    writeln!(out, "listening on {addr}")
        .and_then(|_| out.flush())
        .map_err(|e| e.to_string())?;
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    router
        .serve_with_incoming_shutdown(incoming, shutdown())
        .await
        .map_err(|e| format!("server: {e}"))
}
