//! The proxy-wasm ABI's values and encodings that need no host: the header map encoding
//! (read by `headers::Headers`; the old reader stays for tests), status names, log levels
//! (pure, so they are tested natively).

/// Header maps and buffers, as the ABI numbers them.
pub const CALL_RESPONSE_HEADERS: u32 = 6;
pub const CALL_RESPONSE_BODY: u32 = 4;
pub const GRPC_RECEIVE_BUFFER: u32 = 5;
pub const PLUGIN_CONFIGURATION: u32 = 7;
/// Host statuses the filter tells apart.
pub const NOT_FOUND: u32 = 1;
pub const CAS_MISMATCH: u32 = 8;

/// A request or response header map's ABI number.
pub fn header_map(map: crate::effect::Map) -> u32 {
    match map {
        crate::effect::Map::Request => 0,
        crate::effect::Map::Response => 2,
    }
}

/// A request or response body buffer's ABI number.
pub fn body_buffer(map: crate::effect::Map) -> u32 {
    match map {
        crate::effect::Map::Request => 0,
        crate::effect::Map::Response => 1,
    }
}

/// The name of a proxy-wasm host status.
pub fn status_name(status: u32) -> &'static str {
    match status {
        0 => "Ok",
        1 => "NotFound",
        2 => "BadArgument",
        3 => "SerializationFailure",
        4 => "ParseFailure",
        7 => "Empty",
        8 => "CasMismatch",
        10 => "InternalFailure",
        12 => "Unimplemented",
        _ => "unknown status",
    }
}

/// Envoy's log level (0 trace .. 5 critical/off) as a `log` filter; Info when unknown.
pub fn log_filter(level: Option<u32>) -> log::LevelFilter {
    match level {
        Some(0) => log::LevelFilter::Trace,
        Some(1) => log::LevelFilter::Debug,
        Some(2) | None => log::LevelFilter::Info,
        Some(3) => log::LevelFilter::Warn,
        Some(4) => log::LevelFilter::Error,
        Some(_) => log::LevelFilter::Off,
    }
}

/// A `log` level as Envoy's (0 trace .. 4 error).
pub fn envoy_level(level: log::Level) -> u32 {
    5u32.saturating_sub(level as u32)
}

/// The ABI's header map encoding: count, (name length, value length) pairs, then each name
/// and value followed by a NUL byte.
pub fn serialize_map<N: AsRef<[u8]>, V: AsRef<[u8]>>(map: &[(N, V)]) -> Vec<u8> {
    let size = map.iter().fold(4usize, |acc, (n, v)| {
        acc.saturating_add(n.as_ref().len())
            .saturating_add(v.as_ref().len())
            .saturating_add(10)
    });
    let mut bytes = Vec::with_capacity(size);
    let len32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    bytes.extend_from_slice(&len32(map.len()));
    for (name, value) in map {
        bytes.extend_from_slice(&len32(name.as_ref().len()));
        bytes.extend_from_slice(&len32(value.as_ref().len()));
    }
    for (name, value) in map {
        bytes.extend_from_slice(name.as_ref());
        bytes.push(0);
        bytes.extend_from_slice(value.as_ref());
        bytes.push(0);
    }
    bytes
}

/// Reads the ABI's header map encoding (see [`serialize_map`]). Bounds-checked throughout: a
/// malformed map gives the pairs read so far, never a panic. The filter's reading before
/// `headers::Headers`, kept as the reference its tests hold it to.
#[cfg(test)]
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
        let (Some(name_len), Some(value_len)) =
            (u32_at(sizes), sizes.checked_add(4).and_then(u32_at))
        else {
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
    fn levels_both_ways() {
        for l in [log::Level::Trace, log::Level::Info, log::Level::Error] {
            assert_eq!(log_filter(Some(envoy_level(l))), l.to_level_filter());
        }
        assert_eq!(log_filter(None), log::LevelFilter::Info);
        assert_eq!(status_name(8), "CasMismatch");
    }

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
        assert_eq!(deserialize_map(&serialize_map::<&str, &str>(&[])), vec![]);
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
