//! The effect interpreter (`drive`), and what it keeps per context to spare host calls,
//! which cost several times what Envoy's work behind them does: the request's header map as
//! read and edited, so that a callback's header edits become one write of the whole map, and
//! the filter state already written, so that the same value is not written twice. Pure
//! (the host is behind the `Apply` trait), so it is tested natively.

use std::cell::RefCell;
use std::collections::VecDeque;

use crate::effect::{Effect, Input, Map, Out, Step};
use crate::headers::Edit;
pub use crate::headers::Headers;

/// Whether an effect edits the request's header map.
pub fn is_request_edit(effect: &Effect) -> bool {
    matches!(
        effect,
        Effect::SetHeader(Map::Request, ..) | Effect::RemoveHeader(Map::Request, _)
    )
}

/// A request-header edit as the map's edit (Envoy's: a set replaces every value of the
/// name with one, last; a remove drops every value); `None` for any other effect.
fn edit(effect: &Effect) -> Option<Edit<'_>> {
    match effect {
        Effect::SetHeader(Map::Request, name, value) => Some(Edit::Set(name, value)),
        Effect::RemoveHeader(Map::Request, name) => Some(Edit::Remove(name)),
        _ => None,
    }
}

/// Takes the request-header edits out of `effects` when there are at least two and the map
/// is known: the map they make, to be written at once (the other effects stay, in order).
/// `None`: nothing to fold (the edits stay and go one by one).
pub fn fold(effects: &mut Vec<Effect>, map: Option<&Headers>) -> Option<Headers> {
    let map = map?;
    if effects.iter().filter(|e| is_request_edit(e)).count() < 2 {
        return None;
    }
    let out = map.edited(effects.iter().filter_map(edit));
    effects.retain(|e| !is_request_edit(e));
    Some(out)
}

/// What the host does with the core's effects.
pub trait Apply {
    /// Applies one effect; returns the feedback it calls for.
    fn apply(&self, effect: &Effect) -> Result<Option<Input>, String>;
    /// Replaces the request's whole header map.
    fn set_request_headers(&self, map: &Headers) -> Result<(), String>;
}

/// Applies the core's answer, feeding back (through `again`) what the effects call for once
/// their batch is applied; returns the last step. A callback's request-header edits are one
/// write of the kept map; a filter-state value already written is not written again; a
/// failed required effect ends its batch and is fed back as `Input::Failed`.
pub fn drive(
    out: Out,
    host: &dyn Apply,
    kept: &RefCell<Kept>,
    mut again: impl FnMut(Input) -> Out,
) -> Step {
    let mut step = out.step;
    let mut effects = out.effects;
    let mut queue = VecDeque::new();
    loop {
        effects.retain(crate::ablate::applies);
        let folded = fold(&mut effects, kept.borrow().request.as_ref());
        if let Some(map) = folded {
            match host.set_request_headers(&map) {
                Ok(()) => kept.borrow_mut().request = Some(map),
                // Required: none of the batch applies.
                Err(why) => {
                    queue.push_back(Input::Failed(why));
                    effects.clear();
                }
            }
        }
        for e in effects {
            if !kept.borrow_mut().needed(&e) {
                continue;
            }
            match host.apply(&e) {
                Ok(feedback) => {
                    if let Effect::FilterState(name, value) = e {
                        kept.borrow_mut().wrote(name, value);
                    }
                    queue.extend(feedback);
                }
                Err(why) if e.required() => {
                    queue.push_back(Input::Failed(why));
                    break;
                }
                Err(why) => log::debug!("envoy-ai-proxy: effect not applied: {why}"),
            }
        }
        let Some(input) = queue.pop_front() else {
            return step;
        };
        let out = again(input);
        step = out.step;
        effects = out.effects;
    }
}

/// Per context: the request map (once read) and the filter state written so far.
#[derive(Debug, Default)]
pub struct Kept {
    pub request: Option<Headers>,
    states: Vec<(&'static str, String)>,
}

impl Kept {
    /// Whether an effect must reach the host: not a filter-state value already written.
    /// A request-header edit about to be applied one by one is applied to the kept map.
    pub fn needed(&mut self, effect: &Effect) -> bool {
        if let Effect::FilterState(name, value) = effect {
            return !self.states.iter().any(|(n, v)| n == name && v == value);
        }
        if let (Some(map), Some(edit)) = (self.request.as_mut(), edit(effect)) {
            *map = map.edited([edit]);
        }
        true
    }

    /// A filter-state value was written.
    pub fn wrote(&mut self, name: &'static str, value: String) {
        self.states.retain(|(n, _)| *n != name);
        self.states.push((name, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::pairs;

    #[test]
    fn edits_fold_into_the_map_envoy_would_have() {
        let map = Headers::from_pairs(&[
            (":path", "/v1/chat/completions"),
            (":authority", "gw"),
            ("accept-encoding", "gzip"),
            ("x-tag", "1"),
            ("x-tag", "2"),
            ("authorization", "Bearer client"),
        ]);
        let set = |n: &str, v: &str| Effect::SetHeader(Map::Request, n.into(), v.into());
        let mut effects = vec![
            set("x-ai-proxy-cluster", "openai"),
            Effect::state("llm_model", "m"),
            set(":authority", "api.openai.com"),
            Effect::RemoveHeader(Map::Request, "accept-encoding".into()),
            set("x-tag", "3"),
            Effect::SetHeader(Map::Response, "x-r".into(), "1".into()),
            set("authorization", "Bearer sk"),
        ];
        let folded = fold(&mut effects, Some(&map)).unwrap();
        assert_eq!(
            folded.to_pairs(),
            pairs(&[
                (":path", "/v1/chat/completions"),
                ("x-ai-proxy-cluster", "openai"),
                (":authority", "api.openai.com"),
                ("x-tag", "3"),
                ("authorization", "Bearer sk"),
            ])
        );
        // What is not a request-header edit stays, in order.
        assert_eq!(
            effects,
            vec![
                Effect::state("llm_model", "m"),
                Effect::SetHeader(Map::Response, "x-r".into(), "1".into()),
            ]
        );
    }

    #[test]
    fn a_value_already_written_is_not_written_again() {
        let mut kept = Kept::default();
        let model = |m: &str| Effect::state("llm_model", m);
        assert!(kept.needed(&model("a")));
        kept.wrote("llm_model", "a".into());
        assert!(!kept.needed(&model("a")));
        assert!(kept.needed(&model("b")));
        kept.wrote("llm_model", "b".into());
        assert!(kept.needed(&model("a")));
        assert!(kept.needed(&Effect::state("llm_api", "b")));
        // Header edits always go, and keep the map up to date.
        kept.request = Some(Headers::from_pairs(&[("a", "1")]));
        assert!(kept.needed(&Effect::RemoveHeader(Map::Request, "a".into())));
        assert_eq!(kept.request, Some(Headers::default()));
    }

    /// A host that records what it was asked to do and fails effects named in `fail`.
    #[derive(Default)]
    struct Recorder {
        done: RefCell<Vec<String>>,
        fail: Vec<&'static str>,
    }

    impl Apply for Recorder {
        fn apply(&self, effect: &Effect) -> Result<Option<Input>, String> {
            let what = format!("{effect:?}");
            if self.fail.iter().any(|f| what.contains(f)) {
                return Err(format!("refused {f}", f = self.fail.join(",")));
            }
            self.done.borrow_mut().push(what);
            Ok(match effect {
                Effect::Resume => Some(Input::Log),
                _ => None,
            })
        }
        fn set_request_headers(&self, map: &Headers) -> Result<(), String> {
            self.done.borrow_mut().push(format!("map {map:?}"));
            Ok(())
        }
    }

    fn set(n: &str, v: &str) -> Effect {
        Effect::SetHeader(Map::Request, n.into(), v.into())
    }

    #[test]
    fn drive_writes_the_map_once_and_each_state_value_once_and_feeds_back() {
        let host = Recorder::default();
        let kept = RefCell::new(Kept {
            request: Some(Headers::from_pairs(&[(":path", "/")])),
            ..Kept::default()
        });
        let mut fed = Vec::new();
        let out = Out::hold(vec![
            set("a", "1"),
            Effect::state("llm_model", "m"),
            set("b", "2"),
            Effect::Resume,
        ]);
        let step = drive(out, &host, &kept, |input| {
            fed.push(input);
            Out::go(vec![
                Effect::state("llm_model", "m"),
                Effect::state("llm_api", "chat"),
            ])
        });
        assert_eq!(step, Step::Continue, "the last answer's step");
        assert_eq!(fed, [Input::Log]);
        let done = host.done.borrow();
        assert_eq!(done.len(), 4, "{done:?}");
        assert!(done[0].starts_with("map ") && done[0].contains("\"b\""));
        assert!(done[1].contains("llm_model"));
        assert_eq!(done[2], "Resume");
        assert!(
            done[3].contains("llm_api"),
            "the repeated llm_model is not written again"
        );
        assert_eq!(kept.borrow().request.as_ref().map(Headers::len), Some(3));
    }

    #[test]
    fn a_failed_required_effect_ends_its_batch_and_is_fed_back() {
        let host = Recorder {
            fail: vec!["ReplaceBody"],
            ..Recorder::default()
        };
        let kept = RefCell::new(Kept::default());
        let mut fed = Vec::new();
        let out = Out::hold(vec![
            Effect::counter("c".into(), 1),
            Effect::ReplaceBody {
                map: Map::Request,
                size: 1,
                bytes: vec![b'x'],
            },
            Effect::Resume,
        ]);
        let step = drive(out, &host, &kept, |input| {
            fed.push(input);
            Out::hold(Vec::new())
        });
        assert_eq!(step, Step::Pause);
        assert!(matches!(fed.as_slice(), [Input::Failed(why)] if why.contains("refused")));
        let done = host.done.borrow();
        assert_eq!(done.len(), 1, "nothing after the failed body: {done:?}");
        // An optional effect that fails is skipped, the batch goes on.
        let host = Recorder {
            fail: vec!["Metric"],
            ..Recorder::default()
        };
        let out = Out::go(vec![Effect::counter("c".into(), 1), Effect::Resume]);
        drive(out, &host, &kept, |_| Out::go(Vec::new()));
        assert_eq!(*host.done.borrow(), ["Resume"]);
    }

    #[test]
    fn a_single_edit_or_an_unknown_map_is_left_alone() {
        let map = Headers::from_pairs(&[(":path", "/")]);
        let one = vec![Effect::RemoveHeader(Map::Request, "x".into())];
        let mut effects = one.clone();
        assert_eq!(fold(&mut effects, Some(&map)), None);
        assert_eq!(effects, one);
        let two = vec![one[0].clone(), one[0].clone()];
        let mut effects = two.clone();
        assert_eq!(fold(&mut effects, None), None);
        assert_eq!(effects, two);
    }
}
