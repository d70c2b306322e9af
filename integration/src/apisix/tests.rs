//! Unit tests of the APISIX import: what maps to what, and every refusal names its field.

use serde_json::{json, Value};

use super::{convert, Import, Input};
use crate::bootstrap::{KeySource, PathMatch, RouteMatch};

fn input(label: &str, value: Value) -> Input {
    Input {
        label: label.to_string(),
        value,
    }
}

fn multi() -> Value {
    json!({
        "instances": [
            {"name": "openai-instance", "provider": "openai", "weight": 0,
             "auth": {"header": {"Authorization": "Bearer sk-a"}}, "options": {"model": "gpt-4"}},
            {"name": "deepseek-instance", "provider": "deepseek", "weight": 0,
             "auth": {"header": {"Authorization": "Bearer sk-b"}}, "options": {"model": "deepseek-chat"}}
        ]
    })
}

fn route(plugins: Value) -> Input {
    input(
        "route.json",
        json!({"id": "r1", "uri": "/anything", "methods": ["POST"], "plugins": plugins}),
    )
}

fn limit(instance: &str) -> Value {
    json!({"instances": [{"name": instance, "limit": 10, "time_window": 60}]})
}

fn consumer(name: &str, plugins: Value) -> Input {
    input(
        &format!("{name}.json"),
        json!({"username": name, "plugins": plugins}),
    )
}

fn credential(key: &str) -> Input {
    input(
        "cred.json",
        json!({"id": "cred", "plugins": {"key-auth": {"key": key}}}),
    )
}

fn ok(route: Input, rest: Vec<Input>) -> Import {
    convert(&route, &rest).unwrap_or_else(|e| panic!("refused:\n{e}"))
}

/// The refusal messages, joined; panics if the objects were accepted.
fn refused(route: Input, rest: Vec<Input>) -> String {
    match convert(&route, &rest) {
        Ok(i) => panic!("accepted: {}", i.plugin_config),
        Err(e) => e.to_string(),
    }
}

#[test]
fn route_limits_and_consumers_become_the_filter_configuration() {
    let import = ok(
        route(json!({"key-auth": {}, "ai-proxy-multi": multi(),
                     "ai-rate-limiting": limit("deepseek-instance")})),
        vec![
            consumer(
                "johndoe",
                json!({"ai-rate-limiting": limit("openai-instance")}),
            ),
            credential("john-key"),
            consumer(
                "janedoe",
                json!({"key-auth": {"key": "jane-key"}, "ai-rate-limiting": limit("deepseek-instance")}),
            ),
            consumer("bob", json!({"key-auth": {"key": "bob-key"}})),
        ],
    );
    let mut want = multi();
    want["rate_limiting"] = limit("deepseek-instance");
    want["consumers"] = json!([
        {"name": "johndoe", "rate_limiting": limit("openai-instance")},
        {"name": "janedoe", "rate_limiting": limit("deepseek-instance")}
    ]);
    assert_eq!(import.plugin_config, want);
    let keys: Vec<(&str, &str)> = import
        .api_keys
        .iter()
        .map(|(c, k)| (c.as_str(), k.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            ("johndoe", "john-key"),
            ("janedoe", "jane-key"),
            ("bob", "bob-key")
        ]
    );
    assert_eq!(
        import.key_sources,
        [
            KeySource::Header("apikey".into()),
            KeySource::Query("apikey".into())
        ]
    );
    assert_eq!(
        import.route,
        RouteMatch {
            name: Some("r1".into()),
            paths: vec![PathMatch::Exact("/anything".into())],
            methods: vec!["POST".into()],
        }
    );
    // Both levels limit johndoe and janedoe here, unlike APISIX: said, not hidden.
    assert_eq!(import.notes.len(), 2, "{:?}", import.notes);
    assert!(import.notes[0].contains("johndoe"));
}

#[test]
fn key_auth_header_and_query_and_credentials_inside_the_consumer() {
    let import = ok(
        route(
            json!({"key-auth": {"header": "x-key", "query": "k", "hide_credentials": true},
                     "ai-proxy-multi": multi()}),
        ),
        vec![input(
            "alice.json",
            json!({"username": "alice", "desc": "x", "labels": {"team": "a"},
                   "credentials": [{"id": "c1", "plugins": {"key-auth": {"key": "k1"}}},
                                   {"plugins": {"key-auth": {"key": "k2"}}}]}),
        )],
    );
    assert_eq!(
        import.key_sources,
        [
            KeySource::Header("x-key".into()),
            KeySource::Query("k".into())
        ]
    );
    assert_eq!(import.api_keys.len(), 2);
    assert_eq!(import.plugin_config, multi(), "no consumers without limits");
}

#[test]
fn uris_prefixes_and_any_method() {
    let import = ok(
        input(
            "r.json",
            json!({"uris": ["/v1/*", "/chat"], "plugins": {"ai-proxy": {"provider": "openai"}}}),
        ),
        vec![],
    );
    assert_eq!(
        import.route,
        RouteMatch {
            name: None,
            paths: vec![
                PathMatch::Prefix("/v1/".into()),
                PathMatch::Exact("/chat".into())
            ],
            methods: vec![],
        }
    );
    assert!(import.api_keys.is_empty());
}

#[test]
fn an_ai_proxy_limit_may_name_the_instance_as_apisix_does() {
    let import = ok(
        route(json!({"ai-proxy": {"provider": "openai"},
                     "ai-rate-limiting": limit("ai-proxy-openai")})),
        vec![],
    );
    assert_eq!(
        import.plugin_config["rate_limiting"]["instances"][0]["name"],
        "openai"
    );
    let e = refused(
        route(json!({"ai-proxy": {"provider": "openai"}, "ai-rate-limiting": limit("gpt")})),
        vec![],
    );
    assert!(e.contains("plugins.ai-rate-limiting.instances[0].name: `gpt` names no instance: with ai-proxy the one instance is `ai-proxy-openai`"), "{e}");
}

#[test]
fn connection_defaults_are_left_out_other_settings_refused() {
    let mut conf = multi();
    conf["ssl_verify"] = json!(true);
    conf["keepalive"] = json!(true);
    let import = ok(route(json!({"ai-proxy-multi": conf})), vec![]);
    assert_eq!(import.plugin_config, multi());
    let mut conf = multi();
    conf["ssl_verify"] = json!(false);
    conf["keepalive_pool"] = json!(30);
    let e = refused(route(json!({"ai-proxy-multi": conf})), vec![]);
    assert!(
        e.contains("route.json: plugins.ai-proxy-multi.ssl_verify: is an Envoy cluster setting"),
        "{e}"
    );
    assert!(e.contains("plugins.ai-proxy-multi.keepalive_pool"), "{e}");
}

#[test]
fn other_plugins_and_route_fields_are_refused_by_name() {
    let e = refused(
        input(
            "r.json",
            json!({"uri": "/a", "hosts": ["a.com"], "vars": [], "plugins": {
                "ai-proxy-multi": multi(), "limit-count": {"count": 1}, "prometheus": {}}}),
        ),
        vec![],
    );
    for want in [
        "r.json: hosts: matching on the Host",
        "r.json: vars: ",
        "r.json: plugins.limit-count: plugin `limit-count` does not carry over",
        "r.json: plugins.prometheus: plugin `prometheus`",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
    assert_eq!(e.lines().count(), 4, "{e}");
}

#[test]
fn unused_route_fields_are_left_out_with_a_note() {
    let import = ok(
        input(
            "r.json",
            json!({"uri": "/a", "priority": 2, "status": 1,
                   "upstream": {"nodes": {"httpbin.org": 1}, "type": "roundrobin"},
                   "plugins": {"ai-proxy-multi": multi()}}),
        ),
        vec![],
    );
    assert_eq!(import.notes.len(), 2, "{:?}", import.notes);
    let e = refused(
        input(
            "r.json",
            json!({"uri": "/a", "status": 0, "plugins": {"ai-proxy-multi": multi()}}),
        ),
        vec![],
    );
    assert!(e.contains("r.json: status: only an enabled route"), "{e}");
}

#[test]
fn a_consumer_limit_without_a_key_is_refused() {
    let e = refused(
        route(json!({"key-auth": {}, "ai-proxy-multi": multi()})),
        vec![
            consumer(
                "johndoe",
                json!({"ai-rate-limiting": limit("openai-instance")}),
            ),
            consumer("janedoe", json!({"key-auth": {"key": "jane-key"}})),
        ],
    );
    assert_eq!(e, "johndoe.json (consumer `johndoe`): has no key-auth key (in its plugins or a credential after it): it could never be identified, so its ai-rate-limiting would never apply");
}

#[test]
fn consumers_need_key_auth_on_the_route_and_key_auth_needs_consumers() {
    let e = refused(
        route(json!({"ai-proxy-multi": multi()})),
        vec![
            consumer(
                "johndoe",
                json!({"ai-rate-limiting": limit("openai-instance")}),
            ),
            credential("john-key"),
        ],
    );
    assert!(
        e.contains("route.json: plugins: consumers are given but the route has no `key-auth`"),
        "{e}"
    );
    let e = refused(
        route(json!({"key-auth": {}, "ai-proxy-multi": multi()})),
        vec![],
    );
    assert!(
        e.contains("route.json: plugins.key-auth: no consumer is given"),
        "{e}"
    );
}

#[test]
fn a_limit_that_names_no_instance_is_refused() {
    let e = refused(
        route(
            json!({"key-auth": {}, "ai-proxy-multi": multi(), "ai-rate-limiting": limit("openai")}),
        ),
        vec![
            consumer("johndoe", json!({"ai-rate-limiting": limit("gpt-4")})),
            credential("john-key"),
        ],
    );
    assert!(e.contains("route.json: plugins.ai-rate-limiting.instances[0].name: `openai` names no instance of the route's ai-proxy-multi (its instances: openai-instance, deepseek-instance)"), "{e}");
    assert!(e.contains("johndoe.json (consumer `johndoe`): plugins.ai-rate-limiting.instances[0].name: `gpt-4` names no instance"), "{e}");
}

#[test]
fn the_filters_own_refusals_name_the_apisix_field() {
    let mut bad = limit("openai-instance");
    bad["limit_strategy"] = json!("words");
    let e = refused(
        route(json!({"key-auth": {}, "ai-proxy-multi": multi()})),
        vec![
            consumer("janedoe", json!({"ai-rate-limiting": bad})),
            credential("jane-key"),
        ],
    );
    assert!(
        e.starts_with("janedoe.json (consumer `janedoe`): plugins.ai-rate-limiting.limit_strategy: unknown strategy `words`"),
        "{e}"
    );
    let mut conf = multi();
    conf["instances"][1]["provider"] = json!("nope");
    let e = refused(route(json!({"ai-proxy-multi": conf})), vec![]);
    assert!(
        e.starts_with("route.json: plugins.ai-proxy-multi.instances[1].provider"),
        "{e}"
    );
    // Nothing to check limit names against: the filter says why.
    let e = refused(
        route(json!({"ai-proxy-multi": {"instances": "a"}, "ai-rate-limiting": limit("a")})),
        vec![],
    );
    assert!(
        e.starts_with("route.json: plugins.ai-proxy-multi.instances: ") && e.lines().count() == 1,
        "{e}"
    );
    let e = refused(
        route(json!({"ai-proxy-multi": multi(), "ai-rate-limiting": {"limit": 5}})),
        vec![],
    );
    assert!(
        e.starts_with("route.json: plugins.ai-rate-limiting.time_window: is required"),
        "{e}"
    );
}

#[test]
fn keys_are_checked_and_never_echoed() {
    let e = refused(
        route(json!({"key-auth": {}, "ai-proxy-multi": multi()})),
        vec![
            consumer("a", json!({"key-auth": {"key": "secret-1"}})),
            consumer("b", json!({"key-auth": {"key": "secret-1"}})),
            consumer("c", json!({"key-auth": {"key": "$env://KEY"}})),
            consumer("d", json!({"key-auth": {"key": "Bearer x"}})),
        ],
    );
    assert!(
        e.contains("b.json (consumer `b`): key-auth: a key of this consumer is also given to `a`"),
        "{e}"
    );
    assert!(
        e.contains("c.json (consumer `c`): plugins.key-auth.key: is a secret reference"),
        "{e}"
    );
    assert!(
        e.contains("d.json (consumer `d`): plugins.key-auth.key: must not start with `Bearer `"),
        "{e}"
    );
    assert!(!e.contains("secret-1"), "a key was echoed: {e}");
}

#[test]
fn shapes_that_cannot_be_expressed_are_refused() {
    let cases: Vec<(Input, Vec<Input>, &str)> = vec![
        (
            route(json!({"ai-proxy": {"provider": "openai"}, "ai-proxy-multi": multi()})),
            vec![],
            "a route has either ai-proxy or ai-proxy-multi",
        ),
        (
            input("r.json", json!({"uri": "/user/:id", "plugins": {"ai-proxy-multi": multi()}})),
            vec![],
            "r.json: uri: `/user/:id`: only exact paths and a trailing `*`",
        ),
        (
            input("r.json", json!({"uri": "/a", "methods": ["post"], "plugins": {"ai-proxy-multi": multi()}})),
            vec![],
            "r.json: methods[0]: must be one of GET, POST",
        ),
        (
            input("r.json", json!({"uri": "/a", "plugins": {}})),
            vec![],
            "r.json: plugins: the route needs `ai-proxy` or `ai-proxy-multi`",
        ),
        (
            route(json!({"ai-proxy-multi": {"_meta": {"disable": true}}})),
            vec![],
            "route.json: plugins.ai-proxy-multi._meta: APISIX plugin metadata",
        ),
        (
            route(json!({"key-auth": {"hide_credentials": false}, "ai-proxy-multi": multi()})),
            vec![consumer("a", json!({"key-auth": {"key": "k"}}))],
            "route.json: plugins.key-auth.hide_credentials: the key is always removed",
        ),
        (
            route(json!({"key-auth": {"anonymous_consumer": "anon"}, "ai-proxy-multi": multi()})),
            vec![consumer("a", json!({"key-auth": {"key": "k"}}))],
            "route.json: plugins.key-auth.anonymous_consumer: cannot be expressed by Envoy's api_key_auth",
        ),
        (
            route(json!({"key-auth": {}, "ai-proxy-multi": multi()})),
            vec![credential("k")],
            "cred.json: is a credential (no `username`): it must follow the consumer",
        ),
        (
            route(json!({"key-auth": {}, "ai-proxy-multi": multi()})),
            vec![
                consumer("a", json!({})),
                input("cred.json", json!({"plugins": {"basic-auth": {"username": "a", "password": "p"}}})),
            ],
            "cred.json: plugins.basic-auth: `basic-auth` credentials do not carry over",
        ),
        (
            route(json!({"key-auth": {}, "ai-proxy-multi": multi()})),
            vec![input("a.json", json!({"username": "a", "group_id": "g", "plugins": {"key-auth": {"key": "k"}}}))],
            "a.json (consumer `a`): group_id: consumer groups do not carry over",
        ),
        (
            route(json!({"key-auth": {}, "ai-proxy-multi": multi()})),
            vec![consumer("a", json!({"key-auth": {"key": "k"}, "limit-count": {}}))],
            "a.json (consumer `a`): plugins.limit-count: plugin `limit-count` does not carry over",
        ),
        (
            route(json!({"key-auth": {}, "ai-proxy-multi": multi()})),
            vec![consumer("a", json!({"key-auth": {"key": "k"}})), consumer("a", json!({"key-auth": {"key": "k2"}}))],
            "a.json: username: consumer `a` is given twice",
        ),
        (
            input("c.json", json!({"username": "a"})),
            vec![],
            "c.json: is a consumer (it has `username`): the first file must be the route",
        ),
    ];
    for (route, rest, want) in cases {
        let e = refused(route, rest);
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
}
