//! Envoy's shared data as the core sees it: a key-value store with compare-and-swap that all
//! VMs of one Envoy share, and the one read-modify-write loop that token counters, passive
//! and active health and the prober lease all go through.

use std::fmt;

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// Another VM wrote first (and, from [`update`], kept winning for every retry).
    CasMismatch,
    /// The host refused the call.
    Unavailable(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::CasMismatch => {
                write!(f, "lost {MAX_CAS_RETRIES} compare-and-swap races in a row")
            }
            StoreError::Unavailable(why) => write!(f, "shared data unavailable: {why}"),
        }
    }
}

/// A shared key-value store with compare-and-swap (Envoy's shared data).
pub trait Store {
    /// The value and its CAS token; `(None, None)` when the key does not exist.
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError>;
    /// Writes when `cas` still matches (`None`: unconditionally).
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError>;
}

/// How many times an update retries after losing a CAS race.
pub const MAX_CAS_RETRIES: usize = 64;

/// Reads `key`, lets `f` compute the new value from the stored one (`None`: nothing to
/// write), and writes it with compare-and-swap, retrying when another VM wrote in between.
/// Returns what `f` returned with the value that was written, or `None` when `f` wrote
/// nothing.
pub fn update<T>(
    store: &dyn Store,
    key: &str,
    mut f: impl FnMut(Option<&[u8]>) -> Option<(Vec<u8>, T)>,
) -> Result<Option<T>, StoreError> {
    for _ in 0..MAX_CAS_RETRIES {
        let (value, cas) = store.get(key)?;
        let Some((next, out)) = f(value.as_deref()) else {
            return Ok(None);
        };
        match store.set(key, &next, cas) {
            Ok(()) => return Ok(Some(out)),
            Err(StoreError::CasMismatch) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::CasMismatch)
}

/// Creates `key` with `value` when it does not exist yet, so that every later write can use
/// compare-and-swap (a write with no CAS token is unconditional and could race).
pub fn seed(store: &dyn Store, key: &str, value: &[u8]) -> Result<(), StoreError> {
    match store.get(key)? {
        (None, _) => store.set(key, value, None),
        _ => Ok(()),
    }
}

/// The stored value, when there is one and it can be read.
pub fn read(store: &dyn Store, key: &str) -> Option<Vec<u8>> {
    store.get(key).ok().and_then(|(v, _)| v)
}

#[cfg(test)]
pub mod mem {
    //! An in-memory store for tests, with a hook that writes between a read and a write the
    //! way another VM would.

    use super::*;
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;

    /// Computes what a rival VM writes from the stored value.
    pub type Rival = Box<dyn Fn(Option<&[u8]>) -> Vec<u8>>;

    #[derive(Default)]
    pub struct Mem {
        data: RefCell<HashMap<String, (Vec<u8>, u32)>>,
        /// How many of the next writes lose a race to `rival`.
        pub interfere: Cell<usize>,
        /// What the rival writes to the key before our write goes in.
        pub rival: RefCell<Option<Rival>>,
        /// Every call fails (the host refused).
        pub down: Cell<bool>,
        /// How many reads were made.
        pub reads: Cell<usize>,
    }

    impl Mem {
        pub fn value(&self, key: &str) -> Option<String> {
            self.data
                .borrow()
                .get(key)
                .map(|(v, _)| String::from_utf8_lossy(v).into_owned())
        }

        pub fn keys(&self) -> Vec<String> {
            let mut k: Vec<String> = self.data.borrow().keys().cloned().collect();
            k.sort();
            k
        }
    }

    impl Store for Mem {
        fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
            self.reads.set(self.reads.get() + 1);
            if self.down.get() {
                return Err(StoreError::Unavailable("down".into()));
            }
            Ok(match self.data.borrow().get(key) {
                Some((v, cas)) => (Some(v.clone()), Some(*cas)),
                None => (None, None),
            })
        }

        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            if self.down.get() {
                return Err(StoreError::Unavailable("down".into()));
            }
            if self.interfere.get() > 0 {
                self.interfere.set(self.interfere.get() - 1);
                if let Some(rival) = self.rival.borrow().as_ref() {
                    let mut d = self.data.borrow_mut();
                    let old = d.get(key).cloned();
                    let v = rival(old.as_ref().map(|(v, _)| v.as_slice()));
                    let c = old.map_or(1, |(_, c)| c + 1);
                    d.insert(key.to_string(), (v, c));
                }
            }
            let mut d = self.data.borrow_mut();
            let current = d.get(key).map(|(_, c)| *c);
            if cas.is_some() && cas != current {
                return Err(StoreError::CasMismatch);
            }
            d.insert(
                key.to_string(),
                (value.to_vec(), current.map_or(1, |c| c + 1)),
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::mem::Mem;
    use super::*;

    fn add(store: &Mem, n: u64) -> Result<Option<u64>, StoreError> {
        update(store, "k", |v| {
            let cur: u64 = v
                .and_then(|b| std::str::from_utf8(b).ok()?.parse().ok())
                .unwrap_or(0);
            let next = cur + n;
            Some((next.to_string().into_bytes(), next))
        })
    }

    #[test]
    fn update_retries_lost_races_and_keeps_both_writes() {
        let m = Mem::default();
        seed(&m, "k", b"0").unwrap();
        *m.rival.borrow_mut() = Some(Box::new(|v| {
            let cur: u64 = std::str::from_utf8(v.unwrap()).unwrap().parse().unwrap();
            (cur + 5).to_string().into_bytes()
        }));
        m.interfere.set(2);
        assert_eq!(add(&m, 1), Ok(Some(11)));
        assert_eq!(m.value("k").as_deref(), Some("11"));
    }

    #[test]
    fn update_gives_up_with_a_typed_error() {
        let m = Mem::default();
        seed(&m, "k", b"0").unwrap();
        *m.rival.borrow_mut() = Some(Box::new(|_| b"9".to_vec()));
        m.interfere.set(MAX_CAS_RETRIES);
        assert_eq!(add(&m, 1), Err(StoreError::CasMismatch));
        m.down.set(true);
        assert!(matches!(add(&m, 1), Err(StoreError::Unavailable(_))));
    }

    #[test]
    fn no_change_writes_nothing_and_seed_keeps_existing_values() {
        let m = Mem::default();
        assert_eq!(update(&m, "k", |_| None::<(Vec<u8>, ())>), Ok(None));
        assert!(m.keys().is_empty());
        seed(&m, "k", b"1").unwrap();
        seed(&m, "k", b"2").unwrap();
        assert_eq!(read(&m, "k"), Some(b"1".to_vec()));
    }
}
