//! The real clients against the bare mock (no Envoy): the official openai Python SDK on the
//! Responses, legacy completions, models and chat tool-call APIs, the official anthropic
//! Python SDK on Messages, and the Vercel AI SDK (whose default model speaks Responses).
//! Each check's text, tool calls and token usage must come back as the mock was told to send
//! them: proof that the mock speaks each protocol well enough for the SDKs people use, before
//! the same scripts are pointed at Envoy.

use integration::clients::{args, node, python, run};
use integration::{MockLlm, Reply};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread")]
async fn openai_python_sdk_reads_responses_completions_models_and_tool_calls() {
    let mock = MockLlm::start().await.unwrap();
    let args_json = json!({"city": "Paris"});
    let told = Reply::tool_call("get_weather", args_json.clone())
        .usage(120, 42)
        .cached(64)
        .reasoning(12)
        .text("Bonjour from the mock")
        .models(&["gpt-4o-mini", "text-embedding-3-small"]);
    mock.set_default(told.clone());
    let base = format!("http://{}", mock.addr);
    let checks = [
        "responses",
        "responses_stream",
        "completions",
        "completions_stream",
        "models",
        "chat_tools",
    ];
    let r = run(
        python(),
        "integration/python/openai_client.py",
        args(&base, &checks),
    )
    .await;
    let text = told.plain_text();
    let (prompt, completion) = (told.prompt_tokens, told.completion_tokens);

    // Responses, plain and streamed: text, and usage with both details.
    let responses_usage = |u: &Value| {
        assert_eq!(u["input_tokens"], prompt, "{u}");
        assert_eq!(u["output_tokens"], completion, "{u}");
        assert_eq!(u["total_tokens"], prompt + completion, "{u}");
        assert_eq!(
            u["input_tokens_details"]["cached_tokens"],
            told.cached_tokens
        );
        assert_eq!(
            u["output_tokens_details"]["reasoning_tokens"],
            told.reasoning_tokens
        );
    };
    assert_eq!(r["responses"]["text"], text.as_str());
    assert_eq!(r["responses"]["status"], "completed");
    responses_usage(&r["responses"]["usage"]);
    let stream = &r["responses_stream"];
    assert_eq!(stream["text"], text.as_str(), "deltas add up to the text");
    assert_eq!(stream["final_text"], text.as_str());
    responses_usage(&stream["usage"]);
    let types: Vec<&str> = stream["types"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(types.first(), Some(&"response.created"));
    assert_eq!(types.last(), Some(&"response.completed"));
    assert_eq!(
        types
            .iter()
            .filter(|t| **t == "response.output_text.delta")
            .count(),
        told.events
    );

    // Legacy completions: text and usage; the usage chunk only with include_usage.
    let completions_usage = |u: &Value| {
        assert_eq!(u["prompt_tokens"], prompt, "{u}");
        assert_eq!(u["completion_tokens"], completion, "{u}");
        assert_eq!(u["total_tokens"], prompt + completion, "{u}");
    };
    assert_eq!(r["completions"]["object"], "text_completion");
    assert_eq!(r["completions"]["text"], text.as_str());
    completions_usage(&r["completions"]["usage"]);
    let without = &r["completions_stream"]["without_usage"];
    let with = &r["completions_stream"]["with_usage"];
    for s in [without, with] {
        assert_eq!(s["text"], text.as_str());
        assert_eq!(s["finish_reason"], "stop");
    }
    assert_eq!(without["usage_chunks"], 0);
    assert_eq!(without["usage"], Value::Null);
    assert_eq!(with["usage_chunks"], 1);
    completions_usage(&with["usage"]);

    // models.list().
    assert_eq!(r["models"]["ids"], json!(told.models));

    // Chat with a tool: one call, arguments as told, plain and streamed (with usage).
    for mode in ["plain", "stream"] {
        let c = &r["chat_tools"][mode];
        assert_eq!(c["finish_reason"], "tool_calls", "{mode}");
        assert_eq!(c["tool_calls"][0]["name"], "get_weather", "{mode}");
        assert_eq!(c["tool_calls"][0]["arguments"], args_json, "{mode}");
        assert_eq!(c["tool_calls"].as_array().map(Vec::len), Some(1));
        completions_usage(&c["usage"]);
        assert_eq!(
            c["usage"]["prompt_tokens_details"]["cached_tokens"],
            told.cached_tokens
        );
    }

    // What the SDK sent: each API at its own path, models with a GET.
    let paths: Vec<(String, String)> = mock
        .requests()
        .iter()
        .map(|q| (q.method.clone(), q.path.clone()))
        .collect();
    for want in [
        ("POST", "/v1/responses"),
        ("POST", "/v1/completions"),
        ("GET", "/v1/models"),
        ("POST", "/v1/chat/completions"),
    ] {
        assert!(
            paths.iter().any(|(m, p)| m == want.0 && p == want.1),
            "{want:?} in {paths:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_python_sdk_reads_messages_streams_and_tool_use() {
    let mock = MockLlm::start().await.unwrap();
    let input = json!({"location": "San Francisco, CA"});
    let told = Reply::tool_call("get_weather", input.clone())
        .usage(250, 42)
        .cached(100)
        .cache_write(50)
        .text("Hello from the Claude mock");
    mock.set_default(told.clone());
    let base = format!("http://{}", mock.addr);
    let r = run(
        python(),
        "integration/python/anthropic_client.py",
        args(&base, &["messages", "stream", "tools"]),
    )
    .await;
    let usage_as_told = |u: &Value| {
        assert_eq!(u["input_tokens"], told.uncached_prompt_tokens(), "{u}");
        assert_eq!(u["cache_read_input_tokens"], told.cached_tokens, "{u}");
        assert_eq!(
            u["cache_creation_input_tokens"], told.cache_write_tokens,
            "{u}"
        );
        assert_eq!(u["output_tokens"], told.completion_tokens, "{u}");
        let prompt: u64 = [
            "input_tokens",
            "cache_read_input_tokens",
            "cache_creation_input_tokens",
        ]
        .iter()
        .filter_map(|k| u[*k].as_u64())
        .sum();
        assert_eq!(prompt, told.prompt_tokens, "prompt = input + cache");
    };
    let text = told.plain_text();
    let m = &r["messages"];
    assert_eq!(m["text"], text.as_str());
    assert_eq!(m["stop_reason"], "end_turn");
    let sent = mock.requests_to("/v1/messages");
    assert_eq!(m["model"], sent[0].json()["model"], "the model asked for");
    usage_as_told(&m["usage"]);

    let s = &r["stream"];
    assert_eq!(s["text"], text.as_str(), "the text_stream helper");
    assert_eq!(s["final_text"], text.as_str());
    assert_eq!(s["pieces"], told.events);
    assert_eq!(s["stop_reason"], "end_turn");
    // Output tokens of message_delta are cumulative: the SDK keeps the total.
    usage_as_told(&s["usage"]);

    for mode in ["plain", "stream"] {
        let t = &r["tools"][mode];
        assert_eq!(t["stop_reason"], "tool_use", "{mode}");
        assert_eq!(t["tool_use"][0]["name"], "get_weather", "{mode}");
        assert_eq!(t["tool_use"][0]["input"], input, "{mode}");
        usage_as_told(&t["usage"]);
    }

    // What the SDK sends: its version header and its key (see the report in the output).
    assert_eq!(sent.len(), 4);
    for q in &sent {
        assert!(q.header("anthropic-version").is_some(), "{:?}", q.headers);
        eprintln!(
            "anthropic SDK sent anthropic-version: {:?}, x-api-key: {:?}, authorization: {:?}",
            q.header("anthropic-version"),
            q.header("x-api-key"),
            q.header("authorization")
        );
    }
    assert_eq!(sent[1].json()["stream"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_python_sdk_raises_its_error_classes() {
    let mock = MockLlm::start().await.unwrap();
    mock.push(Reply::anthropic_error(429, "rate_limit_error"));
    // A plain status on a /messages path answers in Anthropic's shape too.
    mock.push(Reply::status(529));
    let base = format!("http://{}", mock.addr);
    let r = run(
        python(),
        "integration/python/anthropic_client.py",
        args(&base, &["error"]),
    )
    .await;
    let e = &r["error"];
    assert_eq!(e[0]["status"], 429);
    assert_eq!(e[0]["class"], "RateLimitError");
    assert_eq!(e[0]["type"], "rate_limit_error");
    assert_eq!(e[0]["rate_limit"], true);
    assert_eq!(e[1]["status"], 529);
    assert_eq!(e[1]["class"], "OverloadedError");
    assert_eq!(e[1]["type"], "overloaded_error");
    assert_eq!(e[1]["overloaded"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn vercel_ai_sdk_default_model_reads_responses() {
    let mock = MockLlm::start().await.unwrap();
    let told = Reply::default()
        .usage(33, 21)
        .cached(8)
        .reasoning(5)
        .text("Hello from the AI SDK mock")
        .sse(4, std::time::Duration::ZERO);
    mock.set_default(told.clone());
    let base = format!("http://{}", mock.addr);
    let r = run(
        node(),
        "integration/node/ai_sdk_client.mjs",
        args(&base, &["generateText", "streamText"]),
    )
    .await;
    let text = told.plain_text();
    for check in ["generateText", "streamText"] {
        let c = &r[check];
        assert_eq!(c["text"], text.as_str(), "{check}");
        assert_eq!(c["finishReason"], "stop", "{check}");
        let u = &c["usage"];
        assert_eq!(u["inputTokens"], told.prompt_tokens, "{check}: {u}");
        assert_eq!(u["outputTokens"], told.completion_tokens, "{check}: {u}");
        assert_eq!(
            u["totalTokens"],
            told.prompt_tokens + told.completion_tokens,
            "{check}: {u}"
        );
        assert_eq!(u["cachedInputTokens"], told.cached_tokens, "{check}: {u}");
        assert_eq!(u["reasoningTokens"], told.reasoning_tokens, "{check}: {u}");
    }
    assert_eq!(r["streamText"]["pieces"], told.events);

    // The AI SDK's default model speaks Responses: POST /v1/responses with `input`.
    let sent = mock.requests_to("/v1/responses");
    assert_eq!(sent.len(), 2, "{:?}", mock.requests());
    assert!(sent.iter().all(|q| q.method == "POST"));
    assert!(sent[0].json()["input"].is_array(), "{}", sent[0].json());
    assert_eq!(sent[1].json()["stream"], true);
    eprintln!("AI SDK Responses body: {}", sent[1].json());
}
