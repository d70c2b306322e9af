"""The official Anthropic Python SDK as a client: Messages plain, streamed, with a tool, and
its error classes. Point it at the bare mock or at Envoy with the filter.

Usage: anthropic_client.py [BASE_URL] CHECK [CHECK ...]
  BASE_URL  the server (the SDK posts to BASE_URL/v1/messages); default $ANTHROPIC_BASE_URL
  CHECK     messages  one messages.create: text, stop reason, usage
            stream    messages.stream: the text from its text_stream helper, and the final
                      message's text, stop reason and usage
            tools     a tool offered: the tool_use block of messages.create, and of
                      messages.stream's final message (input parsed from input_json_delta)
            error     two messages.create calls the server is expected to refuse (say 429,
                      then 529): the exception class, status and error type of each
Prints one JSON object, {"sdk": ..., "results": {CHECK: result}}; a check that raised
unexpectedly has {"error": "..."} and the exit status is 1.
"""
import json
import os
import sys

import anthropic

args = sys.argv[1:]
base = args.pop(0) if args and "://" in args[0] else os.environ.get("ANTHROPIC_BASE_URL")
if not base or not args:
    sys.exit(__doc__)
client = anthropic.Anthropic(base_url=base, api_key="sk-ant-client-key", max_retries=0)
MODEL = "claude-sonnet-5"
messages = [{"role": "user", "content": "Say hello"}]
tools = [{
    "name": "get_weather",
    "description": "Get the current weather in a given location",
    "input_schema": {
        "type": "object",
        "properties": {"location": {"type": "string", "description": "The city and state"}},
        "required": ["location"],
    },
}]


def usage(u):
    return {k: getattr(u, k, None) for k in
            ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")}


def text_of(message):
    return "".join(b.text for b in message.content if b.type == "text")


def tool_uses(message):
    return [{"id": b.id, "name": b.name, "input": b.input} for b in message.content if b.type == "tool_use"]


def check_messages():
    m = client.messages.create(model=MODEL, max_tokens=256, messages=messages)
    return {"id": m.id, "model": m.model, "text": text_of(m), "stop_reason": m.stop_reason,
            "usage": usage(m.usage)}


def check_stream():
    with client.messages.stream(model=MODEL, max_tokens=256, messages=messages) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    return {"text": "".join(pieces), "pieces": len(pieces), "final_text": text_of(final),
            "id": final.id, "stop_reason": final.stop_reason, "usage": usage(final.usage)}


def check_tools():
    m = client.messages.create(model=MODEL, max_tokens=256, messages=messages, tools=tools)
    with client.messages.stream(model=MODEL, max_tokens=256, messages=messages, tools=tools) as stream:
        final = stream.get_final_message()
    return {
        "plain": {"stop_reason": m.stop_reason, "tool_use": tool_uses(m), "usage": usage(m.usage)},
        "stream": {"stop_reason": final.stop_reason, "tool_use": tool_uses(final),
                   "usage": usage(final.usage)},
    }


def check_error():
    seen = []
    for _ in range(2):
        try:
            client.messages.create(model=MODEL, max_tokens=16, messages=messages)
            seen.append({"class": None})
        except anthropic.APIStatusError as e:
            body = e.body if isinstance(e.body, dict) else {}
            seen.append({"class": type(e).__name__, "status": e.status_code,
                         "type": (body.get("error") or {}).get("type"),
                         "rate_limit": isinstance(e, anthropic.RateLimitError),
                         "overloaded": isinstance(e, anthropic.OverloadedError)})
    return seen


CHECKS = {"messages": check_messages, "stream": check_stream, "tools": check_tools,
          "error": check_error}
results, failed = {}, False
for name in args:
    try:
        results[name] = CHECKS[name]()
    except Exception as e:  # noqa: BLE001 - report every failure to the caller
        failed = True
        results[name] = {"error": f"{type(e).__name__}: {e}"}
print(json.dumps({"sdk": f"anthropic {anthropic.__version__}", "results": results}))
sys.exit(1 if failed else 0)
