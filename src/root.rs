//! The root context's work, as values: the configuration (parsed once per VM, its shared
//! state seeded before traffic), the tick (probes from the lease holder, health and token
//! gauges), and the answers to probes.

use std::rc::Rc;

use crate::config::{self, ConfigError};
use crate::effect::{Effect, Host, Input, Out, Purpose};
use crate::exchange::Plugin;
use crate::health::{prober, shared};

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
        let config = config::parse(raw)?;
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
            shared::seed(&plugin.config, &plugin.scope, store);
        }
        if active {
            prober::Prober::seed(&plugin.scope, store);
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
            out.extend(prober.tick(&p.config, &p.scope, store, now_ms));
        }
        out.extend(shared::gauges(&p.config, &p.scope, store, now_ms));
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
            } => prober.dispatched(index, result, &p.config, &p.scope, host.store()),
            Input::CalloutAnswer { token, body_size } => {
                // The status and the start of the body are enough to classify a probe.
                let (headers, body) = host.callout_answer(body_size.min(256));
                let status = headers
                    .iter()
                    .find(|(n, _)| n == ":status")
                    .and_then(|(_, v)| v.parse::<u32>().ok())
                    .unwrap_or(0);
                prober.answer(token, status, &body, &p.config, &p.scope, host.store());
            }
            _ => {}
        }
        Out::go(Vec::new())
    }
}
