//! Sorting the short lists the filter orders (a body's splices, the priority groups, a
//! settlement's amounts) by insertion, in place of `core`'s sorts: each use of those is a
//! generic quicksort and driftsort of its own in the module, some 5 KB of code and 1 MB of
//! V8's compile memory per use, paid by Envoy at start ("Round 6" in docs/performance.md).

/// Sorts `v` in place so that no element is `less` than the one before it; stable (equal
/// elements keep their order). Quadratic: for lists of tens of elements, such as these.
pub fn sort_small<T>(v: &mut [T], less: impl Fn(&T, &T) -> bool) {
    for i in 1..v.len() {
        let mut j = i;
        while let Some(prev) = j.checked_sub(1) {
            match (v.get(prev), v.get(j)) {
                (Some(a), Some(b)) if less(b, a) => {
                    v.swap(prev, j);
                    j = prev;
                }
                _ => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sort_small;

    #[test]
    fn sorts_like_the_standard_stable_sort() {
        // Every arrangement of a few keys with repeats, each tagged with its position: the
        // result must equal `sort_by_key`'s, which is stable.
        let keys = [3, 1, 2, 1, 0, 3, 2];
        for rotation in 0..keys.len() {
            let mut v: Vec<(i32, usize)> = keys
                .iter()
                .cycle()
                .skip(rotation)
                .take(keys.len())
                .copied()
                .enumerate()
                .map(|(i, k)| (k, i))
                .collect();
            let mut expected = v.clone();
            expected.sort_by_key(|e| e.0);
            sort_small(&mut v, |a, b| a.0 < b.0);
            assert_eq!(v, expected, "rotation {rotation}");
        }
    }

    #[test]
    fn sorts_descending_and_the_edge_cases() {
        let mut v = vec![1i64, 5, -2, 5, 0];
        sort_small(&mut v, |a, b| a > b);
        assert_eq!(v, [5, 5, 1, 0, -2]);
        let mut empty: Vec<u64> = Vec::new();
        sort_small(&mut empty, |a, b| a < b);
        assert!(empty.is_empty());
        let mut one = vec![7u64];
        sort_small(&mut one, |a, b| a < b);
        assert_eq!(one, [7]);
        let mut sorted: Vec<u64> = (0..50).collect();
        sort_small(&mut sorted, |a, b| a < b);
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        let mut reversed: Vec<u64> = (0..50).rev().collect();
        sort_small(&mut reversed, |a, b| a < b);
        assert_eq!(reversed, (0..50).collect::<Vec<_>>());
    }
}
