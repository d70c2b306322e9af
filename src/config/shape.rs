//! The configuration's shape as data (every object's fields and their types), and one serde
//! visitor that reads any part of it from serde_json as serde's derive code read it: the
//! same calls into serde_json, so the same messages at the same places. What it returns is
//! the checked JSON, which `raw` turns into the `Raw*` types. serde's derive code was one
//! visitor per type and per field, some 28 MB of V8's compile memory ("Round 7" in
//! docs/performance.md); `src/config/read/tests.rs` holds this one to it, which test builds
//! keep.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, Expected, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

/// A field's type, as the derive code read it.
#[derive(Clone, Copy)]
pub(super) enum Kind {
    Str,
    Bool,
    U16,
    U32,
    U64,
    I64,
    F64,
    /// Any JSON (`serde_json::Value`).
    Any,
    /// A JSON object of any values (`Map<String, Value>`).
    Map,
    /// A JSON array (`Vec<T>`).
    Seq(&'static Kind),
    /// An object with these fields, unknown ones refused.
    Struct(&'static Shape),
    /// `Option<T>`: `null` or absent is none.
    Opt(&'static Kind),
}

/// A struct: its Rust name (serde's messages name it), its fields in declaration order.
pub(super) struct Shape {
    name: &'static str,
    fields: &'static [&'static str],
    kinds: &'static [Kind],
}

use Kind::*;

const OPT_STR: Kind = Opt(&Str);
const OPT_BOOL: Kind = Opt(&Bool);
const OPT_U16: Kind = Opt(&U16);
const OPT_U32: Kind = Opt(&U32);
const OPT_U64: Kind = Opt(&U64);
const OPT_F64: Kind = Opt(&F64);
const OPT_ANY: Kind = Opt(&Any);
const OPT_MAP: Kind = Opt(&Map);
const OPT_U16S: Kind = Opt(&Seq(&U16));

pub(super) static CONFIG: Shape = Shape {
    name: "RawConfig",
    fields: &[
        "provider",
        "auth",
        "options",
        "override",
        "cluster",
        "timeout",
        "max_req_body_size",
        "cluster_header",
        "instances",
        "balancer",
        "fallback_strategy",
        "fallback_http_statuses",
        "max_retries",
        "retry_on_failure_within_ms",
        "consumer_header",
        "require_consumer",
        "logging",
        "rate_limiting",
        "consumers",
        "ssl_verify",
        "keepalive",
        "keepalive_timeout",
        "keepalive_pool",
    ],
    kinds: &[
        OPT_STR,
        Opt(&Struct(&AUTH)),
        OPT_MAP,
        Opt(&Struct(&OVERRIDE)),
        OPT_STR,
        OPT_U64,
        OPT_U64,
        OPT_STR,
        Opt(&Seq(&Struct(&INSTANCE))),
        Opt(&Struct(&BALANCER)),
        OPT_ANY,
        OPT_U16S,
        OPT_U32,
        OPT_U64,
        OPT_STR,
        OPT_BOOL,
        Opt(&Struct(&LOGGING)),
        Opt(&Struct(&RATE_LIMITING)),
        Opt(&Seq(&Struct(&CONSUMER))),
        OPT_ANY,
        OPT_ANY,
        OPT_ANY,
        OPT_ANY,
    ],
};

static AUTH: Shape = Shape {
    name: "RawAuth",
    fields: &["header", "query"],
    kinds: &[OPT_MAP, OPT_MAP],
};

static OVERRIDE: Shape = Shape {
    name: "RawOverride",
    fields: &["endpoint"],
    kinds: &[OPT_STR],
};

static INSTANCE: Shape = Shape {
    name: "RawInstance",
    fields: &[
        "name", "provider", "priority", "weight", "auth", "options", "override", "cluster",
        "checks",
    ],
    kinds: &[
        Str,
        Str,
        Opt(&I64),
        OPT_U32,
        Opt(&Struct(&AUTH)),
        OPT_MAP,
        Opt(&Struct(&OVERRIDE)),
        OPT_STR,
        Opt(&Struct(&CHECKS)),
    ],
};

static CHECKS: Shape = Shape {
    name: "RawChecks",
    fields: &["active", "passive"],
    kinds: &[Opt(&Struct(&ACTIVE)), Opt(&Struct(&PASSIVE))],
};

static ACTIVE: Shape = Shape {
    name: "RawActive",
    fields: &[
        "type",
        "timeout",
        "http_path",
        "host",
        "req_headers",
        "http_method",
        "http_req_body",
        "healthy",
        "unhealthy",
        "port",
        "https_verify_certificate",
        "concurrency",
    ],
    kinds: &[
        OPT_STR,
        OPT_F64,
        OPT_STR,
        OPT_STR,
        Opt(&Seq(&Str)),
        OPT_STR,
        OPT_ANY,
        Opt(&Struct(&HEALTHY)),
        Opt(&Struct(&UNHEALTHY)),
        OPT_ANY,
        OPT_ANY,
        OPT_ANY,
    ],
};

static HEALTHY: Shape = Shape {
    name: "RawHealthy",
    fields: &["interval", "successes", "http_statuses"],
    kinds: &[OPT_F64, OPT_U32, OPT_U16S],
};

static UNHEALTHY: Shape = Shape {
    name: "RawUnhealthy",
    fields: &[
        "interval",
        "http_failures",
        "tcp_failures",
        "timeouts",
        "http_statuses",
    ],
    kinds: &[OPT_F64, OPT_U32, OPT_U32, OPT_U32, OPT_U16S],
};

static PASSIVE: Shape = Shape {
    name: "RawPassive",
    fields: &["unhealthy", "cooldown"],
    kinds: &[Opt(&Struct(&UNHEALTHY)), OPT_F64],
};

static BALANCER: Shape = Shape {
    name: "RawBalancer",
    fields: &["algorithm", "hash_on", "key"],
    kinds: &[OPT_STR, OPT_STR, OPT_STR],
};

static LOGGING: Shape = Shape {
    name: "RawLogging",
    fields: &["summaries", "payloads"],
    kinds: &[OPT_BOOL, OPT_BOOL],
};

static RATE_LIMITING: Shape = Shape {
    name: "RawRateLimiting",
    fields: &[
        "limit",
        "time_window",
        "instances",
        "limit_strategy",
        "rejected_code",
        "rejected_msg",
        "show_limit_quota_header",
        "service",
        "reserve",
        "default_reserve",
    ],
    kinds: &[
        OPT_U64,
        OPT_U64,
        Opt(&Seq(&Struct(&INSTANCE_LIMIT))),
        OPT_STR,
        OPT_U16,
        OPT_STR,
        OPT_BOOL,
        Opt(&Struct(&SERVICE)),
        OPT_STR,
        OPT_U64,
    ],
};

static SERVICE: Shape = Shape {
    name: "RawService",
    fields: &[
        "cluster",
        "domain",
        "protocol",
        "timeout_ms",
        "failure_mode_deny",
    ],
    kinds: &[OPT_STR, OPT_STR, OPT_STR, OPT_U64, OPT_BOOL],
};

static INSTANCE_LIMIT: Shape = Shape {
    name: "RawInstanceLimit",
    fields: &["name", "limit", "time_window"],
    kinds: &[Str, U64, U64],
};

static CONSUMER: Shape = Shape {
    name: "RawConsumer",
    fields: &["name", "rate_limiting"],
    kinds: &[Str, Struct(&RATE_LIMITING)],
};

/// Reads one value of `kind`: the JSON as read, with an absent or `null` optional field as
/// `Null` and left out of its object.
#[derive(Clone, Copy)]
pub(super) struct Read(pub(super) Kind);

impl<'de> DeserializeSeed<'de> for Read {
    type Value = Value;

    // The derive code's calls, one per Rust type: serde_json's message and position for
    // a value of the wrong type depend on which it is asked for.
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        match self.0 {
            Str => d.deserialize_string(self),
            Bool => d.deserialize_bool(self),
            U16 => d.deserialize_u16(self),
            U32 => d.deserialize_u32(self),
            U64 => d.deserialize_u64(self),
            I64 => d.deserialize_i64(self),
            F64 => d.deserialize_f64(self),
            Any => Value::deserialize(d),
            Map => Map::<String, Value>::deserialize(d).map(Value::Object),
            Seq(_) => d.deserialize_seq(self),
            Struct(s) => d.deserialize_struct(s.name, s.fields, self),
            Opt(_) => d.deserialize_option(self),
        }
    }
}

/// `struct RawAuth with 2 elements`: what a struct read from an array lacked.
struct Elements(&'static Shape);

impl Expected for Elements {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.fields.len();
        let s = if n == 1 { "" } else { "s" };
        write!(f, "struct {} with {n} element{s}", self.0.name)
    }
}

/// A struct's member name as the index of its field; an unknown one refused.
struct Field(&'static Shape);

impl<'de> DeserializeSeed<'de> for Field {
    type Value = usize;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_identifier(self)
    }
}

impl<'de> Visitor<'de> for Field {
    type Value = usize;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("field identifier")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<usize, E> {
        self.0
            .fields
            .iter()
            .position(|name| *name == v)
            .ok_or_else(|| E::unknown_field(v, self.0.fields))
    }
}

/// serde's number visitors: in range, or `invalid value`; a float is the wrong type for an
/// integer.
fn integer<E: de::Error>(read: Read, n: i128, unexpected: de::Unexpected<'_>) -> Result<Value, E> {
    let (min, max) = match read.0 {
        U16 => (0, i128::from(u16::MAX)),
        U32 => (0, i128::from(u32::MAX)),
        U64 => (0, i128::from(u64::MAX)),
        I64 => (i128::from(i64::MIN), i128::from(i64::MAX)),
        F64 => (i128::MIN, i128::MAX),
        _ => return Err(E::invalid_type(unexpected, &read)),
    };
    if n < min || n > max {
        return Err(E::invalid_value(unexpected, &read));
    }
    Ok(match (u64::try_from(n), i64::try_from(n)) {
        (Ok(u), _) => Value::from(u),
        (_, Ok(i)) => Value::from(i),
        _ => Value::Null,
    })
}

impl<'de> Visitor<'de> for Read {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Str => f.write_str("a string"),
            Bool => f.write_str("a boolean"),
            U16 => f.write_str("u16"),
            U32 => f.write_str("u32"),
            U64 => f.write_str("u64"),
            I64 => f.write_str("i64"),
            F64 => f.write_str("f64"),
            Any => f.write_str("any valid JSON value"),
            Map => f.write_str("a map"),
            Seq(_) => f.write_str("a sequence"),
            Struct(s) => write!(f, "struct {}", s.name),
            Opt(_) => f.write_str("option"),
        }
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        match self.0 {
            Bool => Ok(Value::Bool(v)),
            _ => Err(E::invalid_type(de::Unexpected::Bool(v), &self)),
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        integer(self, i128::from(v), de::Unexpected::Unsigned(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        integer(self, i128::from(v), de::Unexpected::Signed(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        match self.0 {
            F64 => Ok(Value::from(v)),
            _ => Err(E::invalid_type(de::Unexpected::Float(v), &self)),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        match self.0 {
            Str => Ok(Value::String(v.to_owned())),
            _ => Err(E::invalid_type(de::Unexpected::Str(v), &self)),
        }
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        match self.0 {
            Opt(_) => Ok(Value::Null),
            _ => Err(E::invalid_type(de::Unexpected::Unit, &self)),
        }
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        match self.0 {
            Opt(inner) => Read(*inner).deserialize(d),
            _ => Err(de::Error::invalid_type(de::Unexpected::Option, &self)),
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        match self.0 {
            Seq(item) => {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element_seed(Read(*item))? {
                    out.push(v);
                }
                Ok(Value::Array(out))
            }
            // The derive code reads a struct from an array too, as its fields in order.
            Struct(s) => {
                let mut out = Map::new();
                for (i, (name, kind)) in s.fields.iter().zip(s.kinds).enumerate() {
                    match seq.next_element_seed(Read(*kind))? {
                        Some(Value::Null) => {}
                        Some(v) => {
                            out.insert((*name).to_owned(), v);
                        }
                        None => return Err(de::Error::invalid_length(i, &Elements(s))),
                    }
                }
                Ok(Value::Object(out))
            }
            _ => Err(de::Error::invalid_type(de::Unexpected::Seq, &self)),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let Struct(s) = self.0 else {
            return Err(de::Error::invalid_type(de::Unexpected::Map, &self));
        };
        let mut seen = 0u32;
        let mut out = Map::new();
        while let Some(i) = map.next_key_seed(Field(s))? {
            let bit = 1u32
                .checked_shl(u32::try_from(i).unwrap_or(u32::MAX))
                .unwrap_or(0);
            let (Some(name), Some(kind)) = (s.fields.get(i), s.kinds.get(i)) else {
                return Err(de::Error::custom("field out of range"));
            };
            if seen & bit != 0 {
                return Err(de::Error::duplicate_field(name));
            }
            seen |= bit;
            let v = map.next_value_seed(Read(*kind))?;
            if !v.is_null() {
                out.insert((*name).to_owned(), v);
            }
        }
        for (i, (name, kind)) in s.fields.iter().zip(s.kinds).enumerate() {
            let bit = 1u32
                .checked_shl(u32::try_from(i).unwrap_or(u32::MAX))
                .unwrap_or(0);
            if seen & bit == 0 && !matches!(kind, Opt(_)) {
                return Err(de::Error::missing_field(name));
            }
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every struct the configuration reaches, once each.
    fn shapes(kind: Kind, out: &mut Vec<&'static Shape>) {
        match kind {
            Seq(inner) | Opt(inner) => shapes(*inner, out),
            Struct(s) if !out.iter().any(|o| std::ptr::eq(*o, s)) => {
                out.push(s);
                s.kinds.iter().for_each(|k| shapes(*k, out));
            }
            _ => {}
        }
    }

    #[test]
    fn every_shape_has_a_type_for_each_field_and_fits_the_visitors_bitmask() {
        let mut all = Vec::new();
        shapes(Struct(&CONFIG), &mut all);
        assert_eq!(all.len(), 15, "the Raw* structs");
        for s in all {
            // `zip` would drop a field without a type silently.
            assert_eq!(s.fields.len(), s.kinds.len(), "{}", s.name);
            // `visit_map` tells duplicates and missing fields by a bit per field.
            assert!(s.fields.len() <= 32, "{}", s.name);
            for (i, f) in s.fields.iter().enumerate() {
                assert!(!s.fields[..i].contains(f), "{}.{f} twice", s.name);
            }
        }
    }
}
