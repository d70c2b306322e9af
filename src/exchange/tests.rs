//! Whole lifecycles, natively: inputs in, the resulting state of a fake Envoy out (what
//! went upstream, what the client got, filter state, metrics, counters). No test depends on
//! the order of host calls.

use std::rc::Rc;

use serde_json::{json, Value};

use super::*;
use crate::config;
use crate::effect::{Input, Map, Step};
use crate::quota::local;
use crate::testing::FakeHost;

const NOW_MS: u64 = 1_700_000_000_000;

struct T {
    host: FakeHost,
    ex: Exchange,
    plugin: Rc<Plugin>,
}

impl T {
    fn new(config: Value) -> T {
        let raw = config.to_string();
        let plugin = Rc::new(Plugin::new(
            config::parse(raw.as_bytes()).unwrap(),
            b"t",
            raw.as_bytes(),
        ));
        let host = FakeHost::at_ms(NOW_MS);
        if let Some(q) = plugin.quota.as_ref() {
            q.start(&host);
        }
        crate::health::shared::seed(&plugin.config, &plugin.health_keys, &host.store);
        T {
            ex: Exchange::new(Some(plugin.clone())),
            host,
            plugin,
        }
    }

    /// A new request on the same plugin and shared state.
    fn next(&mut self) {
        self.ex = Exchange::new(Some(self.plugin.clone()));
        self.host.replies.borrow_mut().clear();
        self.host.filter_state.borrow_mut().clear();
    }

    fn on(&mut self, input: Input) -> Step {
        let T { host, ex, .. } = self;
        let out = ex.on(input, host);
        host.run(out, |i| ex.on(i, host))
    }

    /// Request headers and the whole body.
    fn request(&mut self, body: &Value) -> Step {
        self.request_to("/v1/chat/completions", body)
    }

    /// As `request`, to `path`.
    fn request_to(&mut self, path: &str, body: &Value) -> Step {
        let bytes = body.to_string();
        let len = bytes.len().to_string();
        self.host.set_request(
            &[
                (":method", "POST"),
                (":path", path),
                (":authority", "gateway"),
                ("content-type", "application/json"),
                ("content-length", &len),
                ("authorization", "Bearer client-key"),
                ("x-api-key", "client-key"),
                ("accept-encoding", "gzip, br"),
                ("x-ai-proxy-cluster", "evil"),
            ],
            bytes.as_bytes(),
        );
        assert_eq!(
            self.on(Input::RequestHeaders {
                end_of_stream: false
            }),
            Step::Pause
        );
        self.on(Input::RequestBody {
            size: bytes.len(),
            end_of_stream: true,
        })
    }

    /// The route's answer: headers (with `code_details` for Envoy's own replies), then the
    /// whole body in one chunk. Returns both steps.
    fn respond(
        &mut self,
        status: u32,
        details: Option<&str>,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (Step, Step) {
        let status_text = status.to_string();
        let mut h = vec![(":status", status_text.as_str())];
        h.extend_from_slice(headers);
        self.host.set_response(&h, body);
        if let Some(d) = details {
            self.host
                .set_property("response.code_details", d.as_bytes());
        }
        let head = self.on(Input::ResponseHeaders {
            end_of_stream: false,
        });
        let size = self.host.response_body.borrow().len();
        let rest = self.on(Input::ResponseBody {
            size,
            end_of_stream: true,
        });
        (head, rest)
    }

    /// The answer to the last callout.
    fn callout_answer(&mut self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        let status_text = status.to_string();
        let mut h = vec![(":status", status_text.as_str())];
        h.extend_from_slice(headers);
        self.host.set_callout_answer(&h, body);
        let token = self.host.last_token();
        self.on(Input::CalloutAnswer {
            token,
            body_size: body.len(),
        });
    }

    fn sent(&self, name: &str) -> Option<String> {
        self.host.header(Map::Request, name)
    }

    fn reply(&self) -> (u32, Value, Vec<(String, String)>) {
        let replies = self.host.replies.borrow();
        let r = replies.last().expect("a local reply");
        let body = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        (r.status, body, r.headers.clone())
    }

    fn used(&self, instance: &str, consumer: Option<&str>, window: u64) -> u64 {
        let key = local::set_key(&self.plugin.scope, consumer);
        let slot = self
            .plugin
            .config
            .instances
            .iter()
            .position(|i| i.name == instance)
            .expect("an instance of the configuration");
        let at = local::At { key: &key, slot };
        local::read(&self.host.store, at, NOW_MS / 1000, window).used
    }
}

fn chat() -> Value {
    json!({"model": "client-model", "messages": [{"role": "user", "content": "hi"}]})
}

fn answer(prompt: u64, completion: u64) -> Vec<u8> {
    json!({"id": "x", "model": "served-model", "choices": [{"message": {"content": "ok"}}],
           "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                     "total_tokens": prompt + completion}})
    .to_string()
    .into_bytes()
}

fn instance(name: &str, extra: Value) -> Value {
    let mut v = json!({
        "name": name, "provider": "openai-compatible",
        "override": {"endpoint": format!("http://{name}.internal/v1/chat/completions")},
        "auth": {"header": {"Authorization": format!("Bearer key-{name}")}},
        "options": {"model": format!("model-{name}")}
    });
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    v
}

fn two(extra: Value) -> Value {
    let mut v = json!({
        "fallback_strategy": ["http_429", "http_5xx"],
        "instances": [instance("a", json!({"priority": 1})), instance("b", json!({}))]
    });
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    v
}

#[test]
fn one_provider_forwards_shaped_and_accounts_for_the_answer() {
    let mut t = T::new(json!({"provider": "openai",
        "auth": {"header": {"Authorization": "Bearer sk-conf"}},
        "options": {"model": "gpt-4o"}, "timeout": 5000}));
    assert_eq!(t.request(&chat()), Step::Continue);
    // The client's routing header went first; the filter's is the one the route sees.
    assert_eq!(t.sent("x-ai-proxy-cluster").as_deref(), Some("openai"));
    assert_eq!(t.sent(":authority").as_deref(), Some("api.openai.com"));
    assert_eq!(t.sent(":path").as_deref(), Some("/v1/chat/completions"));
    assert_eq!(t.sent("authorization").as_deref(), Some("Bearer sk-conf"));
    assert_eq!(
        t.sent("x-api-key"),
        None,
        "client credentials stay with the gateway"
    );
    assert_eq!(
        t.sent("accept-encoding"),
        None,
        "the answer must be readable"
    );
    assert_eq!(
        t.sent("x-envoy-upstream-rq-timeout-ms").as_deref(),
        Some("5000")
    );
    let sent: Value = serde_json::from_slice(&t.host.request_body.borrow()).unwrap();
    assert_eq!(sent["model"], "gpt-4o");
    assert_eq!(
        t.sent("content-length"),
        Some(t.host.request_body.borrow().len().to_string())
    );
    let (head, body) = t.respond(
        200,
        None,
        &[("content-type", "application/json")],
        &answer(12, 5),
    );
    assert_eq!((head, body), (Step::Continue, Step::Continue));
    assert!(t.host.replies.borrow().is_empty());
    t.on(Input::Log);
    for (k, v) in [
        ("llm_api", "chat"),
        ("llm_error_code", "-"),
        ("request_type", "ai_chat"),
        ("request_llm_model", "client-model"),
        ("llm_model", "served-model"),
        ("llm_instance", "openai"),
        ("llm_attempts", "1"),
        ("llm_prompt_tokens", "12"),
        ("llm_completion_tokens", "5"),
        ("llm_total_tokens", "17"),
    ] {
        assert_eq!(t.host.state(k).as_deref(), Some(v), "{k}");
    }
    let tokens = "aiproxy.instance.openai.model.served-model.token_type.input.tokens_total";
    assert_eq!(t.host.counter(tokens), 12);
    let requests = "aiproxy.instance.openai.model.served-model.status_class.2xx.requests_total";
    assert_eq!(t.host.counter(requests), 1);
}

#[test]
fn first_attempt_503_then_b_serves_and_only_b_is_charged_once() {
    let mut t = T::new(two(json!({
        "rate_limiting": {"limit": 1000, "time_window": 60}})));
    t.request(&chat());
    assert_eq!(t.sent("x-ai-proxy-cluster").as_deref(), Some("a"));
    let (head, body) = t.respond(
        503,
        Some("via_upstream"),
        &[("content-type", "application/json")],
        b"{\"error\":{}}",
    );
    assert_eq!(
        (head, body),
        (Step::Pause, Step::Pause),
        "the failed answer is held"
    );
    let callouts = t.host.callouts.borrow().clone();
    assert_eq!(callouts.len(), 1);
    let call = &callouts[0].1;
    assert_eq!(call.cluster, "b");
    assert!(call
        .headers
        .contains(&("authorization".into(), "Bearer key-b".into())));
    assert!(call
        .headers
        .contains(&(":authority".into(), "b.internal".into())));
    let sent: Value = serde_json::from_slice(call.body.as_deref().unwrap()).unwrap();
    assert_eq!(
        sent["model"], "model-b",
        "shaped for b from the client's body"
    );
    t.callout_answer(
        200,
        &[("content-type", "application/json"), ("x-served-by", "b")],
        &answer(10, 4),
    );
    let (status, body, headers) = t.reply();
    assert_eq!(status, 200);
    assert_eq!(body["usage"]["total_tokens"], 14);
    assert!(headers.contains(&("x-served-by".into(), "b".into())));
    assert!(headers
        .iter()
        .any(|(n, v)| n == "x-ai-ratelimit-remaining-b" && v == "1000"));
    // The reply passes through the response callbacks: nothing more is metered or charged.
    t.respond(
        200,
        None,
        &[("content-type", "application/json")],
        &answer(99, 99),
    );
    t.on(Input::Log);
    assert_eq!(t.host.state("llm_instance").as_deref(), Some("b"));
    assert_eq!(t.host.state("llm_attempts").as_deref(), Some("2"));
    assert_eq!(
        t.host.state("llm_fallback_reason").as_deref(),
        Some("http_503")
    );
    assert_eq!(t.host.state("llm_total_tokens").as_deref(), Some("14"));
    assert_eq!((t.used("a", None, 60), t.used("b", None, 60)), (0, 14));
    assert_eq!(
        t.host
            .counter("aiproxy.instance.a.reason.http_503.fallbacks_total"),
        1
    );
}

#[test]
fn every_instance_429_gives_429_with_the_largest_retry_after() {
    let mut t = T::new(json!({
        "fallback_strategy": "http_429",
        "instances": [instance("a", json!({"priority": 2})), instance("b", json!({"priority": 1})),
                      instance("c", json!({}))]}));
    t.request(&chat());
    t.respond(429, None, &[("retry-after", "3")], b"{}");
    t.callout_answer(429, &[("retry-after", "9")], b"{}");
    t.callout_answer(429, &[("retry-after", "5")], b"{}");
    let (status, body, headers) = t.reply();
    assert_eq!(status, 429);
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert!(headers.contains(&("retry-after".into(), "9".into())));
    assert_eq!(t.host.state("llm_attempts").as_deref(), Some("3"));
    assert_eq!(
        t.host.state("llm_fallback_reason").as_deref(),
        Some("http_429,http_429,http_429")
    );
    assert_eq!(t.host.state("llm_instance").as_deref(), Some("c"));
}

#[test]
fn all_failed_gives_502_with_the_last_answer() {
    let mut t = T::new(two(json!({})));
    t.request(&chat());
    t.respond(500, Some("via_upstream"), &[], b"first");
    t.callout_answer(503, &[("content-type", "text/plain")], b"last words");
    let (status, _, headers) = t.reply();
    assert_eq!(status, 502);
    assert_eq!(t.host.replies.borrow()[0].body, b"last words");
    assert_eq!(
        headers,
        vec![("content-type".to_string(), "text/plain".to_string())]
    );
    assert_eq!(
        t.host.state("llm_instance").as_deref(),
        Some("b"),
        "the last tried"
    );
    assert_eq!(t.host.state("llm_error_code").as_deref(), Some("http_503"));
}

#[test]
fn envoys_timeout_and_refused_connection_become_json_errors() {
    for (status, details, code) in [
        (504, "response_timeout", "upstream_timeout"),
        (
            503,
            "upstream_reset_before_response_started{remote_connection_failure}",
            "upstream_unavailable",
        ),
        (503, "no_healthy_upstream", "upstream_unavailable"),
        (503, "cluster_not_found", "upstream_unavailable"),
    ] {
        let mut t = T::new(json!({"provider": "openai"}));
        t.request(&chat());
        let (head, body) = t.respond(
            status,
            Some(details),
            &[("content-type", "text/plain"), ("content-length", "9")],
            b"plain txt",
        );
        assert_eq!((head, body), (Step::Continue, Step::Continue));
        assert_eq!(
            t.host.header(Map::Response, "content-type").as_deref(),
            Some("application/json")
        );
        assert_eq!(t.host.header(Map::Response, "content-length"), None);
        let v: Value = serde_json::from_slice(&t.host.response_body.borrow()).unwrap();
        assert_eq!(v["error"]["code"], code, "{details}");
        if details == "cluster_not_found" {
            let msg = v["error"]["message"].as_str().unwrap();
            assert!(msg.contains("cluster does not exist"), "{msg}");
        }
    }
}

#[test]
fn fallback_reasons_name_what_envoy_said() {
    for (details, reason) in [
        ("no_healthy_upstream", "no_healthy_upstream"),
        ("cluster_not_found", "cluster_not_found"),
        ("response_timeout", "timeout"),
        (
            "upstream_reset_before_response_started{connection_failure}",
            "connect_failure",
        ),
    ] {
        let mut t = T::new(two(json!({})));
        t.request(&chat());
        t.respond(503, Some(details), &[], b"");
        t.callout_answer(200, &[("content-type", "application/json")], &answer(1, 1));
        assert_eq!(
            t.host.state("llm_fallback_reason").as_deref(),
            Some(reason),
            "{details}"
        );
    }
}

#[test]
fn quota_headers_follow_show_limit_quota_header() {
    for show in [true, false] {
        let mut t = T::new(json!({"provider": "openai",
            "rate_limiting": {"limit": 30, "time_window": 60, "show_limit_quota_header": show}}));
        for remaining in ["30", "20", "10"] {
            t.next();
            t.request(&chat());
            t.respond(
                200,
                None,
                &[("content-type", "application/json")],
                &answer(6, 4),
            );
            let shown = t
                .host
                .header(Map::Response, "x-ai-ratelimit-remaining-openai");
            assert_eq!(shown.as_deref(), show.then_some(remaining));
            assert_eq!(
                t.host
                    .header(Map::Response, "x-ai-ratelimit-limit-openai")
                    .is_some(),
                show
            );
        }
        t.next();
        t.request(&chat());
        let (status, body, headers) = t.reply();
        assert_eq!(status, 429);
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
        assert!(headers.iter().any(|(n, _)| n == "retry-after"));
        assert_eq!(
            headers
                .iter()
                .any(|(n, _)| n.starts_with("x-ai-ratelimit-")),
            show
        );
        assert_eq!(
            t.host
                .counter("aiproxy.instance.openai.ratelimit_rejections_total"),
            1
        );
    }
}

#[test]
fn streams_are_charged_once_at_the_end_and_the_usage_event_hidden() {
    let mut t = T::new(json!({"provider": "openai",
        "rate_limiting": {"limit": 1000, "time_window": 60}}));
    let mut body = chat();
    body["stream"] = json!(true);
    t.request(&body);
    let sent: Value = serde_json::from_slice(&t.host.request_body.borrow()).unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true);
    assert_eq!(
        t.sent("x-envoy-upstream-rq-timeout-ms").as_deref(),
        Some("0")
    );
    t.host.set_response(
        &[(":status", "200"), ("content-type", "text/event-stream")],
        b"",
    );
    t.on(Input::ResponseHeaders {
        end_of_stream: false,
    });
    let events = [
        "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\n",
        "data: [DONE]\n\n",
    ];
    let mut client = Vec::new();
    for (i, e) in events.iter().enumerate() {
        *t.host.response_body.borrow_mut() = e.as_bytes().to_vec();
        t.on(Input::ResponseBody {
            size: e.len(),
            end_of_stream: i == events.len() - 1,
        });
        client.extend(t.host.response_body.borrow().iter());
        assert_eq!(t.used("openai", None, 60), if i == 2 { 5 } else { 0 });
    }
    assert!(!String::from_utf8(client).unwrap().contains("usage"));
    t.on(Input::Log);
    assert_eq!(t.used("openai", None, 60), 5, "charged exactly once");
    assert_eq!(t.host.state("request_type").as_deref(), Some("ai_stream"));
}

#[test]
fn a_callout_answer_after_the_client_left_changes_nothing() {
    let mut t = T::new(two(
        json!({"rate_limiting": {"limit": 1000, "time_window": 60}}),
    ));
    t.request(&chat());
    t.respond(503, Some("via_upstream"), &[], b"");
    assert_eq!(t.host.callouts.borrow().len(), 1);
    t.on(Input::Log);
    t.callout_answer(200, &[("content-type", "application/json")], &answer(10, 4));
    assert!(t.host.replies.borrow().is_empty());
    assert_eq!(t.used("b", None, 60), 0);
    // A stale token never matches either.
    let mut t = T::new(two(json!({})));
    t.request(&chat());
    t.respond(503, Some("via_upstream"), &[], b"");
    t.host.set_callout_answer(&[(":status", "200")], b"{}");
    t.on(Input::CalloutAnswer {
        token: 999,
        body_size: 2,
    });
    assert!(t.host.replies.borrow().is_empty());
}

#[test]
fn a_refused_callout_tries_the_next_and_else_the_route_answer_passes() {
    let cfg = json!({
        "fallback_strategy": "http_5xx",
        "instances": [instance("a", json!({"priority": 2})), instance("b", json!({"priority": 1})),
                      instance("c", json!({}))]});
    let mut t = T::new(cfg.clone());
    t.host.refuse_cluster.borrow_mut().push("b".into());
    t.request(&chat());
    let (head, _) = t.respond(500, Some("via_upstream"), &[], b"");
    assert_eq!(head, Step::Pause);
    let clusters: Vec<String> = t
        .host
        .callouts
        .borrow()
        .iter()
        .map(|c| c.1.cluster.clone())
        .collect();
    assert_eq!(clusters, ["c"]);
    t.callout_answer(200, &[("content-type", "application/json")], &answer(1, 1));
    assert_eq!(t.reply().0, 200);
    assert_eq!(
        t.host.state("llm_fallback_reason").as_deref(),
        Some("http_500,callout_failed")
    );

    // Nothing can be called: the route's own answer goes to the client, as it came.
    let mut t = T::new(cfg);
    t.host
        .refuse_cluster
        .borrow_mut()
        .extend(["b".to_string(), "c".to_string()]);
    t.request(&chat());
    let (head, body) = t.respond(
        500,
        Some("via_upstream"),
        &[("content-type", "application/json")],
        &answer(2, 2),
    );
    assert_eq!((head, body), (Step::Continue, Step::Continue));
    assert!(t.host.replies.borrow().is_empty());
    assert_eq!(t.host.state("llm_total_tokens").as_deref(), Some("4"));
}

#[test]
fn a_request_that_cannot_be_shaped_is_not_sent() {
    let mut t = T::new(json!({"provider": "openai", "auth": {"header": {"api-key": "k"}}}));
    *t.host.fail_request_edit.borrow_mut() = Some(":path".into());
    assert_eq!(t.request(&chat()), Step::Pause);
    let (status, body, _) = t.reply();
    assert_eq!(status, 500);
    assert_eq!(body["error"]["code"], "internal_error");
    assert_eq!(
        t.sent("api-key"),
        None,
        "the edits after the failed one are not applied"
    );
}

#[test]
fn bad_requests_get_openai_errors_before_any_pick() {
    let mut t = T::new(json!({"provider": "openai", "max_req_body_size": 10}));
    t.request(&chat());
    assert_eq!(t.reply().0, 413);
    assert_eq!(
        t.sent("x-ai-proxy-cluster"),
        None,
        "removed even when refused"
    );
    t.next();
    t.host.set_request(&[(":method", "GET")], b"");
    assert_eq!(
        t.on(Input::RequestHeaders {
            end_of_stream: true
        }),
        Step::Pause
    );
    assert_eq!(t.reply().0, 405);
    let mut t = T::new(json!({"provider": "openai"}));
    t.request(&json!({"prompt": "x"}));
    assert_eq!(t.reply().1["error"]["code"], "unknown_request_kind");
    assert_eq!(
        t.host.state("llm_error_code").as_deref(),
        Some("unknown_request_kind")
    );
    t.on(Input::Log);
    let n = "aiproxy.instance.none.model.none.status_class.4xx.requests_total";
    assert_eq!(t.host.counter(n), 1);
}

#[test]
fn unconfigured_fails_closed() {
    let host = FakeHost::default();
    let mut ex = Exchange::new(None);
    let out = ex.on(
        Input::RequestHeaders {
            end_of_stream: false,
        },
        &host,
    );
    host.run(out, |i| ex.on(i, &host));
    assert_eq!(host.replies.borrow()[0].status, 500);
}

/// A quota backend that asks a service about every pick, answering from a script: the
/// deferred admission path, without a real service.
mod asking {
    use super::*;
    use crate::effect::{Callout, Effect, Grpc, Purpose};
    use crate::quota::{Admission, Backend, Check, Ctx, SetId, Verdict};
    use crate::ratelimit::Quota;
    use crate::usage::Usage;

    pub struct Asking {
        pub deny: bool,
    }

    impl Backend for Asking {
        fn admission(&self, q: &Ctx<'_>, _: &dyn Host) -> Admission {
            Admission {
                per_instance: vec![None; q.config.instances.len()],
            }
        }
        fn check(&self, _: &Ctx<'_>, index: usize, _: &dyn Host) -> Check {
            Check::Ask(Callout {
                purpose: Purpose::Quota(index),
                cluster: "rls".into(),
                headers: vec![],
                body: Some(vec![index as u8]),
                timeout_ms: 50,
                grpc: Some(Grpc {
                    service: "svc".into(),
                    method: "Check".into(),
                }),
            })
        }
        fn answer(
            &self,
            _: &Ctx<'_>,
            _: usize,
            status: u32,
            message: &[u8],
            _: &dyn Host,
        ) -> Verdict {
            let quota = |remaining| Quota {
                limit: 30,
                remaining,
                reset_secs: 7,
            };
            match (status, message) {
                (0, b"ok") => Verdict::Admit(Some((quota(20), SetId::Route)), None),
                (0, b"over") => Verdict::Exhausted(quota(0), SetId::Route),
                _ => Verdict::Unknown,
            }
        }
        fn deny_on_failure(&self) -> bool {
            self.deny
        }
        fn settle(
            &self,
            _: &Ctx<'_>,
            _: usize,
            u: &Usage,
            _: Option<&crate::quota::Hold>,
            _: &dyn Host,
        ) -> Vec<Effect> {
            vec![Effect::counter("settled".into(), u.total_tokens)]
        }
        fn start(&self, _: &dyn Host) {}
        fn gauges(&self, _: &crate::config::Config, _: &dyn Host) -> Vec<Effect> {
            Vec::new()
        }
    }
}

impl T {
    fn asking(fallback: bool, deny: bool) -> T {
        let mut cfg = two(json!({"rate_limiting": {"limit": 30, "time_window": 60}}));
        if fallback {
            cfg["fallback_strategy"] = json!(["rate_limiting", "http_5xx"]);
        }
        let raw = cfg.to_string();
        let mut plugin = Plugin::new(config::parse(raw.as_bytes()).unwrap(), b"t", raw.as_bytes());
        plugin.quota = Some(Box::new(asking::Asking { deny }));
        let plugin = Rc::new(plugin);
        T {
            ex: Exchange::new(Some(plugin.clone())),
            host: FakeHost::at_ms(NOW_MS),
            plugin,
        }
    }

    /// The quota service answers the last check.
    fn service_says(&mut self, status: u32, message: &[u8]) -> Step {
        *self.host.grpc_answer.borrow_mut() = message.to_vec();
        let token = self.host.last_token();
        self.on(Input::GrpcAnswer {
            token,
            status,
            size: message.len(),
        })
    }

    fn checked_clusters(&self) -> Vec<u8> {
        let calls = self.host.callouts.borrow();
        calls
            .iter()
            .filter_map(|(_, c)| c.body.as_ref()?.first().copied())
            .collect()
    }
}

#[test]
fn admission_waits_for_the_quota_service_then_resumes_the_request() {
    let mut t = T::asking(true, false);
    assert_eq!(
        t.request(&chat()),
        Step::Pause,
        "held until the service answers"
    );
    assert_eq!(t.sent("x-ai-proxy-cluster"), None);
    assert_eq!(t.checked_clusters(), [0]);
    t.service_says(0, b"ok");
    assert!(t.host.resumed.get());
    assert_eq!(t.sent("x-ai-proxy-cluster").as_deref(), Some("a"));
    assert_eq!(t.sent("authorization").as_deref(), Some("Bearer key-a"));
    t.respond(
        200,
        None,
        &[("content-type", "application/json")],
        &answer(5, 5),
    );
    assert_eq!(
        t.host
            .header(Map::Response, "x-ai-ratelimit-remaining-a")
            .as_deref(),
        Some("20"),
        "the service's count is shown"
    );
    assert_eq!(t.host.counter("settled"), 10);
}

#[test]
fn a_spent_instance_is_skipped_with_fallback_and_rejects_without() {
    let mut t = T::asking(true, false);
    t.request(&chat());
    t.service_says(0, b"over");
    assert_eq!(t.checked_clusters(), [0, 1], "b is asked next");
    assert!(!t.host.resumed.get());
    t.service_says(0, b"ok");
    assert!(t.host.resumed.get());
    assert_eq!(t.sent("x-ai-proxy-cluster").as_deref(), Some("b"));

    let mut t = T::asking(false, false);
    t.request(&chat());
    t.service_says(0, b"over");
    let (status, _, headers) = t.reply();
    assert_eq!(status, 429);
    assert!(headers.contains(&("retry-after".into(), "7".into())));
    assert_eq!(
        t.host
            .counter("aiproxy.instance.a.ratelimit_rejections_total"),
        1
    );
}

#[test]
fn a_service_that_cannot_answer_fails_open_or_refuses() {
    let mut t = T::asking(true, false);
    t.request(&chat());
    t.service_says(14, b"");
    assert!(t.host.resumed.get());
    assert_eq!(t.sent("x-ai-proxy-cluster").as_deref(), Some("a"));

    let mut t = T::asking(true, true);
    t.request(&chat());
    t.service_says(4, b"");
    let (status, body, _) = t.reply();
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "rate_limit_service_unavailable");

    // The service cannot even be called.
    let mut t = T::asking(true, true);
    t.host.refuse_cluster.borrow_mut().push("rls".into());
    t.request(&chat());
    assert_eq!(t.reply().0, 503);
}

#[test]
fn tokens_are_counted_by_consumer_with_a_bounded_label() {
    let mut t = T::new(json!({"provider": "openai"}));
    for i in 0..(crate::metrics::MAX_MODELS + 2) {
        t.next();
        let body = chat().to_string();
        let consumer = format!("team.{i}");
        t.host.set_request(
            &[(":method", "POST"), ("x-consumer", &consumer)],
            body.as_bytes(),
        );
        t.on(Input::RequestHeaders {
            end_of_stream: false,
        });
        t.on(Input::RequestBody {
            size: body.len(),
            end_of_stream: true,
        });
        t.respond(
            200,
            None,
            &[("content-type", "application/json")],
            &answer(3, 2),
        );
    }
    let name = |c: &str, kind: &str| {
        format!("aiproxy.instance.openai.consumer.{c}.token_type.{kind}.consumer_tokens_total")
    };
    assert_eq!(t.host.counter(&name("team_0", "input")), 3);
    assert_eq!(t.host.counter(&name("team_0", "output")), 2);
    assert_eq!(t.host.counter(&name("other", "input")), 6, "past the cap");
}

#[test]
fn a_cut_stream_is_charged_what_was_read_or_an_estimate() {
    let events = [
        "data: {\"choices\":[{\"delta\":{\"content\":\"abcdefgh\"}}]}\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\n",
        "data: [DONE]\n\n",
    ];
    // Cut after the usage event (the client left, or the upstream died): the usage read.
    // Cut before it: prompt from the request's size, completion from the text seen.
    for (sent, want) in [(2, None), (1, Some(2))] {
        let mut t = T::new(json!({"provider": "openai",
            "rate_limiting": {"limit": 100000, "time_window": 60}}));
        let mut body = chat();
        body["stream"] = json!(true);
        t.request(&body);
        let prompt = body.to_string().len().div_ceil(4) as u64;
        t.host.set_response(
            &[(":status", "200"), ("content-type", "text/event-stream")],
            b"",
        );
        t.on(Input::ResponseHeaders {
            end_of_stream: false,
        });
        for e in events.iter().take(sent) {
            *t.host.response_body.borrow_mut() = e.as_bytes().to_vec();
            t.on(Input::ResponseBody {
                size: e.len(),
                end_of_stream: false,
            });
        }
        assert_eq!(t.used("openai", None, 60), 0, "nothing before the end");
        t.on(Input::Log);
        let expected = match want {
            None => 5,
            Some(completion) => prompt + completion,
        };
        assert_eq!(t.used("openai", None, 60), expected, "sent {sent}");
        assert_eq!(t.host.state("llm_total_tokens"), Some(expected.to_string()));
        t.on(Input::Log);
        assert_eq!(t.used("openai", None, 60), expected, "exactly once");
    }
}

#[test]
fn the_access_log_sees_the_clients_path_never_the_rewritten_one() {
    let mut t = T::new(json!({"provider": "openai-compatible",
        "override": {"endpoint": "http://p.internal/v1/chat/completions"},
        "auth": {"query": {"key": "sk-in-query"}}}));
    t.request(&chat());
    assert_eq!(
        t.sent(":path").as_deref(),
        Some("/v1/chat/completions?key=sk-in-query")
    );
    assert_eq!(
        t.sent("x-envoy-original-path").as_deref(),
        Some("/v1/chat/completions")
    );
    assert_eq!(
        t.host.state("llm_client_path").as_deref(),
        Some("/v1/chat/completions")
    );
}

#[test]
fn require_consumer_refuses_requests_no_authenticating_filter_named() {
    let mut t = T::new(json!({"provider": "openai", "require_consumer": true}));
    t.request(&chat());
    let (status, body, _) = t.reply();
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "consumer_required");
    assert_eq!(body["error"]["type"], "authentication_error");
    t.next();
    let bytes = chat().to_string();
    t.host.set_request(
        &[(":method", "POST"), ("x-consumer", "john")],
        bytes.as_bytes(),
    );
    t.on(Input::RequestHeaders {
        end_of_stream: false,
    });
    t.on(Input::RequestBody {
        size: bytes.len(),
        end_of_stream: true,
    });
    assert!(t.host.replies.borrow().is_empty());
    assert_eq!(t.sent("x-ai-proxy-cluster").as_deref(), Some("openai"));
}

#[test]
fn the_path_picks_the_api_and_nothing_goes_to_another_endpoint() {
    let cfg = json!({"provider": "openai", "options": {"model": "gpt-4o"}});
    // A Responses body (`input`) to /v1/responses goes to the Responses endpoint.
    let mut t = T::new(cfg.clone());
    t.request_to(
        "/openai/v1/responses",
        &json!({"input": "hi", "stream": true}),
    );
    assert_eq!(t.sent(":path").as_deref(), Some("/v1/responses"));
    let sent: Value = serde_json::from_slice(&t.host.request_body.borrow()).unwrap();
    assert_eq!(sent["model"], "gpt-4o");
    assert!(
        sent.get("stream_options").is_none(),
        "Responses streams report usage anyway"
    );
    assert_eq!(t.host.state("llm_api").as_deref(), Some("responses"));
    assert_eq!(t.host.state("request_type").as_deref(), Some("ai_stream"));
    // Legacy completions: streamed with usage asked for, as chat.
    let mut t = T::new(cfg.clone());
    t.request_to("/v1/completions", &json!({"prompt": "hi", "stream": true}));
    assert_eq!(t.sent(":path").as_deref(), Some("/v1/completions"));
    let sent: Value = serde_json::from_slice(&t.host.request_body.borrow()).unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true);
    // Moderations, audio: a clear 404, nothing upstream.
    for path in ["/v1/moderations", "/v1/audio/speech"] {
        let mut t = T::new(cfg.clone());
        t.request_to(path, &json!({"input": "hi"}));
        let (status, body, _) = t.reply();
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["error"]["code"], "unsupported_api");
        assert_eq!(t.sent("x-ai-proxy-cluster"), None);
    }
    // A Responses body on a path that names no API is not taken for embeddings.
    let mut t = T::new(cfg);
    t.request_to(
        "/anything",
        &json!({"input": "hi", "instructions": "be brief"}),
    );
    assert_eq!(t.reply().1["error"]["code"], "unknown_request_kind");
}

#[test]
fn an_api_the_provider_lacks_is_a_clear_400() {
    let mut t = T::new(json!({"provider": "deepseek"}));
    t.request_to("/v1/responses", &json!({"input": "hi"}));
    let (status, body, _) = t.reply();
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "unsupported_request_kind");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("responses"));
}

#[test]
fn models_are_answered_by_the_filter() {
    let mut t = T::new(json!({"instances": [
        {"name": "a", "provider": "openai", "options": {"model": "gpt-4o"}},
        {"name": "b", "provider": "deepseek"}]}));
    t.host
        .set_request(&[(":method", "GET"), (":path", "/v1/models")], b"");
    assert_eq!(
        t.on(Input::RequestHeaders {
            end_of_stream: true
        }),
        Step::Pause
    );
    let (status, body, _) = t.reply();
    assert_eq!(status, 200);
    assert_eq!(body["data"][0]["id"], "gpt-4o");
    assert_eq!(body["data"][1]["id"], "deepseek");
    assert_eq!(t.host.state("llm_api").as_deref(), Some("models"));
    // Other methods on models, and GETs elsewhere: 405.
    for (method, path, allow) in [
        ("POST", "/v1/models", "GET"),
        ("GET", "/v1/chat/completions", "POST"),
    ] {
        t.next();
        t.host
            .set_request(&[(":method", method), (":path", path)], b"");
        t.on(Input::RequestHeaders {
            end_of_stream: true,
        });
        let (status, _, headers) = t.reply();
        assert_eq!(status, 405, "{method} {path}");
        assert!(headers.contains(&("allow".into(), allow.into())));
    }
}

/// Anthropic Messages through the whole exchange: translated for an OpenAI instance, the
/// answer translated back, the client's protocol headers left behind.
#[test]
fn a_messages_client_served_by_an_openai_instance() {
    let mut t = T::new(json!({"provider": "openai",
        "auth": {"header": {"Authorization": "Bearer gw"}}}));
    let body = json!({"model": "m", "max_tokens": 9, "system": "Be brief.",
                      "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(t.request_to("/v1/messages", &body), Step::Continue);
    assert_eq!(t.sent(":path").as_deref(), Some("/v1/chat/completions"));
    assert_eq!(t.sent("authorization").as_deref(), Some("Bearer gw"));
    assert_eq!(t.sent("x-api-key"), None);
    let sent: Value = serde_json::from_slice(&t.host.request_body.borrow()).unwrap();
    assert_eq!(
        sent["messages"],
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}])
    );
    t.respond(
        200,
        None,
        &[("content-type", "application/json")],
        &answer(12, 5),
    );
    let got: Value = serde_json::from_slice(&t.host.response_body.borrow()).unwrap();
    assert_eq!(got["type"], "message");
    assert_eq!(got["content"], json!([{"type": "text", "text": "ok"}]));
    assert_eq!(got["usage"]["input_tokens"], 12);
    assert_eq!(got["usage"]["output_tokens"], 5);
    assert_eq!(t.host.header(Map::Response, "content-length"), None);
    t.on(Input::Log);
    assert_eq!(t.host.state("llm_api").as_deref(), Some("messages"));
    assert_eq!(t.host.state("llm_total_tokens").as_deref(), Some("17"));
}

#[test]
fn a_chat_client_served_by_an_anthropic_instance_gets_the_version_header() {
    let mut t = T::new(json!({"provider": "anthropic",
        "auth": {"header": {"x-api-key": "sk-ant"}}}));
    assert_eq!(t.request(&chat()), Step::Continue);
    assert_eq!(t.sent(":path").as_deref(), Some("/v1/messages"));
    assert_eq!(t.sent("x-api-key").as_deref(), Some("sk-ant"));
    assert_eq!(t.sent("anthropic-version").as_deref(), Some("2023-06-01"));
    assert_eq!(t.sent("authorization"), None);
    let sent: Value = serde_json::from_slice(&t.host.request_body.borrow()).unwrap();
    assert_eq!(sent["max_tokens"], 4096);
    // `auth.header` may set the version itself.
    let mut t = T::new(json!({"provider": "anthropic",
        "auth": {"header": {"x-api-key": "k", "anthropic-version": "2024-01-01"}}}));
    t.request(&chat());
    assert_eq!(t.sent("anthropic-version").as_deref(), Some("2024-01-01"));
}

#[test]
fn the_filter_answers_messages_clients_in_anthropic_s_shape() {
    let mut t = T::new(json!({"provider": "openai", "max_req_body_size": 64}));
    let big = json!({"messages": [{"role": "user", "content": "x".repeat(100)}]});
    t.request_to("/v1/messages", &big);
    let (status, body, _) = t.reply();
    assert_eq!(status, 413);
    assert_eq!(
        body,
        json!({"type": "error", "error": {"type": "request_too_large",
            "message": "the request body is larger than the limit of 64 bytes"}})
    );
    // The same error on a chat path is OpenAI's.
    t.next();
    t.request(&big);
    let (_, body, _) = t.reply();
    assert_eq!(body["error"]["code"], "request_too_large");
    // A field with no counterpart: a 400 naming it.
    let mut t = T::new(json!({"provider": "openai"}));
    let body = json!({"max_tokens": 5, "top_k": 1, "messages": []});
    t.request_to("/v1/messages", &body);
    let (status, body, _) = t.reply();
    assert_eq!(status, 400);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("`top_k`"));
}

/// `reserve: "max_tokens"` through the whole exchange: the estimate is held while the
/// request runs, settled to the real usage, given back when no answer comes, and a request
/// whose estimate does not fit is refused (or goes to an instance where it fits).
#[test]
fn reservations_hold_the_estimate_until_the_answer() {
    let mut t = T::new(json!({"provider": "openai",
        "rate_limiting": {"limit": 150, "time_window": 60, "reserve": "max_tokens",
                          "limit_strategy": "completion_tokens"}}));
    let mut body = chat();
    body["max_tokens"] = json!(100);
    assert_eq!(t.request(&body), Step::Continue);
    assert_eq!(t.used("openai", None, 60), 100, "held while it runs");
    t.respond(
        200,
        None,
        &[("content-type", "application/json")],
        &answer(5, 40),
    );
    t.on(Input::Log);
    assert_eq!(t.used("openai", None, 60), 40, "settled to the real usage");
    // 40 + 100 fits in 150; a second 100 then does not: refused, nothing held.
    t.next();
    assert_eq!(t.request(&body), Step::Continue);
    assert_eq!(t.used("openai", None, 60), 140);
    let mut third = Exchange::new(Some(t.plugin.clone()));
    std::mem::swap(&mut t.ex, &mut third);
    t.request(&body);
    assert_eq!(t.reply().0, 429);
    assert_eq!(t.used("openai", None, 60), 140);
    // The second one's client leaves before any answer: its hold goes back.
    std::mem::swap(&mut t.ex, &mut third);
    t.on(Input::Log);
    assert_eq!(t.used("openai", None, 60), 40);
}

#[test]
fn the_estimate_takes_the_largest_bound_given() {
    let c = config::parse(
        json!({"instances": [{"name": "a", "provider": "openai", "options": {"max_tokens": 300}},
                             {"name": "b", "provider": "openai"}],
               "rate_limiting": {"limit": 9999, "time_window": 60, "reserve": "max_tokens",
                                 "default_reserve": 77}})
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let body = br#"{"messages":[{"role":"user","content":"hi"}],"max_completion_tokens":120}"#;
    let req = crate::protocol::read_request(body, &c, None).unwrap();
    let e = admit::estimate(&req, body.len(), &c);
    assert_eq!((e.prompt_tokens, e.completion_tokens), (19, 300));
    let plain = config::parse(
        json!({"provider": "openai", "rate_limiting": {"limit": 9, "time_window": 60,
               "reserve": "max_tokens", "default_reserve": 77}})
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let body = br#"{"messages":[]}"#;
    let req = crate::protocol::read_request(body, &plain, None).unwrap();
    assert_eq!(
        admit::estimate(&req, body.len(), &plain).completion_tokens,
        77
    );
}
