//! Anthropic Messages clients (the `anthropic` SDKs, Claude Code) served by an
//! OpenAI-compatible instance: the Messages request becomes a chat request (system, turns,
//! content blocks, tool use and results, images, tools), and the answer comes back as a
//! `message`, streamed as Anthropic's event sequence while the chunks arrive.

use serde_json::{Map, Value};

use super::{is_default, merge_options, object, text_of, untranslatable, upstream, Translating};
use crate::config::Instance;
use crate::error::ProxyError;
use crate::json::{self, or_null};
use crate::protocol::tally::Tally;
use crate::protocol::{Answering, Reader, Request, Upstream};
use crate::provider::ApiKind;

const TO: &str = "OpenAI chat completions";

/// Client headers of the Anthropic protocol, dropped when a Messages request is translated.
pub const ANTHROPIC_HEADERS: &[&str] = &[
    "anthropic-version",
    "anthropic-beta",
    "anthropic-dangerous-direct-browser-access",
];

pub fn shape<'c>(instance: &'c Instance, req: &Request<'_>) -> Result<Upstream<'c>, ProxyError> {
    let path = crate::protocol::path(instance, ApiKind::Chat)?;
    let client = object(req)?;
    let mut body = request(&client, req.client.stream)?;
    merge_options(&mut body, instance);
    if crate::protocol::streams(instance, &req.client) {
        // The usage comes last in an OpenAI stream, and only when asked for.
        let options = body.entry("stream_options").or_insert_with(json::empty);
        if let Some(o) = options.as_object_mut() {
            o.insert("include_usage".into(), Value::Bool(true));
        }
    }
    Ok(upstream(
        instance,
        path,
        body,
        req,
        false,
        ANTHROPIC_HEADERS,
    ))
}

/// The chat request of a Messages request.
pub fn request(
    client: &Map<String, Value>,
    stream: bool,
) -> Result<Map<String, Value>, ProxyError> {
    let mut out = Map::new();
    let mut system = None;
    let mut turns = Vec::new();
    let mut parallel = true;
    for (key, value) in client {
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            "model" | "max_tokens" | "temperature" | "top_p" => {
                out.insert(key.clone(), json::copy(value));
            }
            "system" => {
                let text = text_of(value).ok_or_else(|| untranslatable("system", TO))?;
                system = Some(json::obj([
                    ("role", "system".into()),
                    ("content", text.into()),
                ]));
            }
            "messages" => turns = messages(value)?,
            "stop_sequences" => {
                out.insert("stop".into(), json::copy(value));
            }
            "stream" => {}
            "tools" => {
                out.insert("tools".into(), tools(value)?);
            }
            "tool_choice" => {
                if value.get("disable_parallel_tool_use") == Some(&Value::Bool(true)) {
                    parallel = false;
                }
                out.insert("tool_choice".into(), choice(value)?);
            }
            "metadata" => {
                let obj = value
                    .as_object()
                    .ok_or_else(|| untranslatable("metadata", TO))?;
                for (k, v) in obj {
                    match k.as_str() {
                        "user_id" if v.is_string() => {
                            out.insert("user".into(), json::copy(v));
                        }
                        _ if v.is_null() => {}
                        _ => return Err(untranslatable(format!("metadata.{k}"), TO)),
                    }
                }
            }
            "thinking" if value.get("type").and_then(Value::as_str) == Some("disabled") => {}
            k if is_default(k, value) => {}
            k => return Err(untranslatable(k, TO)),
        }
    }
    let mut messages: Vec<Value> = system.into_iter().collect();
    messages.append(&mut turns);
    out.insert("messages".into(), Value::Array(messages));
    if !parallel {
        out.insert("parallel_tool_calls".into(), Value::Bool(false));
    }
    if stream {
        out.insert("stream".into(), Value::Bool(true));
    }
    Ok(out)
}

#[inline(never)] // compiled on its own: see "Round 5" in docs/performance.md
fn messages(value: &Value) -> Result<Vec<Value>, ProxyError> {
    let list = value
        .as_array()
        .ok_or_else(|| untranslatable("messages", TO))?;
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        let content = m.get("content").unwrap_or(&Value::Null);
        match (role, content) {
            ("user" | "assistant", Value::String(_)) => {
                out.push(json::obj([
                    ("role", role.into()),
                    ("content", json::copy(content)),
                ]));
            }
            ("user", Value::Array(blocks)) => user(blocks, i, &mut out)?,
            ("assistant", Value::Array(blocks)) => out.push(assistant(blocks, i)?),
            ("user" | "assistant", _) => {
                return Err(untranslatable(format!("messages[{i}].content"), TO))
            }
            _ => return Err(untranslatable(format!("messages[{i}].role"), TO)),
        }
    }
    Ok(out)
}

/// A user turn: its tool results become `tool` messages (first, answering the previous
/// turn's calls), the rest one user message.
#[inline(never)] // compiled on its own: see "Round 5" in docs/performance.md
fn user(blocks: &[Value], i: usize, out: &mut Vec<Value>) -> Result<(), ProxyError> {
    let mut parts = Vec::new();
    let mut images = false;
    for (j, b) in blocks.iter().enumerate() {
        let at = format!("messages[{i}].content[{j}]");
        match b.get("type").and_then(Value::as_str).unwrap_or("") {
            "text" => parts.push(json::obj([
                ("type", "text".into()),
                ("text", or_null(b.get("text"))),
            ])),
            "image" => {
                parts.push(image(b).ok_or_else(|| untranslatable(format!("{at}.source"), TO))?);
                images = true;
            }
            "tool_result" => {
                let content = match b.get("content") {
                    None | Some(Value::Null) => String::new(),
                    Some(c) => {
                        text_of(c).ok_or_else(|| untranslatable(format!("{at}.content"), TO))?
                    }
                };
                out.push(json::obj([
                    ("role", "tool".into()),
                    ("tool_call_id", or_null(b.get("tool_use_id"))),
                    ("content", content.into()),
                ]));
            }
            other => return Err(untranslatable(format!("{at} ({other})"), TO)),
        }
    }
    if parts.is_empty() {
        return Ok(());
    }
    // Many OpenAI-compatible servers take only a string for a text-only turn.
    let content = if images {
        Value::Array(parts)
    } else {
        Value::String(text_of(&Value::Array(parts)).unwrap_or_default())
    };
    out.push(json::obj([("role", "user".into()), ("content", content)]));
    Ok(())
}

/// An Anthropic image block as an OpenAI image part.
fn image(block: &Value) -> Option<Value> {
    let source = block.get("source")?;
    let s = |k: &str| source.get(k).and_then(Value::as_str);
    let url = match s("type")? {
        "base64" => format!("data:{};base64,{}", s("media_type")?, s("data")?),
        "url" => s("url")?.to_string(),
        _ => return None,
    };
    let image_url = json::obj([("url", url.into())]);
    Some(json::obj([
        ("type", "image_url".into()),
        ("image_url", image_url),
    ]))
}

#[inline(never)] // compiled on its own: see "Round 5" in docs/performance.md
fn assistant(blocks: &[Value], i: usize) -> Result<Value, ProxyError> {
    let mut text: Option<String> = None;
    let mut calls = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        match b.get("type").and_then(Value::as_str).unwrap_or("") {
            "text" => text
                .get_or_insert_with(String::new)
                .push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
            "tool_use" => {
                let input = b.get("input").map(json::copy).unwrap_or_else(json::empty);
                let function = json::obj([
                    ("name", or_null(b.get("name"))),
                    ("arguments", json::to_text(&input).into()),
                ]);
                calls.push(json::obj([
                    ("id", or_null(b.get("id"))),
                    ("type", "function".into()),
                    ("function", function),
                ]));
            }
            other => {
                return Err(untranslatable(
                    format!("messages[{i}].content[{j}] ({other})"),
                    TO,
                ))
            }
        }
    }
    let mut m = json::obj([("role", "assistant".into()), ("content", text.into())]);
    if let (false, Some(o)) = (calls.is_empty(), m.as_object_mut()) {
        o.insert("tool_calls".into(), Value::Array(calls));
    }
    Ok(m)
}

#[inline(never)] // compiled on its own: see "Round 5" in docs/performance.md
fn tools(value: &Value) -> Result<Value, ProxyError> {
    let list = value
        .as_array()
        .ok_or_else(|| untranslatable("tools", TO))?;
    let mut out = Vec::with_capacity(list.len());
    for (k, t) in list.iter().enumerate() {
        let mut function = Map::new();
        for (key, v) in t.as_object().into_iter().flatten() {
            match key.as_str() {
                "name" | "description" => {
                    function.insert(key.clone(), json::copy(v));
                }
                "input_schema" => {
                    function.insert("parameters".into(), json::copy(v));
                }
                // A caching hint: OpenAI-compatible providers cache on their own.
                "cache_control" => {}
                "type" if v == "custom" => {}
                k2 if is_default(k2, v) => {}
                k2 => return Err(untranslatable(format!("tools[{k}].{k2}"), TO)),
            }
        }
        out.push(json::obj([
            ("type", "function".into()),
            ("function", Value::Object(function)),
        ]));
    }
    Ok(Value::Array(out))
}

#[inline(never)] // compiled on its own: see "Round 5" in docs/performance.md
fn choice(value: &Value) -> Result<Value, ProxyError> {
    let c = match value.get("type").and_then(Value::as_str) {
        Some("auto") => Value::from("auto"),
        Some("any") => Value::from("required"),
        Some("none") => Value::from("none"),
        Some("tool") => {
            let function = json::obj([("name", or_null(value.get("name")))]);
            json::obj([("type", "function".into()), ("function", function)])
        }
        _ => return Err(untranslatable("tool_choice", TO)),
    };
    Ok(c)
}

/// Anthropic's `stop_reason` for OpenAI's `finish_reason`.
pub fn stop_reason(finish: &str) -> &'static str {
    match finish {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

pub fn reader(a: Answering) -> Box<dyn Reader> {
    Box::new(Translating::new(
        a.sse,
        ToMessages {
            ok: (200..300).contains(&a.status),
            status: a.status,
            usage: None,
            tally: Tally::new(a.collect_text),
            id: String::new(),
            started: false,
            finished: false,
            open: Open::None,
            blocks: 0,
            stop: None,
        },
    ))
}

mod answer;
use answer::{Open, ToMessages};

#[cfg(test)]
mod tests;
