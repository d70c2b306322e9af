//! Configuration parsing and validation, table-driven.

use super::read::redact;
use super::*;
use crate::balancer::key::KeySource;
use crate::fallback::Policy;
use crate::provider::ApiKind;
use serde_json::json;

fn parse_json(v: serde_json::Value) -> Result<Config, ConfigError> {
    parse(v.to_string().as_bytes())
}

#[test]
fn minimal_single_provider_gets_defaults() {
    let c = parse_json(json!({"provider": "openai"})).unwrap();
    assert_eq!(c.timeout_ms, 30_000);
    assert_eq!(c.max_req_body_size, 16 * 1024 * 1024);
    assert_eq!(c.cluster_header, "x-ai-proxy-cluster");
    assert_eq!(c.instances.len(), 1);
    let i = &c.instances[0];
    assert_eq!((i.name.as_str(), i.cluster.as_str()), ("openai", "openai"));
    assert_eq!(i.target.authority, "api.openai.com");
    assert!(!i.has_auth);
}

#[test]
fn full_single_provider() {
    let c = parse_json(json!({
        "provider": "openai-compatible",
        "auth": {"header": {"Authorization": "Bearer k", "X-Org": "o"}, "query": {"api-key": "q v"}},
        "options": {"model": "m", "temperature": 0.5, "response_format": {"type": "json_object"}},
        "override": {"endpoint": "https://llm.internal:8443/v1/chat/completions?api-version=2"},
        "cluster": "llm_internal",
        "timeout": 1500,
        "max_req_body_size": 2048,
        "cluster_header": "X-Route-To"
    }))
    .unwrap();
    assert_eq!(c.timeout_ms, 1500);
    assert_eq!(c.max_req_body_size, 2048);
    assert_eq!(c.cluster_header, "x-route-to");
    let i = &c.instances[0];
    assert_eq!(i.cluster, "llm_internal");
    assert_eq!(i.target.authority, "llm.internal:8443");
    assert_eq!(
        i.target.path(crate::provider::ApiKind::Chat),
        Some("/v1/chat/completions?api-version=2&api-key=q%20v")
    );
    assert_eq!(
        i.auth_headers,
        vec![
            ("authorization".into(), "Bearer k".into()),
            ("x-org".into(), "o".into())
        ]
    );
    assert!(i.has_auth);
    assert_eq!(
        i.options,
        vec![
            ("model".into(), "\"m\"".into()),
            ("temperature".into(), "0.5".into()),
            (
                "response_format".into(),
                "{\"type\":\"json_object\"}".into()
            )
        ]
    );
}

#[test]
fn refusals_name_the_field() {
    let cases = [
        (
            "unknown top-level field",
            json!({"provider": "openai", "modle": "x"}),
            "modle",
        ),
        (
            "unknown auth field",
            json!({"provider": "openai", "auth": {"headers": {}}}),
            "auth.headers",
        ),
        (
            "unknown provider",
            json!({"provider": "openia"}),
            "provider",
        ),
        ("missing provider", json!({}), "provider"),
        (
            "compatible without endpoint",
            json!({"provider": "openai-compatible"}),
            "override.endpoint",
        ),
        (
            "bad endpoint",
            json!({"provider": "openai", "override": {"endpoint": "api.openai.com"}}),
            "override.endpoint",
        ),
        (
            "bad header name",
            json!({"provider": "openai", "auth": {"header": {"a b": "x"}}}),
            "auth.header.a b",
        ),
        (
            "reserved header",
            json!({"provider": "openai", "auth": {"header": {"Content-Length": "1"}}}),
            "auth.header.Content-Length",
        ),
        (
            "routing header as auth",
            json!({"provider": "openai", "auth": {"header": {"x-ai-proxy-cluster": "c"}}}),
            "auth.header.x-ai-proxy-cluster",
        ),
        (
            "header value with newline",
            json!({"provider": "openai", "auth": {"header": {"a": "x\r\ny: z"}}}),
            "auth.header.a",
        ),
        (
            "non-string auth",
            json!({"provider": "openai", "auth": {"query": {"key": 5}}}),
            "auth.query.key",
        ),
        (
            "zero timeout",
            json!({"provider": "openai", "timeout": 0}),
            "timeout",
        ),
        (
            "negative timeout",
            json!({"provider": "openai", "timeout": -5}),
            "timeout",
        ),
        (
            "timeout past 32-bit milliseconds",
            json!({"provider": "openai", "timeout": 4_294_967_297u64}),
            "timeout",
        ),
        (
            "string timeout",
            json!({"provider": "openai", "timeout": "5s"}),
            "timeout",
        ),
        (
            "zero body size",
            json!({"provider": "openai", "max_req_body_size": 0}),
            "max_req_body_size",
        ),
        (
            "options not a map",
            json!({"provider": "openai", "options": [1]}),
            "options",
        ),
        (
            "ssl_verify",
            json!({"provider": "openai", "ssl_verify": false}),
            "ssl_verify",
        ),
        (
            "keepalive",
            json!({"provider": "openai", "keepalive": true}),
            "keepalive",
        ),
        (
            "keepalive_pool",
            json!({"provider": "openai", "keepalive_pool": 30}),
            "keepalive_pool",
        ),
        (
            "bad cluster header",
            json!({"provider": "openai", "cluster_header": "x y"}),
            "cluster_header",
        ),
        (
            "pseudo cluster header",
            json!({"provider": "openai", "cluster_header": "host"}),
            "cluster_header",
        ),
        (
            "empty cluster",
            json!({"provider": "openai", "cluster": ""}),
            "cluster",
        ),
    ];
    for (name, cfg, field) in cases {
        let err = parse_json(cfg)
            .err()
            .unwrap_or_else(|| panic!("{name}: accepted"));
        assert_eq!(err.path, field, "{name}: {err}");
        assert!(err.to_string().contains(field), "{name}: {err}");
    }
}

#[test]
fn syntax_errors_are_refused() {
    for bad in [
        &b""[..],
        b"   ",
        b"{",
        b"[]",
        b"null",
        b"{\"provider\": \"openai\",}",
        b"\xff",
    ] {
        assert!(
            parse(bad).is_err(),
            "{:?} accepted",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn errors_never_repeat_a_secret() {
    let secret = "sk-live-SECRET-123";
    let cases = [
        json!({"provider": "openai", "auth": format!("Bearer {secret}")}),
        json!({"provider": "openai", "auth": {"header": format!("Authorization: {secret}")}}),
        json!({"provider": "openai", "auth": {"header": {"Authorization": [secret]}}}),
        json!({"provider": "openai", "auth": {"header": {"Authorization": format!("{secret}\n")}}}),
        json!({"provider": "openai", "timeout": secret}),
        json!({"provider": "openai", "override": format!("https://x/?key={secret}")}),
    ];
    for cfg in cases {
        let err = parse_json(cfg.clone()).unwrap_err();
        assert!(!err.to_string().contains("SECRET"), "{cfg}: {err}");
    }
}

#[test]
fn redact_cuts_quoted_strings_only() {
    assert_eq!(
        redact(r#"invalid type: string "a\"b", expected struct X at line 1 column 9"#),
        r#"invalid type: string "…", expected struct X at line 1 column 9"#
    );
    assert_eq!(redact("unknown field `x`"), "unknown field `x`");
    assert_eq!(redact(r#"string "unterminated"#), r#"string "…""#);
}

/// Every `json` block of the configuration reference is a configuration that parses, and
/// the refusal messages it quotes are the ones the filter really prints.
#[test]
fn docs_examples_are_true() {
    let doc = include_str!("../../docs/config.md");
    let mut examples = 0;
    for block in doc.split("```json\n").skip(1) {
        let text = block.split("```").next().unwrap();
        parse(text.as_bytes()).unwrap_or_else(|e| panic!("docs example refused: {e}\n{text}"));
        examples += 1;
    }
    assert!(examples >= 4, "found {examples} examples");

    for cfg in [
        json!({"provider": "openai", "auth": {"headers": {}}}),
        json!({"provider": "openai", "ssl_verify": true}),
    ] {
        let msg = format!(
            "invalid plugin configuration: {}",
            parse_json(cfg).unwrap_err()
        );
        assert!(doc.contains(&msg), "docs/config.md does not quote: {msg}");
    }
}

#[test]
fn many_instances() {
    let c = parse_json(json!({
        "instances": [
            {"name": "openai-instance", "provider": "openai", "priority": 1, "weight": 8,
             "auth": {"header": {"Authorization": "Bearer a"}}, "options": {"model": "gpt-4o"}},
            {"name": "deepseek-instance", "provider": "deepseek", "weight": 2, "cluster": "ds"}
        ],
        "balancer": {"algorithm": "chash", "hash_on": "header", "key": "X-User"},
        "fallback_strategy": ["http_429", "http_5xx", "rate_limiting"],
        "fallback_http_statuses": [401, 408],
        "retry_on_failure_within_ms": 5000,
        "consumer_header": "X-Team"
    }))
    .unwrap();
    assert_eq!(c.instances.len(), 2);
    let (a, b) = (&c.instances[0], &c.instances[1]);
    assert_eq!(
        (a.name.as_str(), a.cluster.as_str(), a.priority, a.weight),
        ("openai-instance", "openai-instance", 1, 8)
    );
    assert_eq!(
        (b.name.as_str(), b.cluster.as_str(), b.priority, b.weight),
        ("deepseek-instance", "ds", 0, 2)
    );
    assert_eq!(c.hash_key, Some(KeySource::Header("x-user".into())));
    let p = &c.fallback;
    assert!(p.on_429 && p.on_5xx && p.rate_limiting);
    assert_eq!(p.statuses, vec![401, 408]);
    assert_eq!(p.max_retries, 1, "default: every other instance once");
    assert_eq!(p.within_ms, Some(5000));
    assert_eq!(c.consumer_header, "x-team");

    let c = parse_json(json!({"instances": [{"name": "x", "provider": "openai"}]})).unwrap();
    assert_eq!(
        c.fallback,
        Policy {
            max_retries: 0,
            ..Policy::default()
        }
    );
    assert_eq!(c.hash_key, None);
    let c = parse_json(json!({"instances": [{"name": "x", "provider": "openai"}],
                              "fallback_strategy": "instance_health_and_rate_limiting", "max_retries": 3}))
    .unwrap();
    assert!(c.fallback.rate_limiting && !c.fallback.on_5xx);
    assert_eq!(c.fallback.max_retries, 3);
}

#[test]
fn many_instance_refusals_name_the_field() {
    let one = json!({"name": "a", "provider": "openai"});
    let cases = [
        ("empty instances", json!({"instances": []}), "instances"),
        (
            "duplicate names",
            json!({"instances": [one, one]}),
            "instances[1].name",
        ),
        (
            "bad name",
            json!({"instances": [{"name": "a b", "provider": "openai"}]}),
            "instances[0].name",
        ),
        (
            "long name",
            json!({"instances": [{"name": "x".repeat(101), "provider": "openai"}]}),
            "instances[0].name",
        ),
        (
            "missing provider",
            json!({"instances": [{"name": "a"}]}),
            "instances[0]",
        ),
        (
            "bad provider",
            json!({"instances": [{"name": "a", "provider": "x"}]}),
            "instances[0].provider",
        ),
        (
            "instance endpoint",
            json!({"instances": [{"name": "a", "provider": "openai-compatible"}]}),
            "instances[0].override.endpoint",
        ),
        (
            "instance auth",
            json!({"instances": [{"name": "a", "provider": "openai", "auth": {"header": {"Host": "x"}}}]}),
            "instances[0].auth.header.Host",
        ),
        (
            "unknown instance field",
            json!({"instances": [{"name": "a", "provider": "openai", "wieght": 1}]}),
            "instances[0].wieght",
        ),
        (
            "negative weight",
            json!({"instances": [{"name": "a", "provider": "openai", "weight": -1}]}),
            "instances[0].weight",
        ),
        (
            "both shapes",
            json!({"provider": "openai", "instances": [one]}),
            "provider",
        ),
        (
            "top-level auth with instances",
            json!({"auth": {}, "instances": [one]}),
            "auth",
        ),
        (
            "balancer without instances",
            json!({"provider": "openai", "balancer": {}}),
            "balancer",
        ),
        (
            "fallback without instances",
            json!({"provider": "openai", "fallback_strategy": "http_5xx"}),
            "fallback_strategy",
        ),
        (
            "bad algorithm",
            json!({"instances": [one], "balancer": {"algorithm": "random"}}),
            "balancer.algorithm",
        ),
        (
            "hash_on with roundrobin",
            json!({"instances": [one], "balancer": {"hash_on": "header"}}),
            "balancer.hash_on",
        ),
        (
            "chash header without key",
            json!({"instances": [one], "balancer": {"algorithm": "chash", "hash_on": "header"}}),
            "balancer",
        ),
        (
            "bad strategy",
            json!({"instances": [one], "fallback_strategy": "http_4xx"}),
            "fallback_strategy",
        ),
        (
            "bad strategy in array",
            json!({"instances": [one], "fallback_strategy": ["http_5xx", "nope"]}),
            "fallback_strategy",
        ),
        (
            "strategy of wrong type",
            json!({"instances": [one], "fallback_strategy": 5}),
            "fallback_strategy",
        ),
        (
            "status out of range",
            json!({"instances": [one], "fallback_http_statuses": [302]}),
            "fallback_http_statuses",
        ),
        (
            "zero within",
            json!({"instances": [one], "retry_on_failure_within_ms": 0}),
            "retry_on_failure_within_ms",
        ),
        (
            "consumer header = cluster header",
            json!({"instances": [one], "consumer_header": "x-ai-proxy-cluster"}),
            "consumer_header",
        ),
    ];
    for (name, cfg, field) in cases {
        let err = parse_json(cfg)
            .err()
            .unwrap_or_else(|| panic!("{name}: accepted"));
        assert_eq!(err.path, field, "{name}: {err}");
    }
}

#[test]
fn rate_limits() {
    let c = parse_json(json!({
        "instances": [{"name": "a", "provider": "openai"}, {"name": "b", "provider": "openai"}],
        "rate_limiting": {"limit": 100, "time_window": 60,
                          "instances": [{"name": "b", "limit": 5, "time_window": 10}],
                          "rejected_code": 503, "show_limit_quota_header": false},
        "consumers": [{"name": "john", "rate_limiting": {"instances": [{"name": "a", "limit": 7, "time_window": 30}],
                                                         "limit_strategy": "prompt_tokens"}}]
    }))
    .unwrap();
    let route = c.rate_limits.route.as_ref().unwrap();
    let l = |limit, window_secs| Some(crate::ratelimit::Limit { limit, window_secs });
    assert_eq!(route.per_instance, vec![l(100, 60), l(5, 10)]);
    assert_eq!((route.rejected_code, route.show_headers), (503, false));
    let john = c.rate_limits.consumer("john").unwrap();
    assert_eq!(john.per_instance, vec![l(7, 30), None]);
    assert_eq!(john.strategy, crate::ratelimit::Strategy::PromptTokens);
    // Inherited from the route's block.
    assert_eq!((john.rejected_code, john.show_headers), (503, false));
    // Single provider: the instance is named after the provider.
    let c = parse_json(json!({"provider": "deepseek",
        "rate_limiting": {"instances": [{"name": "deepseek", "limit": 1, "time_window": 1}]}}))
    .unwrap();
    assert!(c.rate_limits.any());
}

#[test]
fn rate_limit_refusals_name_the_field() {
    let base = |rl: serde_json::Value| json!({"provider": "openai", "rate_limiting": rl});
    let cases = [
        (
            "limit without window",
            base(json!({"limit": 5})),
            "rate_limiting.time_window",
        ),
        (
            "window without limit",
            base(json!({"time_window": 5})),
            "rate_limiting.limit",
        ),
        (
            "no limit at all",
            base(json!({"rejected_code": 429})),
            "rate_limiting",
        ),
        (
            "zero limit",
            base(json!({"limit": 0, "time_window": 5})),
            "rate_limiting.limit",
        ),
        (
            "zero window",
            base(json!({"limit": 5, "time_window": 0})),
            "rate_limiting.time_window",
        ),
        (
            "unknown instance",
            base(json!({"instances": [{"name": "nope", "limit": 1, "time_window": 1}]})),
            "rate_limiting.instances[0].name",
        ),
        (
            "bad strategy",
            base(json!({"limit": 5, "time_window": 5, "limit_strategy": "words"})),
            "rate_limiting.limit_strategy",
        ),
        (
            "bad code",
            base(json!({"limit": 5, "time_window": 5, "rejected_code": 99})),
            "rate_limiting.rejected_code",
        ),
        (
            "unknown field",
            base(json!({"limit": 5, "time_window": 5, "burst": 1})),
            "rate_limiting.burst",
        ),
        (
            "duplicate consumer",
            json!({"provider": "openai", "consumers": [
            {"name": "j", "rate_limiting": {"limit": 1, "time_window": 1}},
            {"name": "j", "rate_limiting": {"limit": 1, "time_window": 1}}]}),
            "consumers[1].name",
        ),
        (
            "consumer without limits",
            json!({"provider": "openai", "consumers": [{"name": "j"}]}),
            "consumers[0]",
        ),
        (
            "bad consumer name",
            json!({"provider": "openai", "consumers": [
            {"name": "j k", "rate_limiting": {"limit": 1, "time_window": 1}}]}),
            "consumers[0].name",
        ),
    ];
    for (name, cfg, field) in cases {
        let err = parse_json(cfg)
            .err()
            .unwrap_or_else(|| panic!("{name}: accepted"));
        assert_eq!(err.path, field, "{name}: {err}");
    }
}

#[test]
fn health_checks() {
    let c = parse_json(json!({"instances": [{
        "name": "a", "provider": "openai",
        "auth": {"header": {"Authorization": "Bearer k"}},
        "checks": {
            "active": {"type": "tcp", "timeout": 0.5, "http_path": "/v1/models", "host": "h",
                       "req_headers": ["User-Agent: probe", "X-A:b"],
                       "healthy": {"interval": 2, "successes": 3},
                       "unhealthy": {"interval": 0.5, "tcp_failures": 4}},
            "passive": {"unhealthy": {"http_statuses": [500], "http_failures": 2}, "cooldown": 30}
        }
    }]}))
    .unwrap();
    let i = &c.instances[0];
    let a = i.active_check.as_ref().unwrap();
    assert!(a.tcp);
    assert_eq!(
        (a.timeout_ms, a.healthy_interval_ms, a.unhealthy_interval_ms),
        (500, 2000, 500)
    );
    assert_eq!(
        (a.successes, a.tcp_failures, a.http_failures, a.timeouts),
        (3, 4, 5, 3)
    );
    assert_eq!(a.healthy_statuses, vec![200, 302]);
    assert_eq!(
        a.headers,
        vec![
            ("authorization".into(), "Bearer k".into()),
            ("user-agent".into(), "probe".into()),
            ("x-a".into(), "b".into())
        ]
    );
    let p = i.passive_check.as_ref().unwrap();
    assert_eq!(
        (
            p.statuses.clone(),
            p.http_failures,
            p.timeouts,
            p.cooldown_ms
        ),
        (vec![500], 2, 3, 30_000)
    );

    let checks = |c: serde_json::Value| json!({"instances": [{"name": "a", "provider": "openai", "checks": c}]});
    let cases = [
        (
            "bad type",
            checks(json!({"active": {"type": "grpc"}})),
            "instances[0].checks.active.type",
        ),
        (
            "port",
            checks(json!({"active": {"port": 8080}})),
            "instances[0].checks.active.port",
        ),
        (
            "verify",
            checks(json!({"active": {"https_verify_certificate": false}})),
            "instances[0].checks.active.https_verify_certificate",
        ),
        (
            "bad path",
            checks(json!({"active": {"http_path": "health"}})),
            "instances[0].checks.active.http_path",
        ),
        (
            "bad header",
            checks(json!({"active": {"req_headers": ["no colon"]}})),
            "instances[0].checks.active.req_headers[0]",
        ),
        (
            "zero timeout",
            checks(json!({"active": {"timeout": 0}})),
            "instances[0].checks.active.timeout",
        ),
        (
            "zero successes",
            checks(json!({"active": {"healthy": {"successes": 0}}})),
            "instances[0].checks.active.healthy.successes",
        ),
        (
            "bad status",
            checks(json!({"active": {"unhealthy": {"http_statuses": [700]}}})),
            "instances[0].checks.active.unhealthy.http_statuses",
        ),
        (
            "passive interval",
            checks(json!({"passive": {"unhealthy": {"interval": 1}}})),
            "instances[0].checks.passive.unhealthy.interval",
        ),
        (
            "unknown",
            checks(json!({"active": {"intervall": 1}})),
            "instances[0].checks.active.intervall",
        ),
    ];
    for (name, cfg, field) in cases {
        let err = parse_json(cfg)
            .err()
            .unwrap_or_else(|| panic!("{name}: accepted"));
        assert_eq!(err.path, field, "{name}: {err}");
    }
}

/// APISIX's documented `ai-proxy` configurations for Azure OpenAI and Gemini load as they
/// are (keys as placeholders).
#[test]
fn apisix_azure_and_gemini_configurations_load_unchanged() {
    let azure = parse_json(json!({
        "provider": "azure-openai",
        "auth": {"header": {"api-key": "your-api-key"}},
        "options": {"model": "gpt-4"},
        "override": {"endpoint": "https://api7-azure-openai.openai.azure.com/openai/deployments/gpt-4/chat/completions?api-version=2024-02-15-preview"}
    }))
    .unwrap();
    let t = &azure.instances[0].target;
    assert_eq!(t.authority, "api7-azure-openai.openai.azure.com");
    assert_eq!(
        t.path(ApiKind::Embeddings),
        Some("/openai/deployments/gpt-4/embeddings?api-version=2024-02-15-preview")
    );
    let gemini = parse_json(json!({
        "provider": "gemini",
        "auth": {"header": {"Authorization": "Bearer your-api-key"}},
        "options": {"model": "gemini-2.0-flash"}
    }))
    .unwrap();
    let t = &gemini.instances[0].target;
    assert_eq!(t.authority, "generativelanguage.googleapis.com");
    assert_eq!(
        t.path(ApiKind::Chat),
        Some("/v1beta/openai/chat/completions")
    );
    // Azure needs its deployment URL.
    let err = parse_json(json!({"provider": "azure-openai"})).unwrap_err();
    assert_eq!(err.path, "override.endpoint");
}

#[test]
fn rate_limit_service_and_reservations() {
    let c = parse_json(json!({"provider": "openai",
        "rate_limiting": {"limit": 30, "time_window": 60, "service": {"cluster": "rls"}}}))
    .unwrap();
    assert_eq!(
        c.rate_limits.service,
        Some(Service {
            cluster: "rls".into(),
            domain: "ai-proxy".into(),
            protocol: RlsProtocol::Limitador,
            timeout_ms: 200,
            failure_mode_deny: false,
        })
    );
    assert!(!c.rate_limits.reserve);
    assert_eq!(c.rate_limits.default_reserve, 1024);
    // Only consumers' limits: the route's block may carry just the service and the mode.
    let c = parse_json(json!({"provider": "openai",
        "rate_limiting": {"service": {"cluster": "rls", "protocol": "envoy", "domain": "x",
                                      "timeout_ms": 50, "failure_mode_deny": true},
                          "reserve": "max_tokens", "default_reserve": 64},
        "consumers": [{"name": "john", "rate_limiting": {"limit": 5, "time_window": 60}}]}))
    .unwrap();
    assert!(c.rate_limits.route.is_none());
    let s = c.rate_limits.service.unwrap();
    assert_eq!(
        (s.protocol, s.domain.as_str(), s.timeout_ms),
        (RlsProtocol::Envoy, "x", 50)
    );
    assert!(s.failure_mode_deny && c.rate_limits.reserve);
    assert_eq!(c.rate_limits.default_reserve, 64);

    let cases = [
        (json!({"service": {}}), "rate_limiting.service.cluster"),
        (
            json!({"service": {"cluster": "a b"}}),
            "rate_limiting.service.cluster",
        ),
        (
            json!({"service": {"cluster": "r", "protocol": "redis"}}),
            "rate_limiting.service.protocol",
        ),
        (
            json!({"service": {"cluster": "r", "timeout_ms": 0}}),
            "rate_limiting.service.timeout_ms",
        ),
        (
            json!({"service": {"cluster": "r", "domain": ""}}),
            "rate_limiting.service.domain",
        ),
        (
            json!({"service": {"cluster": "r", "tls": true}}),
            "rate_limiting.service.tls",
        ),
        (
            json!({"limit": 1, "time_window": 1, "reserve": "all"}),
            "rate_limiting.reserve",
        ),
        (
            json!({"limit": 1, "time_window": 1, "default_reserve": 0}),
            "rate_limiting.default_reserve",
        ),
        (json!({"service": {"cluster": "r"}}), "rate_limiting"),
        (
            json!({"limit": 1, "time_window": 1, "service": {"cluster": "openai"}}),
            "rate_limiting.service.cluster",
        ),
    ];
    for (rl, path) in cases {
        let err = parse_json(json!({"provider": "openai", "rate_limiting": rl})).unwrap_err();
        assert_eq!(err.path, path, "{rl}: {err}");
    }
    let err = parse_json(json!({"provider": "openai",
        "consumers": [{"name": "j", "rate_limiting": {"limit": 5, "time_window": 60,
                                                      "service": {"cluster": "r"}}}]}))
    .unwrap_err();
    assert_eq!(err.path, "consumers[0].rate_limiting.service");
}

#[test]
fn nothing_may_follow_the_configuration_object() {
    for text in [r#"{"provider":"openai"}x"#, r#"{"provider":"openai"} {}"#] {
        let err = parse(text.as_bytes()).unwrap_err();
        assert!(
            err.message.starts_with("after the configuration object"),
            "{err}"
        );
    }
    assert!(parse(b"{\"provider\":\"openai\"}\n  ").is_ok());
}

/// Serde's own errors for the top-level fields, each read in a function of its own
/// (`raw::apart`): the same paths and messages as serde's derive code gives without it.
#[test]
fn configuration_errors_read_as_serde_gives_them() {
    let cases: &[(&str, &str, &str)] = &[
        (
            r#"{"provider":"openai","provider":"openai"}"#,
            ".",
            "duplicate field `provider` at line 1 column 31",
        ),
        (
            r#"{"provider":"openai","timeout":null,"timeout":5}"#,
            ".",
            "duplicate field `timeout` at line 1 column 45",
        ),
        (
            r#"{"provider":"openai","timeout":"5"}"#,
            "timeout",
            "invalid type: string \"…\", expected u64",
        ),
        (
            r#"{"provider":"openai","timeout":1.5}"#,
            "timeout",
            "invalid type: floating point `1.5`, expected u64",
        ),
        (
            r#"{"provider":"openai","max_retries":-1}"#,
            "max_retries",
            "invalid value: integer `-1`, expected u32",
        ),
        (
            r#"{"provider":7}"#,
            "provider",
            "invalid type: integer `7`, expected a string",
        ),
        (
            r#"{"provider":"openai","logging":{"summaries":"yes"}}"#,
            "logging.summaries",
            "invalid type: string \"…\", expected a boolean",
        ),
        (
            r#"{"provider":"openai","rate_limiting":{"limit":1,"time_window":60,"limit":2}}"#,
            "rate_limiting",
            "duplicate field `limit`",
        ),
        (
            r#"{"instances":[{"name":"a","provider":"openai","checks":{"active":{"timeout":"x"}}}]}"#,
            "instances[0].checks.active.timeout",
            "invalid type: string \"…\", expected f64",
        ),
        (
            r#"{"instances":{"name":"a"}}"#,
            "instances",
            "invalid type: map, expected a sequence",
        ),
        (
            r#"{"provider":"openai","fallback_strategy":5}"#,
            "fallback_strategy",
            "data did not match any variant of untagged enum RawFallbackStrategy",
        ),
        (
            r#"{"provider":"openai","consumers":[{"name":"c","rate_limiting":{"limit":1,"time_window":1,"x":1}}]}"#,
            "consumers[0].rate_limiting.x",
            "unknown field `x`, expected one of `limit`, `time_window`, `instances`, \
             `limit_strategy`, `rejected_code`, `rejected_msg`, `show_limit_quota_header`, \
             `service`, `reserve`, `default_reserve`",
        ),
        // Not an object: refused before serde, which would read an array as the fields in
        // order.
        (
            "[]",
            "",
            "the configuration must be a JSON object (the fields by name), not an array",
        ),
        (
            r#" ["openai"]"#,
            "",
            "the configuration must be a JSON object (the fields by name), not an array",
        ),
        (
            r#""openai""#,
            ".",
            "invalid type: string \"…\", expected struct RawConfig at line 1 column 8",
        ),
    ];
    for (cfg, path, message) in cases {
        let err = parse(cfg.as_bytes()).expect_err(cfg);
        assert_eq!(
            (err.path.as_str(), err.message.as_str()),
            (*path, *message),
            "{cfg}"
        );
    }
    // A field given as null is absent, as before.
    let c = parse(
        br#"{"provider":"openai","auth":null,"options":null,"override":null,"cluster":null,
             "timeout":null,"ssl_verify":null,"keepalive":null,"logging":null,
             "rate_limiting":null,"consumers":null,"instances":null}"#,
    )
    .unwrap();
    assert_eq!(c.timeout_ms, DEFAULT_TIMEOUT_MS);
    assert_eq!(c.instances.len(), 1);
}
