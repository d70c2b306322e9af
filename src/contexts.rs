//! The VM's contexts as the proxy-wasm ABI names them, and which of them a callout's answer
//! goes to: a root context per plugin, one per request under it, and each callout's token
//! owned by the context that was running when it went out. Pure (the host's entry points
//! in `host::entry` hold one of each and call into them), so tested natively.

use rustc_hash::FxHashMap as HashMap;

/// Root contexts (`R`) and request contexts (`H`), by Envoy's ids.
pub struct Contexts<R, H> {
    roots: HashMap<u32, R>,
    requests: HashMap<u32, H>,
}

impl<R, H> Default for Contexts<R, H> {
    fn default() -> Self {
        Contexts {
            roots: HashMap::default(),
            requests: HashMap::default(),
        }
    }
}

impl<R, H> Contexts<R, H> {
    /// A new context: a root when `root_id` is 0, else a request made from its root (`None`
    /// when Envoy names a root this VM does not have: the request must still be answered).
    pub fn create(
        &mut self,
        id: u32,
        root_id: u32,
        new_root: impl FnOnce() -> R,
        new_request: impl FnOnce(Option<&R>) -> H,
    ) {
        if root_id == 0 {
            self.roots.insert(id, new_root());
        } else {
            let request = new_request(self.roots.get(&root_id));
            self.requests.insert(id, request);
        }
    }

    pub fn root(&mut self, id: u32) -> Option<&mut R> {
        self.roots.get_mut(&id)
    }

    pub fn request(&mut self, id: u32) -> Option<&mut H> {
        self.requests.get_mut(&id)
    }

    /// Envoy is done with the context `id`.
    pub fn delete(&mut self, id: u32) {
        if self.requests.remove(&id).is_none() {
            self.roots.remove(&id);
        }
    }
}

/// Callouts in flight: which context each token answers to.
#[derive(Default)]
pub struct Callouts {
    owners: HashMap<u32, u32>,
    running: u32,
}

impl Callouts {
    /// The context whose callback runs now (its callouts answer to it).
    pub fn running(&mut self, id: u32) {
        self.running = id;
    }

    /// A callout went out from the running context.
    pub fn dispatched(&mut self, token: u32) {
        self.owners.insert(token, self.running);
    }

    /// The context a token's answer goes to, once: an unknown or answered token has none.
    pub fn answered(&mut self, token: u32) -> Option<u32> {
        self.owners.remove(&token)
    }

    /// The context `id` is gone: its callouts will not answer (Envoy cancels them).
    pub fn forget(&mut self, id: u32) {
        self.owners.retain(|_, owner| *owner != id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_and_requests_by_id_and_a_request_without_its_root() {
        let mut c: Contexts<&str, Option<String>> = Contexts::default();
        c.create(1, 0, || "plugin a", |_| panic!("not a request"));
        c.create(
            2,
            1,
            || panic!("not a root"),
            |root| root.map(|r| r.to_string()),
        );
        // A root this VM does not have: the request is made without one.
        c.create(
            3,
            9,
            || panic!("not a root"),
            |root| root.map(|r| r.to_string()),
        );
        assert_eq!(c.root(1), Some(&mut "plugin a"));
        assert_eq!(c.request(2), Some(&mut Some("plugin a".to_string())));
        assert_eq!(c.request(3), Some(&mut None));
        assert!(c.root(2).is_none() && c.request(1).is_none() && c.request(4).is_none());
        c.delete(2);
        assert!(c.request(2).is_none());
        assert!(c.root(1).is_some(), "deleting a request leaves its root");
        c.delete(1);
        assert!(c.root(1).is_none());
        c.delete(7); // unknown: nothing happens
        assert!(c.request(3).is_some());
    }

    #[test]
    fn an_answer_goes_once_to_the_context_that_dispatched_it() {
        let mut c = Callouts::default();
        c.running(1);
        c.dispatched(10);
        c.running(2);
        c.dispatched(11);
        c.dispatched(12);
        assert_eq!(c.answered(11), Some(2));
        assert_eq!(c.answered(11), None, "answered once");
        assert_eq!(c.answered(10), Some(1));
        assert_eq!(c.answered(99), None, "unknown token");
        // A context that goes away takes its callouts with it.
        c.forget(2);
        assert_eq!(c.answered(12), None);
    }
}
