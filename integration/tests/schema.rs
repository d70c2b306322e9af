//! Owns the schema cross-check: `schema/plugin-config.schema.json` agrees with the real parser.
//!
//! The shipped configurations (the `json` blocks of `docs/config.md`, `examples/*.json`, the
//! plugin configurations of the shipped `envoy/*.yaml` bootstraps) and some edge cases must
//! be accepted by `envoy_ai_proxy::config::parse`; the invalid list must be refused by it.
//! Only then are both lists given to `integration/python/check_schema.py`, which checks them
//! against the schema with Python `jsonschema` (interpreter: `PYTHON`, else the project's
//! virtualenv). With `KEEP_CASES` set, the cases file is left in the temp directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use integration::envoy::repo_root;
use serde_json::{json, Value};

/// A configuration with where it came from, as the text the parser reads.
struct Case {
    name: String,
    text: String,
}

impl Case {
    fn json(name: impl Into<String>, value: &Value) -> Case {
        Case {
            name: name.into(),
            text: value.to_string(),
        }
    }
}

/// Every block of a doc (`docs/config.md`, `docs/providers.md`) that starts with
/// "```json\n", up to its closing fence.
fn doc_configs(root: &Path, doc: &str) -> Vec<Case> {
    let path = root.join(doc);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("```json\n") {
        let line = text[..text.len() - rest.len() + at].lines().count() + 1;
        let body = &rest[at + "```json\n".len()..];
        let end = body
            .find("\n```")
            .unwrap_or_else(|| panic!("{doc}:{line}: unclosed ```json block"));
        out.push(Case {
            name: format!("{doc}:{line}"),
            text: body[..end].to_string(),
        });
        rest = &body[end..];
    }
    out
}

/// Every `*.json` file in `examples/`, read at test time (the directory may grow).
fn example_configs(root: &Path) -> Vec<Case> {
    let dir = root.join("examples");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| Case {
            name: format!(
                "examples/{}",
                p.file_name().unwrap_or_default().to_string_lossy()
            ),
            text: std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
        })
        .collect()
}

/// The JSON under each `value: |` of an `envoy/` bootstrap, its API key placeholders filled.
fn bootstrap_configs(root: &Path, file: &str) -> Vec<Case> {
    let path = root.join("envoy").join(file);
    let yaml = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let lines: Vec<&str> = yaml.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim_end().ends_with("value: |") {
            let outer = indent(line);
            let block: Vec<&str> = lines[i + 1..]
                .iter()
                .copied()
                .take_while(|l| l.trim().is_empty() || indent(l) > outer)
                .collect();
            let inner = block
                .iter()
                .filter(|l| !l.trim().is_empty())
                .map(|l| indent(l))
                .min()
                .unwrap_or(0);
            let text: Vec<&str> = block.iter().map(|l| l.get(inner..).unwrap_or("")).collect();
            let text = text.join("\n");
            assert!(
                !text.contains("{{"),
                "envoy/{file}:{}: a placeholder this test does not fill: {text}",
                i + 1
            );
            out.push(Case {
                name: format!("envoy/{file}:{}", i + 1),
                text,
            });
        }
    }
    out
}

/// Edge cases the parser accepts, so that the schema is not stricter than it.
fn edge_valid() -> Vec<Case> {
    let two = |extra: Value| {
        let mut v = json!({
            "instances": [
                {"name": "a", "provider": "openai"},
                {"name": "b", "provider": "deepseek"}
            ]
        });
        if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
            o.extend(e);
        }
        v
    };
    let cases = [
        (
            "limits at their edges",
            json!({"provider": "openai", "timeout": 1, "max_req_body_size": 1,
                   "logging": {"summaries": true, "payloads": true}, "options": {}}),
        ),
        (
            "openai-compatible, upper-case scheme, port, path and query; auth query",
            json!({"provider": "openai-compatible",
                   "override": {"endpoint": "HTTPS://llm.example.com:8443/v1/chat?x=1&y=@"},
                   "auth": {"query": {"api-version": "2024-06-01"}, "header": {"x-consumer": "v\tw"}}}),
        ),
        (
            "fallback array with every item, statuses at the edges, no retries",
            two(
                json!({"fallback_strategy": ["rate_limiting", "http_429", "http_5xx",
                                             "instance_health_and_rate_limiting"],
                       "fallback_http_statuses": [400, 599], "max_retries": 0,
                       "retry_on_failure_within_ms": 1}),
            ),
        ),
        (
            "empty fallback array",
            two(json!({"fallback_strategy": []})),
        ),
        (
            "fallback string http_5xx",
            two(json!({"fallback_strategy": "http_5xx"})),
        ),
        (
            "chash without hash_on or key",
            two(json!({"balancer": {"algorithm": "chash"}})),
        ),
        (
            "chash on a variable with $",
            two(
                json!({"balancer": {"algorithm": "chash", "hash_on": "vars", "key": "$http_x_user"}}),
            ),
        ),
        (
            "chash on an argument",
            two(json!({"balancer": {"algorithm": "chash", "key": "arg_user"}})),
        ),
        (
            "chash on headers",
            two(json!({"balancer": {"algorithm": "chash", "hash_on": "headers", "key": "X-User"}})),
        ),
        (
            "chash on a cookie",
            two(json!({"balancer": {"algorithm": "chash", "hash_on": "cookie", "key": "session"}})),
        ),
        (
            "chash on the consumer",
            two(json!({"balancer": {"algorithm": "chash", "hash_on": "consumer"}})),
        ),
        (
            "chash on a combination",
            two(
                json!({"balancer": {"algorithm": "chash", "hash_on": "vars_combinations",
                                    "key": "u-$remote_addr-$http_x_user:$uri"}}),
            ),
        ),
        (
            "roundrobin given",
            two(json!({"balancer": {"algorithm": "roundrobin"}})),
        ),
        (
            "every instance field and every check field",
            json!({
                "instances": [{
                    "name": "Local_model.1", "provider": "openai-compatible", "priority": -5,
                    "weight": 4_294_967_295_u64, "cluster": "local_llm",
                    "override": {"endpoint": "http://10.0.0.5:8000"},
                    "auth": {"header": {"Authorization": "Bearer k"}, "query": {"key": "v"}},
                    "options": {"model": "m", "stream": false},
                    "checks": {
                        "active": {"type": "tcp", "timeout": 0.5, "http_path": "/v1/models",
                                   "host": "llm.local", "req_headers": ["X-Probe: 1", " X-Other :two"],
                                   "healthy": {"interval": 0, "successes": 1, "http_statuses": [100, 200]},
                                   "unhealthy": {"interval": 86400, "http_failures": 1, "tcp_failures": 1,
                                                 "timeouts": 1, "http_statuses": [599]}},
                        "passive": {"unhealthy": {"http_failures": 1, "tcp_failures": 1, "timeouts": 1,
                                                  "http_statuses": [500]},
                                    "cooldown": 0.25}
                    }
                }]
            }),
        ),
        (
            "route and consumer limits in single-provider mode",
            json!({"provider": "openai",
                   "rate_limiting": {"limit": 100, "time_window": 60,
                                     "instances": [{"name": "openai", "limit": 10, "time_window": 1}],
                                     "limit_strategy": "completion_tokens", "rejected_code": 200,
                                     "rejected_msg": "slow down", "show_limit_quota_header": false},
                   "consumers": [{"name": "john.doe", "rate_limiting": {"limit": 5, "time_window": 60}},
                                 {"name": "jane", "rate_limiting": {"limit": 5, "time_window": 60,
                                  "rejected_code": 599, "limit_strategy": "prompt_tokens"}}]}),
        ),
        (
            "a rate limit service and reservations, limits only for consumers",
            json!({"provider": "openai",
                   "rate_limiting": {"service": {"cluster": "rls", "domain": "d", "protocol": "envoy",
                                                 "timeout_ms": 10000, "failure_mode_deny": true},
                                     "reserve": "max_tokens", "default_reserve": 1},
                   "consumers": [{"name": "j", "rate_limiting": {"limit": 5, "time_window": 60}}]}),
        ),
        (
            "headers renamed: the consumer header may take the default cluster header's name",
            json!({"provider": "openai", "cluster_header": "x-route",
                   "consumer_header": "X-AI-Proxy-Cluster",
                   "auth": {"header": {"x-consumer": "k"}}}),
        ),
        (
            "cluster header renamed: the default one may carry auth",
            json!({"provider": "openai", "cluster_header": "x-route",
                   "auth": {"header": {"x-ai-proxy-cluster": "k"}}}),
        ),
    ];
    let mut out: Vec<Case> = cases.iter().map(|(n, v)| Case::json(*n, v)).collect();
    // Every preset, with an endpoint where it has no default host.
    for (name, endpoint) in [
        ("azure-openai", Some("https://r.openai.azure.com/openai/deployments/d/chat/completions?api-version=2024-10-21")),
        ("gemini", None),
        ("openrouter", None),
        ("aimlapi", None),
        ("mistral", None),
        ("groq", None),
        ("together", None),
        ("fireworks", None),
        ("ollama", Some("http://127.0.0.1:11434")),
        ("vllm", Some("http://10.0.0.7:8000")),
        ("anthropic", None),
    ] {
        let mut v = json!({"provider": name});
        if let Some(e) = endpoint {
            v["override"] = json!({"endpoint": e});
        }
        out.push(Case::json(format!("preset {name}"), &v));
    }
    out
}

/// Configurations the parser refuses, each for one reason the schema can express too.
fn invalid() -> Vec<Case> {
    let inst = |extra: Value| {
        let mut i = json!({"name": "a", "provider": "openai"});
        if let (Some(o), Value::Object(e)) = (i.as_object_mut(), extra) {
            o.extend(e);
        }
        json!({"instances": [i]})
    };
    let with = |extra: Value| {
        let mut v = json!({"instances": [{"name": "a", "provider": "openai"}]});
        if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
            o.extend(e);
        }
        v
    };
    let active = |a: Value| inst(json!({"checks": {"active": a}}));
    let passive = |p: Value| inst(json!({"checks": {"passive": p}}));
    let limits = |r: Value| json!({"provider": "openai", "rate_limiting": r});
    let cases = [
        ("not an object", json!(["provider", "openai"])),
        ("empty: provider is required", json!({})),
        (
            "unknown top-level field",
            json!({"provider": "openai", "modle": "gpt-4"}),
        ),
        (
            "unknown nested field auth.headers",
            json!({"provider": "openai", "auth": {"headers": {"Authorization": "Bearer k"}}}),
        ),
        ("unknown field in an instance", inst(json!({"weigth": 1}))),
        ("unknown provider", json!({"provider": "bedrock"})),
        (
            "rate limit service without a cluster",
            limits(json!({"limit": 1, "time_window": 1, "service": {}})),
        ),
        (
            "rate limit service with an unknown protocol",
            limits(
                json!({"limit": 1, "time_window": 1, "service": {"cluster": "r", "protocol": "redis"}}),
            ),
        ),
        (
            "a consumer's limits with a service",
            json!({"provider": "openai", "consumers": [{"name": "j", "rate_limiting":
                {"limit": 1, "time_window": 1, "service": {"cluster": "r"}}}]}),
        ),
        (
            "unknown reservation mode",
            limits(json!({"limit": 1, "time_window": 1, "reserve": "all"})),
        ),
        (
            "azure-openai without endpoint",
            json!({"provider": "azure-openai"}),
        ),
        (
            "ollama instance without endpoint",
            inst(json!({"provider": "ollama"})),
        ),
        (
            "vllm without endpoint",
            json!({"provider": "vllm", "override": {}}),
        ),
        (
            "unknown provider in an instance",
            inst(json!({"provider": "OpenAI"})),
        ),
        (
            "openai-compatible without endpoint",
            json!({"provider": "openai-compatible"}),
        ),
        (
            "openai-compatible with an empty override",
            json!({"provider": "openai-compatible", "override": {}}),
        ),
        (
            "openai-compatible instance without endpoint",
            inst(json!({"provider": "openai-compatible"})),
        ),
        (
            "provider and instances",
            with(json!({"provider": "openai"})),
        ),
        (
            "top-level auth with instances",
            with(json!({"auth": {"header": {"a": "b"}}})),
        ),
        (
            "top-level options with instances",
            with(json!({"options": {"model": "m"}})),
        ),
        (
            "top-level cluster with instances",
            with(json!({"cluster": "c"})),
        ),
        (
            "top-level override with instances",
            with(json!({"override": {"endpoint": "https://x"}})),
        ),
        ("no instance", json!({"instances": []})),
        (
            "balancer without instances",
            json!({"provider": "openai", "balancer": {"algorithm": "roundrobin"}}),
        ),
        (
            "fallback_strategy without instances",
            json!({"provider": "openai", "fallback_strategy": "http_429"}),
        ),
        (
            "fallback_http_statuses without instances",
            json!({"provider": "openai", "fallback_http_statuses": [500]}),
        ),
        (
            "max_retries without instances",
            json!({"provider": "openai", "max_retries": 1}),
        ),
        (
            "retry_on_failure_within_ms without instances",
            json!({"provider": "openai", "retry_on_failure_within_ms": 100}),
        ),
        ("timeout 0", json!({"provider": "openai", "timeout": 0})),
        (
            "timeout as a string",
            json!({"provider": "openai", "timeout": "30s"}),
        ),
        (
            "max_req_body_size 0",
            json!({"provider": "openai", "max_req_body_size": 0}),
        ),
        (
            "fallback_strategy rate_limiting is for the array only",
            with(json!({"fallback_strategy": "rate_limiting"})),
        ),
        (
            "unknown fallback_strategy",
            with(json!({"fallback_strategy": "http_4xx"})),
        ),
        (
            "unknown fallback_strategy array item",
            with(json!({"fallback_strategy": ["http_429", "http_4xx"]})),
        ),
        (
            "302 in fallback_http_statuses",
            with(json!({"fallback_http_statuses": [500, 302]})),
        ),
        (
            "600 in fallback_http_statuses",
            with(json!({"fallback_http_statuses": [600]})),
        ),
        ("max_retries negative", with(json!({"max_retries": -1}))),
        (
            "retry_on_failure_within_ms 0",
            with(json!({"retry_on_failure_within_ms": 0})),
        ),
        (
            "unknown balancer algorithm",
            with(json!({"balancer": {"algorithm": "random"}})),
        ),
        (
            "unknown hash_on",
            with(json!({"balancer": {"algorithm": "chash", "hash_on": "ip"}})),
        ),
        (
            "hash_on with roundrobin",
            with(json!({"balancer": {"hash_on": "vars"}})),
        ),
        (
            "key with roundrobin",
            with(json!({"balancer": {"algorithm": "roundrobin", "key": "uri"}})),
        ),
        (
            "chash on a header without key",
            with(json!({"balancer": {"algorithm": "chash", "hash_on": "header"}})),
        ),
        (
            "chash on an unknown variable",
            with(json!({"balancer": {"algorithm": "chash", "key": "client_ip"}})),
        ),
        (
            "chash combination without a variable",
            with(
                json!({"balancer": {"algorithm": "chash", "hash_on": "vars_combinations", "key": "fixed"}}),
            ),
        ),
        (
            "chash combination with an unknown variable",
            with(
                json!({"balancer": {"algorithm": "chash", "hash_on": "vars_combinations",
                                     "key": "$remote_addr-$nope"}}),
            ),
        ),
        ("limit without time_window", limits(json!({"limit": 10}))),
        (
            "time_window without limit",
            limits(json!({"time_window": 60})),
        ),
        (
            "rate_limiting without any limit",
            limits(json!({"limit_strategy": "total_tokens"})),
        ),
        (
            "rate_limiting with no instance limits",
            limits(json!({"instances": []})),
        ),
        ("limit 0", limits(json!({"limit": 0, "time_window": 60}))),
        (
            "instance limit without time_window",
            limits(json!({"instances": [{"name": "openai", "limit": 10}]})),
        ),
        (
            "unknown limit_strategy",
            limits(json!({"limit": 1, "time_window": 1, "limit_strategy": "tokens"})),
        ),
        (
            "rejected_code 99",
            limits(json!({"limit": 1, "time_window": 1, "rejected_code": 99})),
        ),
        (
            "rejected_code 600",
            limits(json!({"limit": 1, "time_window": 1, "rejected_code": 600})),
        ),
        (
            "consumers entry without rate_limiting",
            json!({"provider": "openai", "consumers": [{"name": "john"}]}),
        ),
        (
            "consumers entry without name",
            json!({"provider": "openai",
                   "consumers": [{"rate_limiting": {"limit": 1, "time_window": 1}}]}),
        ),
        (
            "consumer name with a space",
            json!({"provider": "openai",
                   "consumers": [{"name": "john doe", "rate_limiting": {"limit": 1, "time_window": 1}}]}),
        ),
        (
            "ssl_verify true",
            json!({"provider": "openai", "ssl_verify": true}),
        ),
        (
            "ssl_verify false",
            json!({"provider": "openai", "ssl_verify": false}),
        ),
        (
            "keepalive",
            json!({"provider": "openai", "keepalive": true}),
        ),
        (
            "keepalive_timeout",
            json!({"provider": "openai", "keepalive_timeout": 60000}),
        ),
        (
            "keepalive_pool",
            json!({"provider": "openai", "keepalive_pool": {"size": 320}}),
        ),
        ("checks.active.port", active(json!({"port": 8080}))),
        (
            "checks.active.https_verify_certificate",
            active(json!({"https_verify_certificate": true})),
        ),
        (
            "checks.active.concurrency",
            active(json!({"concurrency": 10})),
        ),
        (
            "unknown checks.active.type",
            active(json!({"type": "grpc"})),
        ),
        ("checks.active.timeout 0", active(json!({"timeout": 0}))),
        (
            "checks.active.timeout over a day",
            active(json!({"timeout": 86401})),
        ),
        (
            "checks.active.http_path not absolute",
            active(json!({"http_path": "v1/models"})),
        ),
        ("checks.active.host empty", active(json!({"host": ""}))),
        (
            "checks.active.req_headers without colon",
            active(json!({"req_headers": ["X-Probe"]})),
        ),
        (
            "checks.active.healthy.successes 0",
            active(json!({"healthy": {"successes": 0}})),
        ),
        (
            "checks.active.unhealthy.interval negative",
            active(json!({"unhealthy": {"interval": -1}})),
        ),
        (
            "checks.active.healthy.http_statuses 99",
            active(json!({"healthy": {"http_statuses": [99]}})),
        ),
        (
            "checks.passive.unhealthy.interval",
            passive(json!({"unhealthy": {"interval": 1}})),
        ),
        ("checks.passive.cooldown 0", passive(json!({"cooldown": 0}))),
        (
            "checks.passive.unhealthy.timeouts 0",
            passive(json!({"unhealthy": {"timeouts": 0}})),
        ),
        ("instance name with a space", inst(json!({"name": "a b"}))),
        ("instance name empty", inst(json!({"name": ""}))),
        (
            "instance name of 101 characters",
            inst(json!({"name": "n".repeat(101)})),
        ),
        (
            "instance without provider",
            json!({"instances": [{"name": "a"}]}),
        ),
        ("instance weight negative", inst(json!({"weight": -1}))),
        (
            "instance priority fractional",
            inst(json!({"priority": 1.5})),
        ),
        (
            "instance cluster with a space",
            inst(json!({"cluster": "my cluster"})),
        ),
        (
            "auth header value not a string",
            json!({"provider": "openai", "auth": {"header": {"Authorization": 123}}}),
        ),
        (
            "auth header value with a newline",
            json!({"provider": "openai", "auth": {"header": {"Authorization": "Bearer k\r\nX: y"}}}),
        ),
        (
            "auth header name with a space",
            json!({"provider": "openai", "auth": {"header": {"Api Key": "k"}}}),
        ),
        (
            "auth header that Envoy owns",
            json!({"provider": "openai", "auth": {"header": {"Content-Type": "text/plain"}}}),
        ),
        (
            "auth header that is the default routing header",
            inst(json!({"auth": {"header": {"X-AI-Proxy-Cluster": "k"}}})),
        ),
        (
            "auth query value not a string",
            json!({"provider": "openai", "auth": {"query": {"key": true}}}),
        ),
        (
            "endpoint without http(s)",
            json!({"provider": "openai-compatible", "override": {"endpoint": "ftp://llm.local"}}),
        ),
        (
            "endpoint with credentials",
            json!({"provider": "openai-compatible", "override": {"endpoint": "https://u:p@llm.local/v1"}}),
        ),
        (
            "endpoint with a fragment",
            json!({"provider": "openai", "override": {"endpoint": "https://llm.local/v1#x"}}),
        ),
        (
            "endpoint without host",
            json!({"provider": "openai", "override": {"endpoint": "https:///v1"}}),
        ),
        (
            "cluster empty",
            json!({"provider": "openai", "cluster": ""}),
        ),
        (
            "cluster_header not a token",
            json!({"provider": "openai", "cluster_header": "x route"}),
        ),
        (
            "cluster_header Host",
            json!({"provider": "openai", "cluster_header": "Host"}),
        ),
        (
            "consumer_header authorization",
            json!({"provider": "openai", "consumer_header": "Authorization"}),
        ),
        (
            "consumer_header is the default cluster header",
            json!({"provider": "openai", "consumer_header": "x-ai-proxy-cluster"}),
        ),
        (
            "cluster_header is the default consumer header",
            json!({"provider": "openai", "cluster_header": "X-Consumer"}),
        ),
        (
            "logging.summaries not a boolean",
            json!({"provider": "openai", "logging": {"summaries": "yes"}}),
        ),
        (
            "unknown logging field",
            json!({"provider": "openai", "logging": {"access": true}}),
        ),
        (
            "options not an object",
            json!({"provider": "openai", "options": "gpt-4"}),
        ),
    ];
    cases.iter().map(|(n, v)| Case::json(*n, v)).collect()
}

#[test]
fn schema_agrees_with_the_parser() {
    let root = repo_root();

    let mut found = doc_configs(&root, "docs/config.md");
    found.extend(doc_configs(&root, "docs/providers.md"));
    let from_docs = found.len();
    found.extend(example_configs(&root));
    let from_examples = found.len() - from_docs;
    for file in ["multi-instance.yaml", "demo.yaml", "openai.yaml"] {
        found.extend(bootstrap_configs(&root, file));
    }
    assert!(
        found.len() >= 10,
        "only {} shipped configurations found ({from_docs} in docs/config.md, {from_examples} in examples/): \
         the test would prove little",
        found.len()
    );
    let found_count = found.len();
    let mut valid = found;
    valid.extend(edge_valid());
    let invalid = invalid();
    assert!(invalid.len() >= 15, "too few invalid cases");

    // The lists themselves must be right: the real parser decides.
    let mut wrong = Vec::new();
    for c in &valid {
        if let Err(e) = envoy_ai_proxy::config::parse(c.text.as_bytes()) {
            wrong.push(format!(
                "{}: should be valid, but the parser refuses it: {e}",
                c.name
            ));
        }
    }
    for c in &invalid {
        if envoy_ai_proxy::config::parse(c.text.as_bytes()).is_ok() {
            wrong.push(format!(
                "{}: should be invalid, but the parser accepts it: {}",
                c.name, c.text
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "the case lists disagree with the parser:\n{}",
        wrong.join("\n")
    );

    // Then the schema must agree.
    let values = |cases: &[Case]| -> Vec<Value> {
        cases
            .iter()
            .map(|c| {
                serde_json::from_str(&c.text)
                    .unwrap_or_else(|e| panic!("{}: not JSON: {e}", c.name))
            })
            .collect()
    };
    let names = |cases: &[Case]| -> Vec<String> { cases.iter().map(|c| c.name.clone()).collect() };
    let doc = json!({
        "valid": values(&valid),
        "invalid": values(&invalid),
        "names": {"valid": names(&valid), "invalid": names(&invalid)},
    });
    let cases_path = std::env::temp_dir().join(format!(
        "envoy-ai-proxy-schema-cases-{}.json",
        std::process::id()
    ));
    std::fs::write(&cases_path, doc.to_string())
        .unwrap_or_else(|e| panic!("{}: {e}", cases_path.display()));

    let python = std::env::var_os("PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv/bin/python"));
    let output = Command::new(&python)
        .arg(root.join("integration/python/check_schema.py"))
        .arg(root.join("schema/plugin-config.schema.json"))
        .arg(&cases_path)
        .output();
    if std::env::var_os("KEEP_CASES").is_none() {
        let _ = std::fs::remove_file(&cases_path);
    }
    let output = output.unwrap_or_else(|e| {
        panic!(
            "cannot run {} (set PYTHON to an interpreter with jsonschema): {e}",
            python.display()
        )
    });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the schema disagrees with the parser ({}):\n{stdout}{stderr}",
        output.status
    );
    println!(
        "{found_count} shipped configurations ({from_docs} from docs/config.md, {from_examples} from examples/), \
         {} valid and {} invalid cases in all: {}",
        valid.len(),
        invalid.len(),
        stdout.trim()
    );
}
