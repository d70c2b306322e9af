//! The mock LLM provider as a standalone server (for `scripts/run.sh` and benchmarks):
//! `mock-llm [PORT]` (default 8081). Answers by path, plain and SSE: OpenAI chat
//! completions, embeddings, Responses, legacy completions and the model list, and Anthropic
//! Messages; `x-mock-status`, `x-mock-delay-ms`, `x-mock-events`, `x-mock-interval-ms`
//! request headers steer each answer.

use integration::MockLlm;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port: u16 = match std::env::args().nth(1) {
        Some(p) => p.parse()?,
        None => 8081,
    };
    let mock = MockLlm::start_on(([127, 0, 0, 1], port).into()).await?;
    eprintln!("mock-llm listening on http://{}", mock.addr);
    tokio::signal::ctrl_c().await?;
    Ok(())
}
