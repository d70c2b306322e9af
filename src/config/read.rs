//! The configuration's text read into [`RawConfig`] by serde_json (by its `shape`), and a
//! failure told as the field it is about (`instances[0].checks.active.timeout`) and serde's
//! message, with any quoted string cut out. The field comes from where serde_json stopped
//! in the text, not from a path-tracking wrapper around every type's deserializer: that
//! wrapper was some 55 KB of the module and 14 MB of V8's compile memory ("Round 6" in
//! docs/performance.md).

use serde::de::DeserializeSeed;
use serde_json::Value;

use super::raw::RawFallbackStrategy;
use super::shape::{Kind, Read, CONFIG};
use super::{ConfigError, RawConfig};

#[cfg(test)]
mod tests;

/// Reads one JSON object into [`RawConfig`], and nothing after it.
#[inline(never)] // compiled on its own: see "Round 5" in docs/performance.md
pub(super) fn read(text: &str) -> Result<RawConfig, ConfigError> {
    let mut de = serde_json::Deserializer::from_slice(text.as_bytes());
    let json = Read(Kind::Struct(&CONFIG))
        .deserialize(&mut de)
        .map_err(|e| {
            let whole = e.to_string();
            told(path_at(text, e.line(), e.column(), &whole, e.is_data()), &e)
        })?;
    finish(&mut de, RawConfig::from_json(json))
}

/// The same read by serde's derive code instead of the shape, a failure told the same way:
/// the reference `read` is held to (the `config` fuzz target, through `read_twice`).
#[cfg(feature = "reference-derive")]
pub(super) fn read_by_derive(text: &str) -> Result<RawConfig, ConfigError> {
    let mut de = serde_json::Deserializer::from_slice(text.as_bytes());
    let raw = <RawConfig as serde::Deserialize>::deserialize(&mut de).map_err(|e| {
        let whole = e.to_string();
        told(path_at(text, e.line(), e.column(), &whole, e.is_data()), &e)
    })?;
    finish(&mut de, raw)
}

/// After the object: nothing but whitespace, and `fallback_strategy` told apart. (Generic
/// for the tests' reference, which reads a `&str` as the filter did before round 10; the
/// filter reads bytes, so that one copy of serde_json's reader serves every read.)
fn finish<'de, R: serde_json::de::Read<'de>>(
    de: &mut serde_json::Deserializer<R>,
    mut raw: RawConfig,
) -> Result<RawConfig, ConfigError> {
    de.end()
        .map_err(|e| ConfigError::new("", format!("after the configuration object: {e}")))?;
    raw.fallback_strategy = raw
        .fallback_strategy_json
        .take()
        .map(strategy)
        .transpose()?;
    Ok(raw)
}

/// `fallback_strategy`: one string or an array of strings, refused as serde's untagged enum
/// refused it.
fn strategy(v: Value) -> Result<RawFallbackStrategy, ConfigError> {
    let refused = || {
        ConfigError::new(
            "fallback_strategy",
            "data did not match any variant of untagged enum RawFallbackStrategy",
        )
    };
    match v {
        Value::String(s) => Ok(RawFallbackStrategy::One(s)),
        Value::Array(items) => items
            .into_iter()
            .map(|i| match i {
                Value::String(s) => Ok(s),
                _ => Err(refused()),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(RawFallbackStrategy::Many),
        _ => Err(refused()),
    }
}

/// A serde_json error as a [`ConfigError`] about the field at `path`: serde's message.
fn told(path: String, e: &serde_json::Error) -> ConfigError {
    let mut message = redact(&e.to_string());
    // The position helps with a syntax error; once the field is named it is noise.
    if e.is_data() && path != "." {
        if let Some(at) = crate::text::rfind(&message, " at line ") {
            message.truncate(at);
        }
    }
    ConfigError::new(path, message)
}

/// One step of a path: a member's name or an element's index.
enum Step {
    Name(String),
    Index(usize),
}

/// Where the reading stands in one object or array.
#[derive(Clone, Copy, PartialEq)]
enum At {
    /// Before a member's name (an object) or between members; nothing entered.
    Open,
    /// Inside a member's name.
    Name,
    /// After a member's name, before its `:`.
    Named,
    /// Before a value (after `:`, or an array's `[` or `,`).
    Value,
    /// Inside a value (a scalar, a string, or a container being read).
    InValue,
    /// After a complete value.
    Done,
}

struct Level {
    object: bool,
    step: Option<Step>,
    at: At,
}

/// The field serde_json was reading when it failed with `message` after `column` bytes of
/// `line` (1-based; 0 when it gave no position), as `a.b[2].c`, or `.` for the whole
/// configuration. serde_json's position is the last byte it consumed: a member's name (and
/// any space after it) for an unknown or a duplicate field, a value's last byte for a bad
/// value, an object's closing brace for a field missing from it.
#[inline(never)]
pub(super) fn path_at(text: &str, line: usize, column: usize, message: &str, data: bool) -> String {
    let Some(end) = offset(text, line, column) else {
        return ".".into();
    };
    let bytes = text.as_bytes().get(..end).unwrap_or(text.as_bytes());
    let mut stack: Vec<Level> = Vec::new();
    let mut name_start = 0;
    let mut in_string = false;
    let mut escaped = false;
    let mut in_scalar = false;
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
                if let Some(top) = stack.last_mut() {
                    if top.at == At::Name {
                        let raw = bytes.get(name_start..=i).unwrap_or_default();
                        let name = serde_json::from_slice::<String>(raw).unwrap_or_default();
                        top.step = Some(Step::Name(name));
                        top.at = At::Named;
                    } else {
                        top.at = At::Done;
                    }
                }
            }
            continue;
        }
        if in_scalar {
            if matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b',' | b'}' | b']' | b':') {
                in_scalar = false;
                if let Some(top) = stack.last_mut() {
                    top.at = At::Done;
                }
            } else {
                continue;
            }
        }
        // What may come here; anything else is where serde_json stopped (it counts the
        // byte it peeked at), so the reading stops too, where it stands.
        let at = stack.last().map(|l| (l.object, l.at));
        let value_next = matches!(at, None | Some((_, At::Value)));
        match (b, at) {
            (b' ' | b'\t' | b'\n' | b'\r', _) => {}
            (b'{' | b'[', _) if value_next => {
                if let Some(top) = stack.last_mut() {
                    top.at = At::InValue;
                }
                let object = b == b'{';
                stack.push(Level {
                    object,
                    step: if object { None } else { Some(Step::Index(0)) },
                    at: if object { At::Open } else { At::Value },
                });
            }
            (b'}', Some((true, At::Open | At::Done)))
            | (b']', Some((false, At::Value | At::Done))) => {
                stack.pop();
                if let Some(top) = stack.last_mut() {
                    top.at = At::Done;
                }
            }
            (b':', Some((true, At::Named))) => {
                if let Some(top) = stack.last_mut() {
                    top.at = At::Value;
                }
            }
            (b',', Some((_, At::Done))) => {
                if let Some(top) = stack.last_mut() {
                    if top.object {
                        top.step = None;
                        top.at = At::Open;
                    } else {
                        let next = match top.step {
                            Some(Step::Index(n)) => n.saturating_add(1),
                            _ => 0,
                        };
                        top.step = Some(Step::Index(next));
                        top.at = At::Value;
                    }
                }
            }
            (b'"', Some((true, At::Open))) => {
                in_string = true;
                name_start = i;
                if let Some(top) = stack.last_mut() {
                    top.at = At::Name;
                }
            }
            (b'"', _) if value_next => {
                in_string = true;
                if let Some(top) = stack.last_mut() {
                    top.at = At::InValue;
                }
            }
            _ if value_next && !matches!(b, b'}' | b']' | b':' | b',') => {
                in_scalar = true;
                if let Some(top) = stack.last_mut() {
                    top.at = At::InValue;
                }
            }
            _ => break,
        }
    }
    // The innermost level names its member only when the failure is about that member. A
    // failure while a name is read has no name yet: `?` (as serde_path_to_error wrote it).
    // After a name, only an unknown name is about the member (a duplicate, or a missing
    // `:`, is about the object).
    if let Some(top) = stack.last_mut() {
        // A number or literal the reading stopped in was whole if what failed is its
        // container's syntax.
        const CONTAINER: [&str; 5] = [
            "EOF while parsing an object",
            "EOF while parsing a list",
            "expected `,` or `}`",
            "expected `,` or `]`",
            "trailing comma",
        ];
        let in_container = !data && CONTAINER.iter().any(|m| message.starts_with(m));
        match top.at {
            At::Open | At::Name => top.step = Some(Step::Name("?".into())),
            At::Named if !message.starts_with("unknown field") => top.step = None,
            // Bad syntax between members is the next member's, not yet named; between
            // elements, the array's.
            _ if in_container && top.object => top.step = Some(Step::Name("?".into())),
            _ if in_container => top.step = None,
            // An array's next element not begun: bad syntax is the array's.
            At::Value if !data && !top.object => top.step = None,
            // An array read as a struct's fields in order, with elements left over.
            _ if !top.object && message.starts_with("trailing characters") => top.step = None,
            _ => {}
        }
    }
    let mut path = String::new();
    for step in stack.iter().filter_map(|l| l.step.as_ref()) {
        match step {
            Step::Name(name) => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(name);
            }
            Step::Index(n) => {
                path.push('[');
                path.push_str(&n.to_string());
                path.push(']');
            }
        }
    }
    if path.is_empty() {
        path.push('.');
    }
    path
}

/// The byte offset just past `column` bytes of `line` (both as serde_json counts them).
fn offset(text: &str, line: usize, column: usize) -> Option<usize> {
    if line == 0 {
        return None;
    }
    let mut start = 0usize;
    for _ in 1..line {
        let rest = text.get(start..)?;
        start = start.checked_add(rest.find('\n')?)?.checked_add(1)?;
    }
    Some(start.checked_add(column)?.min(text.len()))
}

/// serde's messages quote the offending string (`invalid type: string "Bearer sk-…"`). A
/// misplaced API key must never reach the log, so every quoted string is cut out.
pub(super) fn redact(message: &str) -> String {
    const MARK: &str = "string \"";
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = crate::text::find(rest, MARK) {
        let (head, tail) = rest.split_at(at.saturating_add(MARK.len()));
        out.push_str(head);
        out.push_str("…\"");
        // Skip the Debug-escaped string up to its closing, unescaped quote.
        let mut escaped = false;
        let mut end = tail.len();
        for (i, c) in tail.char_indices() {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                end = i.saturating_add(1);
                break;
            }
        }
        rest = tail.get(end..).unwrap_or("");
    }
    out.push_str(rest);
    out
}
