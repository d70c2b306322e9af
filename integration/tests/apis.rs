//! Every OpenAI API that clients use, told apart by path, through the real Envoy: the
//! official openai Python SDK on Responses, legacy completions and models, the Vercel AI
//! SDK's default model (Responses), nothing ever sent to the wrong endpoint, and each
//! provider preset's host, path, query and auth.

use std::time::Duration;

use integration::clients::{args, node, python, run};
use integration::windows::clear_of_window_end;
use integration::{Envoy, MockLlm, Reply};
use serde_json::{json, Value};

async fn gateway(config: Value) -> (Envoy, MockLlm) {
    let mock = MockLlm::start().await.unwrap();
    let envoy = Envoy::with_config(&config)
        .cluster("openai", mock.port())
        .start()
        .await
        .unwrap();
    // Quotas are read across several requests: none may straddle the end of an hour.
    clear_of_window_end(3600, Duration::from_secs(120)).await;
    (envoy, mock)
}

/// Tokens charged to the route's limit so far, from the quota header of one more request.
async fn charged(envoy: &Envoy, limit: u64) -> u64 {
    let r = envoy
        .chat(&json!({"messages": [{"role": "user", "content": "count"}]}))
        .await
        .unwrap();
    let left: u64 = r.headers()["x-ai-ratelimit-remaining-openai"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    limit - left
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_python_sdk_responses_completions_and_models_through_the_filter() {
    let (envoy, mock) = gateway(json!({
        "provider": "openai",
        "options": {"model": "gpt-4o-mini"},
        "rate_limiting": {"limit": 1_000_000, "time_window": 3600}
    }))
    .await;
    let told = Reply::default()
        .usage(120, 42)
        .cached(64)
        .reasoning(12)
        .text("Bonjour from the mock");
    mock.set_default(told.clone());
    let checks = [
        "responses",
        "responses_stream",
        "completions",
        "completions_stream",
        "models",
    ];
    let r = run(
        python(),
        "integration/python/openai_client.py",
        args(&envoy.url(""), &checks),
    )
    .await;
    let text = told.plain_text();
    assert_eq!(r["responses"]["text"], text.as_str());
    assert_eq!(r["responses_stream"]["text"], text.as_str());
    assert_eq!(r["responses_stream"]["usage"]["input_tokens"], 120);
    assert_eq!(r["completions"]["text"], text.as_str());
    let with = &r["completions_stream"]["with_usage"];
    assert_eq!(with["usage"]["total_tokens"], 162);
    let without = &r["completions_stream"]["without_usage"];
    assert_eq!(
        without["usage_chunks"], 0,
        "asked by the filter, hidden again"
    );
    // models.list() is the filter's, from the configuration; the mock never sees it.
    assert_eq!(r["models"]["ids"], json!(["gpt-4o-mini"]));
    assert!(mock.requests_to("/v1/models").is_empty());
    // Each API went to its own endpoint.
    assert_eq!(mock.requests_to("/v1/responses").len(), 2);
    assert_eq!(mock.requests_to("/v1/completions").len(), 3);
    assert!(mock.requests_to("/v1/embeddings").is_empty());

    // Tokens: in the access log per request, and charged to the limit (5 answers of 162).
    let log = envoy.access_log(6).await;
    let apis: Vec<&str> = log.iter().filter_map(|l| l["llm_api"].as_str()).collect();
    assert_eq!(
        apis,
        [
            "responses",
            "responses",
            "completions",
            "completions",
            "completions",
            "models"
        ]
    );
    for line in log.iter().filter(|l| l["llm_api"] != "models") {
        assert_eq!(line["llm_total_tokens"], "162", "{line}");
        assert_eq!(line["llm_prompt_tokens"], "120", "{line}");
    }
    assert_eq!(charged(&envoy, 1_000_000).await, 5 * 162);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_vercel_ai_sdk_default_model_works_through_the_filter() {
    let (envoy, mock) = gateway(json!({"provider": "openai"})).await;
    let told = Reply::default()
        .usage(30, 9)
        .text("Hello from the mock, via Responses");
    mock.set_default(told.clone());
    let args = args(&envoy.url(""), &["generateText", "streamText"]);
    let r = run(node(), "integration/node/ai_sdk_client.mjs", args).await;
    for check in ["generateText", "streamText"] {
        assert_eq!(r[check]["text"], told.plain_text().as_str(), "{check}");
        assert_eq!(r[check]["usage"]["inputTokens"], 30, "{check}");
        assert_eq!(r[check]["usage"]["outputTokens"], 9, "{check}");
    }
    assert_eq!(mock.requests_to("/v1/responses").len(), 2);
    assert!(mock.requests_to("/v1/embeddings").is_empty());
    let log = envoy.access_log(2).await;
    assert!(log.iter().all(|l| l["llm_total_tokens"] == "39"), "{log:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_input_body_never_reaches_an_embeddings_endpoint_by_mistake() {
    let (envoy, mock) = gateway(json!({"provider": "openai"})).await;
    let body = json!({"model": "m", "input": "hello"});
    for (path, status, code) in [
        ("/v1/responses", 200, None),
        ("/v1/moderations", 404, Some("unsupported_api")),
        ("/v1/audio/speech", 404, Some("unsupported_api")),
        ("/v1/images/generations", 404, Some("unsupported_api")),
    ] {
        let resp = envoy.post_json(path, &body).await.unwrap();
        assert_eq!(resp.status(), status, "{path}");
        let v: Value = resp.json().await.unwrap();
        if let Some(code) = code {
            assert_eq!(v["error"]["code"], code, "{path}");
            assert!(v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("not served"));
        }
    }
    assert!(mock.requests_to("/v1/embeddings").is_empty());
    assert_eq!(mock.count(), 1, "only the Responses request went upstream");
    assert_eq!(mock.last().unwrap().path, "/v1/responses");
    // GET elsewhere than models: 405, naming the method.
    let r = envoy
        .client()
        .get(envoy.url("/v1/chat/completions"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
}

/// One row per preset: the configuration, then what the provider must see for chat and for
/// embeddings (`None`: the preset has no embeddings API, and the client gets a clear 400).
struct Preset {
    config: Value,
    host: &'static str,
    chat: &'static str,
    embeddings: Option<&'static str>,
    query: Option<&'static str>,
    auth: (&'static str, &'static str),
}

fn presets() -> Vec<Preset> {
    let bearer = ("authorization", "Bearer k");
    let key = json!({"header": {"Authorization": "Bearer k"}});
    let simple = |name: &str| json!({"provider": name, "auth": key.clone()});
    vec![
        Preset {
            config: simple("openai"),
            host: "api.openai.com",
            chat: "/v1/chat/completions",
            embeddings: Some("/v1/embeddings"),
            query: None,
            auth: bearer,
        },
        Preset {
            config: simple("deepseek"),
            host: "api.deepseek.com",
            chat: "/chat/completions",
            embeddings: None,
            query: None,
            auth: bearer,
        },
        Preset {
            config: json!({"provider": "azure-openai",
                "auth": {"header": {"api-key": "k"}},
                "override": {"endpoint": "https://r.openai.azure.com/openai/deployments/d/chat/completions?api-version=2024-10-21"}}),
            host: "r.openai.azure.com",
            chat: "/openai/deployments/d/chat/completions",
            embeddings: Some("/openai/deployments/d/embeddings"),
            query: Some("api-version=2024-10-21"),
            auth: ("api-key", "k"),
        },
        Preset {
            config: simple("gemini"),
            host: "generativelanguage.googleapis.com",
            chat: "/v1beta/openai/chat/completions",
            embeddings: Some("/v1beta/openai/embeddings"),
            query: None,
            auth: bearer,
        },
        Preset {
            config: simple("openrouter"),
            host: "openrouter.ai",
            chat: "/api/v1/chat/completions",
            embeddings: None,
            query: None,
            auth: bearer,
        },
        Preset {
            config: simple("aimlapi"),
            host: "api.aimlapi.com",
            chat: "/v1/chat/completions",
            embeddings: Some("/v1/embeddings"),
            query: None,
            auth: bearer,
        },
        Preset {
            config: simple("mistral"),
            host: "api.mistral.ai",
            chat: "/v1/chat/completions",
            embeddings: Some("/v1/embeddings"),
            query: None,
            auth: bearer,
        },
        Preset {
            config: simple("groq"),
            host: "api.groq.com",
            chat: "/openai/v1/chat/completions",
            embeddings: None,
            query: None,
            auth: bearer,
        },
        Preset {
            config: simple("together"),
            host: "api.together.xyz",
            chat: "/v1/chat/completions",
            embeddings: Some("/v1/embeddings"),
            query: None,
            auth: bearer,
        },
        Preset {
            config: simple("fireworks"),
            host: "api.fireworks.ai",
            chat: "/inference/v1/chat/completions",
            embeddings: Some("/inference/v1/embeddings"),
            query: None,
            auth: bearer,
        },
        Preset {
            config: json!({"provider": "ollama",
                "override": {"endpoint": "http://ollama.internal:11434"}}),
            host: "ollama.internal:11434",
            chat: "/v1/chat/completions",
            embeddings: Some("/v1/embeddings"),
            query: None,
            auth: ("x-no-auth", ""),
        },
        Preset {
            config: json!({"provider": "vllm", "auth": {"query": {"key": "k"}},
                "override": {"endpoint": "http://vllm.internal:8000/v1/chat/completions"}}),
            host: "vllm.internal:8000",
            chat: "/v1/chat/completions",
            embeddings: Some("/v1/embeddings"),
            query: Some("key=k"),
            auth: ("x-no-auth", ""),
        },
        // Chat is translated to Messages.
        Preset {
            config: json!({"provider": "anthropic", "auth": {"header": {"x-api-key": "k"}}}),
            host: "api.anthropic.com",
            chat: "/v1/messages",
            embeddings: None,
            query: None,
            auth: ("x-api-key", "k"),
        },
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn every_preset_reaches_its_host_path_query_and_auth() {
    for p in presets() {
        let mut config = p.config.clone();
        config["cluster"] = "openai".into();
        let name = config["provider"].as_str().unwrap().to_string();
        let (envoy, mock) = gateway(config).await;
        let chat = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        assert_eq!(envoy.chat(&chat).await.unwrap().status(), 200, "{name}");
        let emb = envoy
            .post_json("/v1/embeddings", &json!({"model": "m", "input": "hi"}))
            .await
            .unwrap();
        match p.embeddings {
            Some(_) => assert_eq!(emb.status(), 200, "{name}"),
            None => {
                assert_eq!(emb.status(), 400, "{name}");
                let v: Value = emb.json().await.unwrap();
                assert_eq!(v["error"]["code"], "unsupported_request_kind", "{name}");
            }
        }
        let seen = mock.requests();
        let wanted = std::iter::once(p.chat).chain(p.embeddings);
        assert_eq!(seen.len(), wanted.clone().count(), "{name}");
        for (req, path) in seen.iter().zip(wanted) {
            assert_eq!(req.path, path, "{name}");
            assert_eq!(req.query.as_deref(), p.query, "{name}");
            assert_eq!(req.header("host"), Some(p.host), "{name}");
            let (h, v) = p.auth;
            if !v.is_empty() {
                assert_eq!(req.header(h), Some(v), "{name}");
            }
        }
    }
}
