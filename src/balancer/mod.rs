//! Picking an instance: priority groups (highest first), and inside a group smooth weighted
//! round robin or consistent hashing (weighted rendezvous). Pure: which instances may be
//! used is a predicate the caller passes (tried, unhealthy, out of quota, wrong kind).

pub mod key;

/// How instances are chosen inside a priority group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    RoundRobin,
    ConsistentHash,
}

#[derive(Debug, Clone, PartialEq)]
struct Member {
    /// Index into the configuration's instances.
    index: usize,
    /// Effective weight; see [`Balancer::new`].
    weight: u64,
    /// Standby members (weight 0 in a group with weighted members) are used only when no
    /// weighted member of the group is available.
    standby: bool,
    name_hash: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Balancer {
    algorithm: Algorithm,
    /// Priority groups, highest priority first; members in configuration order.
    groups: Vec<Vec<Member>>,
    instances: usize,
}

/// What the balancer needs to know of an instance.
#[derive(Debug, Clone, Copy)]
pub struct Slot<'a> {
    pub name: &'a str,
    pub priority: i64,
    pub weight: u32,
}

/// Per-worker smooth round robin state: the current weight of each instance.
#[derive(Debug, Clone, Default)]
pub struct RoundRobin {
    current: Vec<i64>,
}

impl Balancer {
    /// Weight 0 everywhere in a group means equal shares; weight 0 next to weighted members
    /// makes a standby member.
    pub fn new(algorithm: Algorithm, slots: &[Slot<'_>]) -> Balancer {
        let mut priorities: Vec<i64> = slots.iter().map(|s| s.priority).collect();
        crate::sort::sort_small(&mut priorities, |a, b| a > b);
        priorities.dedup();
        let groups = priorities
            .into_iter()
            .map(|p| {
                let in_group: Vec<(usize, &Slot)> = slots
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.priority == p)
                    .collect();
                let all_zero = in_group.iter().all(|(_, s)| s.weight == 0);
                in_group
                    .into_iter()
                    .map(|(index, s)| Member {
                        index,
                        weight: if s.weight == 0 {
                            1
                        } else {
                            u64::from(s.weight)
                        },
                        standby: s.weight == 0 && !all_zero,
                        name_hash: hash_bytes(s.name.as_bytes()),
                    })
                    .collect()
            })
            .collect();
        Balancer {
            algorithm,
            groups,
            instances: slots.len(),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Picks an instance among those `available` says may be used: the highest priority
    /// group with an available member, then round robin or the hash inside it. `hash` is
    /// the request's key hash (consistent hashing only).
    pub fn pick(
        &self,
        rr: &mut RoundRobin,
        hash: u64,
        available: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        for group in &self.groups {
            for standby in [false, true] {
                let tier: Vec<&Member> = group
                    .iter()
                    .filter(|m| m.standby == standby && available(m.index))
                    .collect();
                if tier.is_empty() {
                    continue;
                }
                return match self.algorithm {
                    Algorithm::RoundRobin => Some(self.smooth_round_robin(rr, &tier)),
                    Algorithm::ConsistentHash => rendezvous(hash, &tier),
                };
            }
        }
        None
    }

    /// nginx's smooth weighted round robin over the available members: deterministic, and
    /// spreads picks (weights 8 and 2 give exactly 8 and 2 over any 10 consecutive picks).
    fn smooth_round_robin(&self, rr: &mut RoundRobin, tier: &[&Member]) -> usize {
        if rr.current.len() != self.instances {
            rr.current = vec![0; self.instances];
        }
        let total: i64 = tier.iter().map(|m| weight_i64(m.weight)).sum();
        let mut best: Option<(usize, i64)> = None;
        for m in tier {
            if let Some(c) = rr.current.get_mut(m.index) {
                *c = c.saturating_add(weight_i64(m.weight));
                if best.is_none_or(|(_, b)| *c > b) {
                    best = Some((m.index, *c));
                }
            }
        }
        let chosen = best.map_or(0, |(i, _)| i);
        if let Some(c) = rr.current.get_mut(chosen) {
            *c = c.saturating_sub(total);
        }
        chosen
    }
}

fn weight_i64(w: u64) -> i64 {
    i64::try_from(w).unwrap_or(i64::MAX / 1024)
}

/// Weighted rendezvous hashing: each member scores `weight / -ln(u)` with `u` uniform from
/// the hash of (key, member name); the best score wins. A member leaving moves only its
/// own keys; the choice is the same on every worker and after restarts.
fn rendezvous(hash: u64, tier: &[&Member]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for m in tier {
        let h = mix(hash ^ m.name_hash);
        // 53 random bits -> (0, 1].
        let u = ((h >> 11) as f64 + 1.0) / 9_007_199_254_740_993.0;
        let score = m.weight as f64 / -u.ln();
        if best.is_none_or(|(_, b)| score > b) {
            best = Some((m.index, score));
        }
    }
    best.map(|(i, _)| i)
}

/// FNV-1a, finished with a 64-bit mixer: stable across builds and platforms.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// splitmix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(spec: &[(&'static str, i64, u32)]) -> Vec<Slot<'static>> {
        spec.iter()
            .map(|&(name, priority, weight)| Slot {
                name,
                priority,
                weight,
            })
            .collect()
    }

    fn picks(b: &Balancer, n: usize, available: impl Fn(usize) -> bool + Copy) -> Vec<usize> {
        let mut rr = RoundRobin::default();
        (0..n)
            .map(|_| b.pick(&mut rr, 0, available).unwrap())
            .collect()
    }

    fn counts(p: &[usize], n: usize) -> Vec<usize> {
        (0..n)
            .map(|i| p.iter().filter(|&&x| x == i).count())
            .collect()
    }

    #[test]
    fn weights_8_2_give_exactly_8_2_in_every_window_of_10() {
        let b = Balancer::new(Algorithm::RoundRobin, &slots(&[("a", 0, 8), ("b", 0, 2)]));
        let p = picks(&b, 100, |_| true);
        for window in p.chunks(10) {
            assert_eq!(counts(window, 2), vec![8, 2], "{window:?}");
        }
        // Smooth: b never comes twice in a row.
        assert!(p.windows(2).all(|w| !(w[0] == 1 && w[1] == 1)));
    }

    #[test]
    fn zero_weights() {
        let b = Balancer::new(
            Algorithm::RoundRobin,
            &slots(&[("a", 0, 0), ("b", 0, 0), ("c", 0, 0)]),
        );
        assert_eq!(counts(&picks(&b, 30, |_| true), 3), vec![10, 10, 10]);
        // Mixed: weight 0 is standby.
        let b = Balancer::new(Algorithm::RoundRobin, &slots(&[("a", 0, 3), ("s", 0, 0)]));
        assert_eq!(counts(&picks(&b, 12, |_| true), 2), vec![12, 0]);
        assert_eq!(counts(&picks(&b, 5, |i| i != 0), 2), vec![0, 5]);
    }

    #[test]
    fn priority_groups_highest_first_lower_only_when_higher_unavailable() {
        let b = Balancer::new(
            Algorithm::RoundRobin,
            &slots(&[
                ("low", 0, 1),
                ("high1", 5, 1),
                ("high2", 5, 1),
                ("mid", 2, 1),
            ]),
        );
        assert_eq!(counts(&picks(&b, 10, |_| true), 4), vec![0, 5, 5, 0]);
        assert_eq!(counts(&picks(&b, 10, |i| i != 1), 4), vec![0, 0, 10, 0]);
        assert_eq!(
            counts(&picks(&b, 4, |i| i == 0 || i == 3), 4),
            vec![0, 0, 0, 4]
        );
        assert_eq!(counts(&picks(&b, 4, |i| i == 0), 4), vec![4, 0, 0, 0]);
        let mut rr = RoundRobin::default();
        assert_eq!(b.pick(&mut rr, 0, |_| false), None);
    }

    #[test]
    fn round_robin_skips_unavailable_and_stays_proportional() {
        let b = Balancer::new(
            Algorithm::RoundRobin,
            &slots(&[("a", 0, 5), ("b", 0, 3), ("c", 0, 2)]),
        );
        let p = picks(&b, 100, |i| i != 0);
        assert_eq!(counts(&p, 3), vec![0, 60, 40]);
    }

    #[test]
    fn consistent_hash_is_sticky_spread_and_stable_when_one_leaves() {
        let names = ["a", "b", "c", "d"];
        let b = Balancer::new(
            Algorithm::ConsistentHash,
            &slots(&[("a", 0, 1), ("b", 0, 1), ("c", 0, 1), ("d", 0, 1)]),
        );
        let mut rr = RoundRobin::default();
        let keys: Vec<u64> = (0..2000)
            .map(|i| hash_bytes(format!("user-{i}").as_bytes()))
            .collect();
        let first: Vec<usize> = keys
            .iter()
            .map(|&k| b.pick(&mut rr, k, |_| true).unwrap())
            .collect();
        // Sticky.
        for (k, f) in keys.iter().zip(&first) {
            assert_eq!(b.pick(&mut rr, *k, |_| true), Some(*f));
        }
        // Spread: each of 4 gets 25% +- 5%.
        for (i, c) in counts(&first, 4).iter().enumerate() {
            assert!((400..=600).contains(c), "{} got {c}", names[i]);
        }
        // "c" leaves: only its keys move.
        for (k, f) in keys.iter().zip(&first) {
            let now = b.pick(&mut rr, *k, |i| i != 2).unwrap();
            if *f != 2 {
                assert_eq!(now, *f);
            } else {
                assert_ne!(now, 2);
            }
        }
    }

    #[test]
    fn consistent_hash_respects_weights_and_priority() {
        let b = Balancer::new(
            Algorithm::ConsistentHash,
            &slots(&[("a", 0, 3), ("b", 0, 1), ("backup", -1, 1)]),
        );
        let mut rr = RoundRobin::default();
        let p: Vec<usize> = (0..4000)
            .map(|i| {
                b.pick(&mut rr, hash_bytes(format!("k{i}").as_bytes()), |_| true)
                    .unwrap()
            })
            .collect();
        let c = counts(&p, 3);
        assert!((2800..=3200).contains(&c[0]), "{c:?}");
        assert_eq!(c[2], 0);
        assert_eq!(b.pick(&mut rr, 7, |i| i == 2), Some(2));
    }

    #[test]
    fn hash_is_stable() {
        // Pinned: a change would move every sticky user to another instance.
        assert_eq!(hash_bytes(b"user-1"), 0xc499_b5f8_a721_df58);
        assert_ne!(hash_bytes(b"user-1"), hash_bytes(b"user-2"));
    }
}
