//! OpenAI chat clients served by an Anthropic instance: the chat request becomes a Messages
//! request (system messages, `max_tokens`, sampling, stop, tools and tool calls, images),
//! and the answer comes back as a chat completion, streamed chunk by chunk as the events
//! arrive, with the usage chunk when the client asked for it.

use serde_json::{Map, Value};

use super::{is_default, merge_options, object, text_of, untranslatable, upstream, Translating};
use crate::config::Instance;
use crate::error::ProxyError;
use crate::json::{self, or_null};
use crate::protocol::anthropic::OPENAI_HEADERS;
use crate::protocol::tally::Tally;
use crate::protocol::{Answering, Reader, Request, Upstream};
use crate::provider::ApiKind;
use crate::usage::Usage;

const TO: &str = "Anthropic Messages";

/// `max_tokens` when the client gives none (Anthropic requires it; every current Claude
/// model allows this many).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

pub fn shape<'c>(instance: &'c Instance, req: &Request<'_>) -> Result<Upstream<'c>, ProxyError> {
    let path = crate::protocol::path(instance, ApiKind::Messages)?;
    let client = object(req)?;
    let mut body = request(&client, req.client.stream)?;
    merge_options(&mut body, instance);
    let asked_usage = client
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        == Some(&Value::Bool(true));
    Ok(upstream(
        instance,
        path,
        body,
        req,
        !asked_usage,
        OPENAI_HEADERS,
    ))
}

/// The Messages request of a chat request.
pub fn request(
    client: &Map<String, Value>,
    stream: bool,
) -> Result<Map<String, Value>, ProxyError> {
    let mut out = Map::new();
    let mut max_tokens = None;
    let mut tool_choice = None;
    let mut parallel = true;
    for (key, value) in client {
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            "model" | "temperature" | "top_p" => {
                out.insert(key.clone(), json::copy(value));
            }
            "messages" => {
                let (system, messages) = messages(value)?;
                if let Some(s) = system {
                    out.insert("system".into(), s);
                }
                out.insert("messages".into(), messages);
            }
            "max_completion_tokens" => max_tokens = Some(json::copy(value)),
            "max_tokens" => {
                max_tokens.get_or_insert_with(|| json::copy(value));
            }
            "stop" => {
                let stops = match value {
                    Value::String(_) => Value::Array(vec![json::copy(value)]),
                    Value::Array(_) => json::copy(value),
                    _ => return Err(untranslatable("stop", TO)),
                };
                out.insert("stop_sequences".into(), stops);
            }
            "stream" | "stream_options" => {}
            "tools" => {
                out.insert("tools".into(), tools(value)?);
            }
            "tool_choice" => tool_choice = Some(choice(value)?),
            "parallel_tool_calls" => {
                parallel = value
                    .as_bool()
                    .ok_or_else(|| untranslatable("parallel_tool_calls", TO))?;
            }
            "user" => {
                out.insert(
                    "metadata".into(),
                    json::obj([("user_id", json::copy(value))]),
                );
            }
            "response_format" if value.get("type").and_then(Value::as_str) == Some("text") => {}
            k if is_default(k, value) => {}
            k => return Err(untranslatable(k, TO)),
        }
    }
    if !parallel {
        let mut c = tool_choice.unwrap_or_else(|| json::obj([("type", "auto".into())]));
        if c.get("type").and_then(Value::as_str) != Some("none") {
            if let Some(o) = c.as_object_mut() {
                o.insert("disable_parallel_tool_use".into(), Value::Bool(true));
            }
        }
        tool_choice = Some(c);
    }
    if let Some(c) = tool_choice {
        out.insert("tool_choice".into(), c);
    }
    let max = max_tokens.unwrap_or_else(|| DEFAULT_MAX_TOKENS.into());
    out.insert("max_tokens".into(), max);
    if stream {
        out.insert("stream".into(), Value::Bool(true));
    }
    Ok(out)
}

/// System messages gathered into `system`; the rest as Messages turns, tool results as
/// `tool_result` blocks of a user turn.
fn messages(value: &Value) -> Result<(Option<Value>, Value), ProxyError> {
    let list = value
        .as_array()
        .ok_or_else(|| untranslatable("messages", TO))?;
    let mut system: Vec<Value> = Vec::new();
    let mut out: Vec<Value> = Vec::new();
    for (i, m) in list.iter().enumerate() {
        let at = |f: &str| format!("messages[{i}]{f}");
        let obj = m.as_object().ok_or_else(|| untranslatable(at(""), TO))?;
        let role = obj.get("role").and_then(Value::as_str).unwrap_or("");
        let allowed: &[&str] = match role {
            "system" | "developer" | "user" => &["role", "content"],
            "assistant" => &["role", "content", "tool_calls", "refusal"],
            "tool" => &["role", "content", "tool_call_id"],
            _ => return Err(untranslatable(at(".role"), TO)),
        };
        if let Some((k, _)) = obj
            .iter()
            .find(|(k, v)| !v.is_null() && !allowed.contains(&k.as_str()))
        {
            return Err(untranslatable(at(&format!(".{k}")), TO));
        }
        let content = obj.get("content").unwrap_or(&Value::Null);
        match role {
            "system" | "developer" => {
                let text = text_of(content).ok_or_else(|| untranslatable(at(".content"), TO))?;
                system.push(json::obj([("type", "text".into()), ("text", text.into())]));
            }
            "user" => {
                let content = user_content(content, i)?;
                out.push(json::obj([("role", "user".into()), ("content", content)]));
            }
            "assistant" => out.push(assistant(obj, i)?),
            _ => {
                let id = obj
                    .get("tool_call_id")
                    .map(json::copy)
                    .unwrap_or(Value::Null);
                let text = text_of(content).ok_or_else(|| untranslatable(at(".content"), TO))?;
                let block = json::obj([
                    ("type", "tool_result".into()),
                    ("tool_use_id", id),
                    ("content", text.into()),
                ]);
                push_tool_result(&mut out, block);
            }
        }
    }
    let system = match system.as_slice() {
        [] => None,
        [one] => one.get("text").map(json::copy),
        _ => Some(Value::Array(system)),
    };
    Ok((system, Value::Array(out)))
}

/// Consecutive tool results share one user turn, as Anthropic wants them.
fn push_tool_result(out: &mut Vec<Value>, block: Value) {
    let last_is_results = out.last().is_some_and(|m| {
        m.get("content")
            .and_then(Value::as_array)
            .and_then(|c| c.first())
            .and_then(|b| b.get("type"))
            .and_then(Value::as_str)
            == Some("tool_result")
    });
    if last_is_results {
        if let Some(Value::Array(blocks)) = out.last_mut().and_then(|m| m.get_mut("content")) {
            blocks.push(block);
            return;
        }
    }
    out.push(json::obj([
        ("role", "user".into()),
        ("content", Value::Array(vec![block])),
    ]));
}

#[inline(never)] // compiled on its own: see "Round 5" in docs/performance.md
fn user_content(content: &Value, i: usize) -> Result<Value, ProxyError> {
    let parts = match content {
        Value::String(_) => return Ok(json::copy(content)),
        Value::Array(parts) => parts,
        _ => return Err(untranslatable(format!("messages[{i}].content"), TO)),
    };
    let mut blocks = Vec::with_capacity(parts.len());
    for (j, p) in parts.iter().enumerate() {
        let at = format!("messages[{i}].content[{j}]");
        match p.get("type").and_then(Value::as_str) {
            Some("text") => {
                let text = or_null(p.get("text"));
                blocks.push(json::obj([("type", "text".into()), ("text", text)]));
            }
            Some("image_url") => {
                let url = p
                    .get("image_url")
                    .and_then(|u| u.get("url"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| untranslatable(format!("{at}.image_url"), TO))?;
                blocks
                    .push(image(url).ok_or_else(|| untranslatable(format!("{at}.image_url"), TO))?);
            }
            Some(other) => return Err(untranslatable(format!("{at} ({other})"), TO)),
            None => return Err(untranslatable(at, TO)),
        }
    }
    Ok(Value::Array(blocks))
}

/// An image part's URL as an Anthropic image block: a `data:` URL as base64, else a URL.
fn image(url: &str) -> Option<Value> {
    let Some(rest) = url.strip_prefix("data:") else {
        let source = json::obj([("type", "url".into()), ("url", url.into())]);
        return Some(json::obj([("type", "image".into()), ("source", source)]));
    };
    let at = crate::text::find(rest, ";base64,")?;
    let media_type = rest.get(..at)?;
    let data = rest.get(at.saturating_add(";base64,".len())..)?;
    let source = json::obj([
        ("type", "base64".into()),
        ("media_type", media_type.into()),
        ("data", data.into()),
    ]);
    Some(json::obj([("type", "image".into()), ("source", source)]))
}

#[inline(never)] // compiled on its own: see "Round 5" in docs/performance.md
fn assistant(obj: &Map<String, Value>, i: usize) -> Result<Value, ProxyError> {
    let mut blocks = Vec::new();
    match obj.get("content") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.is_empty() => {}
        Some(c) => {
            let text =
                text_of(c).ok_or_else(|| untranslatable(format!("messages[{i}].content"), TO))?;
            blocks.push(json::obj([("type", "text".into()), ("text", text.into())]));
        }
    }
    let calls = obj.get("tool_calls").and_then(Value::as_array);
    for (k, call) in calls.into_iter().flatten().enumerate() {
        let at = format!("messages[{i}].tool_calls[{k}]");
        let f = call.get("function");
        let args = f
            .and_then(|f| f.get("arguments"))
            .and_then(Value::as_str)
            .unwrap_or("{}");
        let input: Value =
            serde_json::from_slice(if args.trim().is_empty() { "{}" } else { args }.as_bytes())
                .ok()
                .filter(Value::is_object)
                .ok_or_else(|| untranslatable(format!("{at}.function.arguments"), TO))?;
        blocks.push(json::obj([
            ("type", "tool_use".into()),
            ("id", or_null(call.get("id"))),
            ("name", or_null(f.and_then(|f| f.get("name")))),
            ("input", input),
        ]));
    }
    let content = match blocks.as_slice() {
        [] => Value::from(""),
        [one] if one.get("type").and_then(Value::as_str) == Some("text") => {
            one.get("text").map(json::copy).unwrap_or(Value::Null)
        }
        _ => Value::Array(blocks),
    };
    Ok(json::obj([
        ("role", "assistant".into()),
        ("content", content),
    ]))
}

#[inline(never)] // compiled on its own: see "Round 5" in docs/performance.md
fn tools(value: &Value) -> Result<Value, ProxyError> {
    let list = value
        .as_array()
        .ok_or_else(|| untranslatable("tools", TO))?;
    let mut out = Vec::with_capacity(list.len());
    for (k, t) in list.iter().enumerate() {
        let at = |f: &str| format!("tools[{k}]{f}");
        if t.get("type").and_then(Value::as_str) != Some("function") {
            return Err(untranslatable(at(".type"), TO));
        }
        let f = t
            .get("function")
            .and_then(Value::as_object)
            .ok_or_else(|| untranslatable(at(".function"), TO))?;
        let mut tool = Map::new();
        for (key, v) in f {
            match key.as_str() {
                "name" | "description" => {
                    tool.insert(key.clone(), json::copy(v));
                }
                "parameters" => {
                    tool.insert("input_schema".into(), json::copy(v));
                }
                k if is_default(k, v) => {}
                k => return Err(untranslatable(at(&format!(".function.{k}")), TO)),
            }
        }
        tool.entry("input_schema").or_insert_with(|| {
            json::obj([("type", "object".into()), ("properties", json::empty())])
        });
        out.push(Value::Object(tool));
    }
    Ok(Value::Array(out))
}

#[inline(never)] // compiled on its own: see "Round 5" in docs/performance.md
fn choice(value: &Value) -> Result<Value, ProxyError> {
    let c = match value.as_str() {
        Some("none") => json::obj([("type", "none".into())]),
        Some("auto") => json::obj([("type", "auto".into())]),
        Some("required") => json::obj([("type", "any".into())]),
        _ => match value.get("function").and_then(|f| f.get("name")) {
            Some(name) => json::obj([("type", "tool".into()), ("name", json::copy(name))]),
            None => return Err(untranslatable("tool_choice", TO)),
        },
    };
    Ok(c)
}

/// OpenAI's `finish_reason` for Anthropic's `stop_reason`.
pub fn finish_reason(stop: &str) -> &'static str {
    match stop {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

/// OpenAI's `usage` object for counted usage.
pub fn openai_usage(u: &Usage) -> Value {
    let details = json::obj([("cached_tokens", u.cached_tokens.into())]);
    json::obj([
        ("prompt_tokens", u.prompt_tokens.into()),
        ("completion_tokens", u.completion_tokens.into()),
        ("total_tokens", u.total_tokens.into()),
        ("prompt_tokens_details", details),
    ])
}

pub fn reader(a: Answering) -> Box<dyn Reader> {
    Box::new(Translating::new(
        a.sse,
        ToChat {
            ok: (200..300).contains(&a.status),
            status: a.status,
            created: a.now_s,
            include_usage: !a.drop_usage_event,
            usage: None,
            tally: Tally::new(a.collect_text),
            id: String::new(),
            tools: Vec::new(),
        },
    ))
}

mod answer;
use answer::ToChat;

#[cfg(test)]
mod tests;
