//! APISIX consumers (`username`, `plugins` with `key-auth` and `ai-rate-limiting`) and
//! the credential objects that follow each: their keys and limits, nothing else.

use serde_json::{Map, Value};

use super::{Consumer, Input, Problems, DESCRIPTIVE};

/// Consumers (objects with `username`) and the credential objects that follow each.
pub(super) fn read_consumers(rest: &[Input], p: &mut Problems) -> Vec<Consumer> {
    let mut out: Vec<Consumer> = Vec::new();
    for input in rest {
        let label = input.label.as_str();
        let Some(obj) = input.value.as_object() else {
            p.add(
                label,
                "",
                "must be a JSON object (a consumer or a credential)",
            );
            continue;
        };
        if obj.contains_key("uri") || obj.contains_key("uris") {
            p.add(label, "", "is a route: give one route, first");
        } else if let Some(username) = obj.get("username") {
            if let Some(c) = read_consumer(label, username, obj, p) {
                if out.iter().any(|o| o.username == c.username) {
                    p.add(
                        label,
                        "username",
                        format!("consumer `{}` is given twice", c.username),
                    );
                }
                out.push(c);
            }
        } else if let Some(last) = out.last_mut() {
            last.keys.extend(read_credential(label, obj, p));
        } else {
            p.add(
                label,
                "",
                "is a credential (no `username`): it must follow the consumer it belongs to",
            );
        }
    }
    out
}

fn read_consumer(
    label: &str,
    username: &Value,
    obj: &Map<String, Value>,
    p: &mut Problems,
) -> Option<Consumer> {
    let Some(username) = username.as_str().filter(|u| {
        !u.is_empty()
            && u.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    }) else {
        p.add(
            label,
            "username",
            "must be a string of letters, digits, `_`, `-` and `.`",
        );
        return None;
    };
    let label = format!("{label} (consumer `{username}`)");
    let mut c = Consumer {
        label: label.clone(),
        username: username.to_string(),
        rate_limiting: None,
        keys: Vec::new(),
    };
    for (field, v) in obj {
        match field.as_str() {
            "username" => {}
            "plugins" => {
                let Some(plugins) = v.as_object() else {
                    p.add(&label, "plugins", "must be an object");
                    continue;
                };
                for (name, conf) in plugins {
                    let at = format!("plugins.{name}");
                    match (name.as_str(), conf.as_object()) {
                        (_, None) => p.add(&label, &at, "must be an object"),
                        (_, Some(o)) if o.contains_key("_meta") => p.add(&label, &format!("{at}._meta"), "APISIX plugin metadata does not carry over"),
                        ("ai-rate-limiting", Some(_)) => c.rate_limiting = Some(conf.clone()),
                        ("key-auth", Some(o)) => c.keys.extend(read_key(&label, &at, o, p)),
                        (other, Some(_)) => p.add(&label, &at, format!("plugin `{other}` does not carry over: a consumer's key-auth and ai-rate-limiting do")),
                    }
                }
            }
            "credentials" => match v.as_array() {
                Some(list) => {
                    for (i, cred) in list.iter().enumerate() {
                        let at = format!("{label}: credentials[{i}]");
                        match cred.as_object() {
                            Some(o) => c.keys.extend(read_credential(&at, o, p)),
                            None => p.add(&at, "", "must be an object"),
                        }
                    }
                }
                None => p.add(
                    &label,
                    "credentials",
                    "must be an array of credential objects",
                ),
            },
            "group_id" => p.add(
                &label,
                "group_id",
                "consumer groups do not carry over: put the group's plugins on the consumer",
            ),
            f if DESCRIPTIVE.contains(&f) => {}
            f => p.add(
                &label,
                f,
                "is not an APISIX consumer field envoy-config knows",
            ),
        }
    }
    Some(c)
}

/// A credential object: `plugins` with one `key-auth`.
fn read_credential(label: &str, obj: &Map<String, Value>, p: &mut Problems) -> Vec<String> {
    let before = p.0.len();
    let mut keys = Vec::new();
    for (field, v) in obj {
        match field.as_str() {
            "plugins" => {
                let Some(plugins) = v.as_object() else {
                    p.add(label, "plugins", "must be an object");
                    continue;
                };
                for (name, conf) in plugins {
                    let at = format!("plugins.{name}");
                    match (name.as_str(), conf.as_object()) {
                        ("key-auth", Some(o)) if !o.contains_key("_meta") => keys.extend(read_key(label, &at, o, p)),
                        ("key-auth", _) => p.add(label, &at, "must be an object with `key`"),
                        (other, _) => p.add(label, &at, format!("`{other}` credentials do not carry over: only key-auth does (Envoy's api_key_auth)")),
                    }
                }
            }
            "id" => {}
            f if DESCRIPTIVE.contains(&f) => {}
            f => p.add(
                label,
                f,
                "is not an APISIX credential field envoy-config knows",
            ),
        }
    }
    if keys.is_empty() && p.0.len() == before {
        p.add(label, "plugins", "a credential needs a key-auth `key`");
    }
    keys
}

/// A consumer's or credential's `key-auth`. Values are never echoed: they are secrets.
fn read_key(label: &str, at: &str, conf: &Map<String, Value>, p: &mut Problems) -> Option<String> {
    for f in conf.keys().filter(|f| f.as_str() != "key") {
        p.add(
            label,
            &format!("{at}.{f}"),
            "is not a consumer-side key-auth field (only `key` is)",
        );
    }
    let key = match conf.get("key") {
        Some(Value::String(k)) => k,
        _ => {
            p.add(
                label,
                &format!("{at}.key"),
                "is required and must be a string",
            );
            return None;
        }
    };
    let why = if key.is_empty() {
        Some("must not be empty")
    } else if key.starts_with("$env://") || key.starts_with("$secret://") {
        Some("is a secret reference: envoy-config writes the keys into api_key_auth, so give the key itself")
    } else if key.starts_with("Bearer ") {
        Some("must not start with `Bearer `: Envoy's api_key_auth strips that prefix from the header")
    } else if key.chars().any(char::is_control) {
        Some("must not contain control characters")
    } else {
        None
    };
    match why {
        Some(why) => {
            p.add(label, &format!("{at}.key"), why);
            None
        }
        None => Some(key.clone()),
    }
}
