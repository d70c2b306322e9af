//! The proxy-wasm ABI's header map encoding, both ways (pure, so it is tested natively).

/// The ABI's header map encoding: count, (name length, value length) pairs, then each name
/// and value followed by a NUL byte.
pub fn serialize_map(map: &[(&str, &str)]) -> Vec<u8> {
    let size = 4 + map
        .iter()
        .map(|(n, v)| n.len() + v.len() + 10)
        .sum::<usize>();
    let mut bytes = Vec::with_capacity(size);
    let len32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    bytes.extend_from_slice(&len32(map.len()));
    for (name, value) in map {
        bytes.extend_from_slice(&len32(name.len()));
        bytes.extend_from_slice(&len32(value.len()));
    }
    for (name, value) in map {
        bytes.extend_from_slice(name.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(value.as_bytes());
        bytes.push(0);
    }
    bytes
}

/// Reads the ABI's header map encoding (see [`serialize_map`]). Bounds-checked throughout: a
/// malformed map gives the pairs read so far, never a panic.
pub fn deserialize_map(bytes: &[u8]) -> Vec<(String, String)> {
    let u32_at = |at: usize| -> Option<usize> {
        let b = bytes.get(at..at.checked_add(4)?)?;
        let arr: [u8; 4] = b.try_into().ok()?;
        usize::try_from(u32::from_le_bytes(arr)).ok()
    };
    let mut out = Vec::new();
    let Some(count) = u32_at(0) else {
        return out;
    };
    let mut data = match count.checked_mul(8).and_then(|n| n.checked_add(4)) {
        Some(d) => d,
        None => return out,
    };
    for i in 0..count {
        let Some(sizes) = i.checked_mul(8).and_then(|n| n.checked_add(4)) else {
            break;
        };
        let (Some(name_len), Some(value_len)) = (u32_at(sizes), u32_at(sizes + 4)) else {
            break;
        };
        let name = data
            .checked_add(name_len)
            .and_then(|end| bytes.get(data..end));
        let value_start = data.saturating_add(name_len).saturating_add(1);
        let value = value_start
            .checked_add(value_len)
            .and_then(|end| bytes.get(value_start..end));
        let (Some(name), Some(value)) = (name, value) else {
            break;
        };
        out.push((
            String::from_utf8_lossy(name).into_owned(),
            String::from_utf8_lossy(value).into_owned(),
        ));
        data = value_start.saturating_add(value_len).saturating_add(1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let map = [
            (":status", "200"),
            ("content-type", "application/json"),
            ("empty", ""),
        ];
        let back = deserialize_map(&serialize_map(&map));
        let want: Vec<(String, String)> = map
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        assert_eq!(back, want);
        assert_eq!(deserialize_map(&serialize_map(&[])), vec![]);
    }

    #[test]
    fn malformed_maps_never_panic() {
        let good = serialize_map(&[("a", "1"), ("bb", "22")]);
        for cut in 0..good.len() {
            let _ = deserialize_map(&good[..cut]);
        }
        assert_eq!(deserialize_map(&[]), vec![]);
        // A count far larger than the data.
        assert_eq!(deserialize_map(&[0xff, 0xff, 0xff, 0xff, 0, 0]), vec![]);
        // Truncated after the first pair: the first pair is kept.
        let first = deserialize_map(&good[..good.len() - 4]);
        assert_eq!(first, vec![("a".to_string(), "1".to_string())]);
    }
}
