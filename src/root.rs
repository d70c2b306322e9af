//! The root context's work, as values: the configuration (parsed once per VM, its shared
//! state seeded before traffic), the tick (probes from the lease holder, health and token
//! gauges), and the answers to probes.

use std::rc::Rc;

use crate::config::{self, ConfigError};
use crate::effect::{Effect, Host, Input, Out, Purpose};
use crate::exchange::Plugin;
use crate::health::{prober, shared};
use crate::metrics::name;
use crate::quota::Ctx;
use crate::usage::Meter;

pub struct Root {
    plugin: Option<Rc<Plugin>>,
    prober: Option<prober::Prober>,
    /// This VM's identity (the prober lease).
    id: String,
}

impl Root {
    pub fn new(id: String) -> Root {
        Root {
            plugin: None,
            prober: None,
            id,
        }
    }

    /// What every request of this VM shares (`None` until configured).
    pub fn plugin(&self) -> Option<Rc<Plugin>> {
        self.plugin.clone()
    }

    /// A (new) plugin configuration. On error the previous one stays and Envoy refuses the
    /// new one.
    pub fn configure(
        &mut self,
        raw: &[u8],
        plugin_name: &[u8],
        host: &dyn Host,
    ) -> Result<Vec<Effect>, ConfigError> {
        let env = |name: &str| host.env(name);
        let config = config::parse_with(raw, config::Secrets::From(&env))?;
        log::info!(
            "envoy-ai-proxy: configured with {} instance(s)",
            config.instances.len()
        );
        // Counters and health belong to this filter configuration: its name and content.
        let plugin = Plugin::new(config, plugin_name, raw);
        let store = host.store();
        // Seeded before any traffic, so every later write has a CAS token.
        if let Some(q) = plugin.quota.as_ref() {
            q.start(host);
        }
        let checks = shared::any(&plugin.config);
        let active = plugin
            .config
            .instances
            .iter()
            .any(|i| i.active_check.is_some());
        if checks {
            shared::seed(&plugin.config, &plugin.health_keys, store);
            shared::seed_generation(&plugin.health_keys, store);
        }
        if active {
            prober::Prober::seed(&plugin.health_keys, store);
        }
        let tick = if active {
            prober::TICK_MS
        } else if checks || plugin.quota.is_some() {
            1000
        } else {
            0
        };
        self.prober = active.then(|| prober::Prober::new(self.id.clone()));
        self.plugin = Some(Rc::new(plugin));
        Ok(if tick > 0 {
            vec![Effect::TickPeriod(tick)]
        } else {
            Vec::new()
        })
    }

    /// Probes due now, and the health and token gauges (every VM writes the same values:
    /// the gauges show the shared counts).
    pub fn tick(&mut self, host: &dyn Host) -> Vec<Effect> {
        let Some(p) = self.plugin.clone() else {
            return Vec::new();
        };
        let now_ms = host.now_ns() / 1_000_000;
        let store = host.store();
        let mut out = Vec::new();
        if let Some(prober) = self.prober.as_mut() {
            out.extend(prober.tick(&p.config, &p.health_keys, store, now_ms));
        }
        out.extend(shared::gauges(&p.config, &p.health_keys, store, now_ms));
        if let Some(q) = p.quota.as_ref() {
            out.extend(q.gauges(&p.config, host));
        }
        out
    }

    /// Feedback on a probe's dispatch, and probe answers.
    pub fn on(&mut self, input: Input, host: &dyn Host) -> Out {
        let (Some(p), Some(prober)) = (self.plugin.clone(), self.prober.as_mut()) else {
            return Out::go(Vec::new());
        };
        match input {
            Input::Dispatched {
                purpose: Purpose::Probe(index),
                result,
            } => prober.dispatched(index, result, &p.config, &p.health_keys, host.store()),
            Input::CalloutAnswer { token, body_size } => {
                let (headers, body) = host.callout_answer(body_size.min(MAX_PROBE_ANSWER));
                let status = headers.status();
                let probed = prober.answer(
                    token,
                    status,
                    &body,
                    &p.config,
                    &p.health_keys,
                    host.store(),
                );
                if let (Some(index), true) = (probed, (200..300).contains(&status)) {
                    return Out::go(probe_usage(&p, index, &body, host));
                }
            }
            _ => {}
        }
        Out::go(Vec::new())
    }
}

/// How much of a probe's answer is read (enough for a tiny chat completion and its usage).
const MAX_PROBE_ANSWER: usize = 64 * 1024;

/// A probe that is a chat request costs tokens: they count as the instance's usage, in the
/// token metrics and its route-level limits.
fn probe_usage(p: &Plugin, index: usize, body: &[u8], host: &dyn Host) -> Vec<Effect> {
    let (Some(inst), true) = (
        p.config.instances.get(index),
        p.config
            .instances
            .get(index)
            .and_then(|i| i.active_check.as_ref())
            .is_some_and(|c| c.body.is_some()),
    ) else {
        return Vec::new();
    };
    let mut meter = Meter::json(false);
    meter.push(body);
    meter.finish();
    let usage = meter.usage();
    let instance = &inst.label;
    let model = p.model_label(meter.model().unwrap_or("probe"));
    let mut out: Vec<Effect> = [
        ("input", usage.prompt_tokens),
        ("output", usage.completion_tokens),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(kind, n)| Effect::counter(name::tokens(instance, &model, kind), n))
    .collect();
    if let Some(q) = p.quota.as_ref() {
        let ctx = Ctx {
            config: &p.config,
            scope: &p.scope,
            consumer: None,
            estimate: None,
        };
        out.extend(q.settle(&ctx, index, &usage, None, host));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::local;
    use crate::testing::FakeHost;

    const CONFIG: &str = r#"{"instances":[
        {"name":"a","provider":"openai-compatible",
         "override":{"endpoint":"http://a.internal/v1/chat/completions"},
         "auth":{"query":{"key":"s3cr t"}},
         "checks":{"active":{"http_path":"/v1/chat/completions?probe=1","http_method":"POST",
                             "http_req_body":{"model":"m","max_tokens":1,
                                              "messages":[{"role":"user","content":"hi"}]}}}},
        {"name":"b","provider":"openai"}],
        "rate_limiting":{"limit":1000,"time_window":60}}"#;

    #[test]
    fn probes_carry_the_auth_query_and_their_tokens_count() {
        let host = FakeHost::at_ms(1_700_000_000_000);
        let mut root = Root::new("me".into());
        let effects = root.configure(CONFIG.as_bytes(), b"p", &host).unwrap();
        assert_eq!(effects, vec![Effect::TickPeriod(prober::TICK_MS)]);
        let out = Out::go(root.tick(&host));
        host.run(out, |i| root.on(i, &host));
        let calls = host.callouts.borrow().clone();
        assert_eq!(calls.len(), 1);
        let (token, call) = &calls[0];
        let header = |n: &str| {
            call.headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(header(":method"), Some("POST"));
        assert_eq!(
            header(":path"),
            Some("/v1/chat/completions?probe=1&key=s3cr%20t")
        );
        assert_eq!(header("content-type"), Some("application/json"));
        let body: serde_json::Value =
            serde_json::from_slice(call.body.as_deref().unwrap()).unwrap();
        assert_eq!(body["max_tokens"], 1);

        let answer = br#"{"model":"m-1","choices":[],"usage":{"prompt_tokens":8,"completion_tokens":1,"total_tokens":9}}"#;
        host.set_callout_answer(&[(":status", "200")], answer);
        let out = root.on(
            Input::CalloutAnswer {
                token: *token,
                body_size: answer.len(),
            },
            &host,
        );
        host.run(out, |i| root.on(i, &host));
        assert_eq!(
            host.counter("aiproxy.instance.a.model.m-1.token_type.input.tokens_total"),
            8
        );
        let scope = &root.plugin().unwrap().scope.clone();
        let key = local::set_key(scope, None);
        let a = local::At { key: &key, slot: 0 };
        assert_eq!(local::read(&host.store, a, 1_700_000_000, 60).used, 9);
        // A probe answer nobody is waiting for is not counted again.
        let out = root.on(
            Input::CalloutAnswer {
                token: *token,
                body_size: answer.len(),
            },
            &host,
        );
        host.run(out, |i| root.on(i, &host));
        assert_eq!(local::read(&host.store, a, 1_700_000_000, 60).used, 9);
    }
}

#[cfg(test)]
mod secret_tests {
    use super::*;
    use crate::testing::FakeHost;

    #[test]
    fn keys_come_from_the_vm_environment() {
        let host = FakeHost::default();
        let cfg = br#"{"provider":"openai","auth":{"header":{"Authorization":"Bearer $env://OPENAI_API_KEY"}}}"#;
        let mut root = Root::new("me".into());
        let err = root.configure(cfg, b"p", &host).unwrap_err();
        assert!(err.message.contains("OPENAI_API_KEY"));
        assert!(root.plugin().is_none(), "refused");
        host.env
            .borrow_mut()
            .insert("OPENAI_API_KEY".into(), "sk-from-env".into());
        root.configure(cfg, b"p", &host).unwrap();
        let p = root.plugin().unwrap();
        assert_eq!(
            p.config.instances[0].auth_headers[0].1,
            "Bearer sk-from-env"
        );
    }
}
