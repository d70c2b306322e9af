//! The request-header edits of one callback as one write of the whole header map: a host
//! call costs several times what Envoy's edit itself does, so the host layer folds a batch's
//! sets and removes into the map it read (kept up to date) and writes it once. Pure, so the
//! folding is tested natively; the host decides when it applies.

use crate::effect::{Effect, Map};

/// A header map as the host reads and writes it: (name, value) pairs in order, names lower
/// case.
pub type Headers = Vec<(String, String)>;

/// Whether an effect edits the request's header map.
pub fn is_request_edit(effect: &Effect) -> bool {
    matches!(
        effect,
        Effect::SetHeader(Map::Request, ..) | Effect::RemoveHeader(Map::Request, _)
    )
}

/// Applies one request-header edit to `map` as Envoy applies it: a set replaces every value
/// of the name with one, last; a remove drops every value. Other effects change nothing.
pub fn apply(map: &mut Headers, effect: &Effect) {
    match effect {
        Effect::SetHeader(Map::Request, name, value) => {
            map.retain(|(n, _)| n != name);
            map.push((name.clone(), value.clone()));
        }
        Effect::RemoveHeader(Map::Request, name) => map.retain(|(n, _)| n != name),
        _ => {}
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
    let mut out = map.clone();
    effects.retain(|e| {
        let edit = is_request_edit(e);
        if edit {
            apply(&mut out, e);
        }
        !edit
    });
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::pairs;

    #[test]
    fn edits_fold_into_the_map_envoy_would_have() {
        let map = pairs(&[
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
            folded,
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
    fn a_single_edit_or_an_unknown_map_is_left_alone() {
        let map = pairs(&[(":path", "/")]);
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
