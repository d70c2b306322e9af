//! The few protobuf messages a rate limit service speaks, encoded and decoded by hand (no
//! dependency; `envoy-types` does not build for wasm32): Envoy RLS v3 `RateLimitRequest` /
//! `RateLimitResponse`, and Kuadrant's `ReserveRequest` / `ReserveResponse` /
//! `CommitRequest`.

/// One descriptor: its entries (key, value), in order, and its own hits when set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub entries: Vec<(String, String)>,
    pub hits: Option<u64>,
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v & 0x7f) as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire));
}

fn bytes_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    key(out, field, 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn uint_field(out: &mut Vec<u8>, field: u32, v: u64) {
    key(out, field, 0);
    varint(out, v);
}

fn descriptor(d: &Descriptor) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in &d.entries {
        let mut entry = Vec::new();
        bytes_field(&mut entry, 1, k.as_bytes());
        bytes_field(&mut entry, 2, v.as_bytes());
        bytes_field(&mut out, 1, &entry);
    }
    if let Some(h) = d.hits {
        // google.protobuf.UInt64Value { value = 1 }
        let mut wrapped = Vec::new();
        uint_field(&mut wrapped, 1, h);
        bytes_field(&mut out, 3, &wrapped);
    }
    out
}

fn domain_and_descriptors(domain: &str, descriptors: &[Descriptor]) -> Vec<u8> {
    let mut out = Vec::new();
    bytes_field(&mut out, 1, domain.as_bytes());
    for d in descriptors {
        bytes_field(&mut out, 2, &descriptor(d));
    }
    out
}

/// `RateLimitRequest { domain = 1, descriptors = 2, hits_addend = 3 }`.
pub fn rate_limit_request(domain: &str, descriptors: &[Descriptor], hits: u64) -> Vec<u8> {
    let mut out = domain_and_descriptors(domain, descriptors);
    if hits > 0 {
        uint_field(&mut out, 3, hits);
    }
    out
}

/// Kuadrant `ReserveRequest { domain = 1, descriptors = 2, amount = 3, ttl = 4 }`.
pub fn reserve_request(
    domain: &str,
    descriptors: &[Descriptor],
    amount: u64,
    ttl_secs: u64,
) -> Vec<u8> {
    let mut out = domain_and_descriptors(domain, descriptors);
    uint_field(&mut out, 3, amount);
    let mut ttl = Vec::new();
    uint_field(&mut ttl, 1, ttl_secs);
    bytes_field(&mut out, 4, &ttl);
    out
}

/// Kuadrant `CommitRequest { domain = 1, descriptors = 2, reservation_id = 3, actual_amount = 4 }`.
pub fn commit_request(domain: &str, descriptors: &[Descriptor], id: &str, actual: u64) -> Vec<u8> {
    let mut out = domain_and_descriptors(domain, descriptors);
    bytes_field(&mut out, 3, id.as_bytes());
    uint_field(&mut out, 4, actual);
    out
}

/// RLS v3 `RateLimitResponse.Code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Unknown,
    Ok,
    OverLimit,
}

impl Code {
    fn of(v: u64) -> Code {
        match v {
            1 => Code::Ok,
            2 => Code::OverLimit,
            _ => Code::Unknown,
        }
    }
}

/// One `DescriptorStatus`, as far as the filter reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    /// `current_limit.requests_per_unit`, when a limit applies.
    pub limit: Option<u64>,
    pub remaining: u64,
    /// `duration_until_reset.seconds`.
    pub reset_secs: Option<u64>,
}

/// `RateLimitResponse { overall_code = 1, statuses = 2 }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub code: Code,
    pub statuses: Vec<Status>,
}

/// Kuadrant `ReserveResponse { code = 1, reservation_id = 2 }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    pub code: Code,
    pub id: String,
}

/// A field read from the wire: its number and value.
enum Field<'a> {
    Uint(u32, u64),
    Bytes(u32, &'a [u8]),
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.buf.split_first()?;
            self.buf = rest;
            v |= u64::from(b & 0x7f).checked_shl(shift)?;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    /// The next field; `None` at the end, `Some(None)` on malformed input.
    fn next(&mut self) -> Option<Option<Field<'a>>> {
        if self.buf.is_empty() {
            return None;
        }
        let Some(k) = self.varint() else {
            return Some(None);
        };
        let field = u32::try_from(k >> 3).unwrap_or(0);
        Some(match k & 7 {
            0 => self.varint().map(|v| Field::Uint(field, v)),
            2 => self.varint().and_then(|len| {
                let len = usize::try_from(len).ok()?;
                let (data, rest) = (self.buf.get(..len)?, self.buf.get(len..)?);
                self.buf = rest;
                Some(Field::Bytes(field, data))
            }),
            // Fixed 64 and 32 bits: skipped.
            1 => self.skip(8),
            5 => self.skip(4),
            _ => None,
        })
    }

    fn skip(&mut self, n: usize) -> Option<Field<'a>> {
        self.buf = self.buf.get(n..)?;
        Some(Field::Uint(0, 0))
    }
}

/// Every field of a message; `None` when it is malformed.
fn fields(buf: &[u8]) -> Option<Vec<Field<'_>>> {
    let mut r = Reader { buf };
    let mut out = Vec::new();
    while let Some(f) = r.next() {
        out.push(f?);
    }
    Some(out)
}

fn status(buf: &[u8]) -> Option<Status> {
    let mut s = Status {
        code: Code::Unknown,
        limit: None,
        remaining: 0,
        reset_secs: None,
    };
    for f in fields(buf)? {
        match f {
            Field::Uint(1, v) => s.code = Code::of(v),
            Field::Bytes(2, limit) => {
                for g in fields(limit)? {
                    if let Field::Uint(1, v) = g {
                        s.limit = Some(v);
                    }
                }
            }
            Field::Uint(3, v) => s.remaining = v,
            Field::Bytes(4, d) => {
                s.reset_secs = Some(0);
                for g in fields(d)? {
                    if let Field::Uint(1, v) = g {
                        s.reset_secs = Some(v);
                    }
                }
            }
            _ => {}
        }
    }
    Some(s)
}

/// Decodes a `RateLimitResponse`; `None` when malformed.
pub fn response(buf: &[u8]) -> Option<Response> {
    let mut r = Response {
        code: Code::Unknown,
        statuses: Vec::new(),
    };
    for f in fields(buf)? {
        match f {
            Field::Uint(1, v) => r.code = Code::of(v),
            Field::Bytes(2, s) => r.statuses.push(status(s)?),
            _ => {}
        }
    }
    Some(r)
}

/// Decodes a `ReserveResponse`; `None` when malformed.
pub fn reserved(buf: &[u8]) -> Option<Reserved> {
    let mut r = Reserved {
        code: Code::Unknown,
        id: String::new(),
    };
    for f in fields(buf)? {
        match f {
            Field::Uint(1, v) => r.code = Code::of(v),
            Field::Bytes(2, id) => r.id = String::from_utf8(id.to_vec()).ok()?,
            _ => {}
        }
    }
    Some(r)
}

#[cfg(test)]
mod tests;
