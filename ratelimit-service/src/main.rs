//! `ai-ratelimit-service`: parses the command line and runs the service (see `server.rs`).

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let args = match ai_ratelimit_service::cli::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    match ai_ratelimit_service::server::run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("ai-ratelimit-service: {msg}");
            ExitCode::FAILURE
        }
    }
}
