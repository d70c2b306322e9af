"""The official OpenAI Python SDK as a client: point it at Envoy with the filter, or at the
bare mock.

Usage:
  openai_client.py BASE_URL LIMITED_BASE_URL
      The original checks through Envoy: chat, streaming (with and without usage),
      embeddings, and the filter's errors as the SDK's exceptions.
      BASE_URL          Envoy with one provider in front of the mock
      LIMITED_BASE_URL  Envoy with provider deepseek (no embeddings) and a 1-token limit
      Prints one line per check and exits non-zero if any fails.
  openai_client.py [BASE_URL] CHECK [CHECK ...]
      Named checks (BASE_URL defaults to $OPENAI_BASE_URL; the SDK adds /v1/...):
      responses           responses.create: id, text (output_text), usage
      responses_stream    responses.stream: event types, text from the deltas, and the final
                          response's text and usage
      completions         completions.create (legacy): text, finish reason, usage
      completions_stream  completions.create(stream=True), without and with
                          stream_options.include_usage: text, usage, usage chunks
      models              models.list(): the ids
      chat_tools          chat.completions.create with a tool, plain and streamed (with
                          include_usage): finish reason, tool calls (arguments parsed), usage
      chat                chat.completions.create: id, model, text, finish reason, usage
      chat_stream         chat.completions.create(stream=True) without include_usage: text,
                          chunks, finish reason, chunks that carried usage (expect 0)
      chat_stream_usage   the same with stream_options.include_usage: text and the usage of
                          the last chunk (whose choices are empty)
      Prints one JSON object, {"sdk": ..., "results": {CHECK: result}}; a check that raised
      has {"error": "..."} and the exit status is 1.
"""
import json
import os
import sys

import openai
from openai import OpenAI

messages = [{"role": "user", "content": "Say hello"}]
tools = [{"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a given location",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}}]


def usage(u):
    return u.model_dump(exclude_none=True) if u is not None else None


def check_responses(client):
    r = client.responses.create(model="gpt-4o-mini", input="Say hello")
    return {"id": r.id, "model": r.model, "status": r.status, "text": r.output_text,
            "usage": usage(r.usage)}


def check_responses_stream(client):
    types, deltas = [], []
    with client.responses.stream(model="gpt-4o-mini", input="Say hello") as stream:
        for event in stream:
            types.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    return {"types": types, "text": "".join(deltas), "final_text": final.output_text,
            "id": final.id, "status": final.status, "usage": usage(final.usage)}


def check_completions(client):
    r = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hello")
    return {"id": r.id, "object": r.object, "text": r.choices[0].text,
            "finish_reason": r.choices[0].finish_reason, "usage": usage(r.usage)}


def read_completion_stream(stream):
    text, finish, usages = "", None, []
    for chunk in stream:
        for c in chunk.choices:
            text += c.text
            finish = c.finish_reason or finish
        if chunk.usage is not None:
            usages.append(usage(chunk.usage))
    return {"text": text, "finish_reason": finish, "usage_chunks": len(usages),
            "usage": usages[-1] if usages else None}


def check_completions_stream(client):
    kw = {"model": "gpt-3.5-turbo-instruct", "prompt": "Say hello", "stream": True}
    return {"without_usage": read_completion_stream(client.completions.create(**kw)),
            "with_usage": read_completion_stream(client.completions.create(
                **kw, stream_options={"include_usage": True}))}


def check_models(client):
    return {"ids": [m.id for m in client.models.list()]}


def calls_of(message):
    return [{"id": t.id, "name": t.function.name, "arguments": json.loads(t.function.arguments)}
            for t in message.tool_calls or []]


def check_chat_tools(client):
    r = client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=tools)
    with client.chat.completions.stream(model="gpt-4o-mini", messages=messages, tools=tools,
                                        stream_options={"include_usage": True}) as stream:
        final = stream.get_final_completion()
    return {
        "plain": {"finish_reason": r.choices[0].finish_reason,
                  "tool_calls": calls_of(r.choices[0].message), "usage": usage(r.usage)},
        "stream": {"finish_reason": final.choices[0].finish_reason,
                   "tool_calls": calls_of(final.choices[0].message), "usage": usage(final.usage)},
    }


def check_chat(client):
    r = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    return {"id": r.id, "model": r.model, "text": r.choices[0].message.content,
            "finish_reason": r.choices[0].finish_reason, "usage": usage(r.usage)}


def stream_summary(chunks):
    return {"text": "".join(c.choices[0].delta.content or "" for c in chunks if c.choices),
            "chunks": len(chunks),
            "finish_reason": next((c.choices[0].finish_reason for c in reversed(chunks)
                                   if c.choices and c.choices[0].finish_reason), None),
            "usage_chunks": sum(1 for c in chunks if c.usage is not None)}


def check_chat_stream(client):
    return stream_summary(list(client.chat.completions.create(
        model="gpt-4o-mini", messages=messages, stream=True)))


def check_chat_stream_usage(client):
    chunks = list(client.chat.completions.create(
        model="gpt-4o-mini", messages=messages, stream=True,
        stream_options={"include_usage": True}))
    out = stream_summary(chunks)
    out["last_choices"] = len(chunks[-1].choices)
    out["usage"] = usage(chunks[-1].usage)
    return out


NAMED = {"chat": check_chat, "chat_stream": check_chat_stream,
         "chat_stream_usage": check_chat_stream_usage, "responses": check_responses, "responses_stream": check_responses_stream,
         "completions": check_completions, "completions_stream": check_completions_stream,
         "models": check_models, "chat_tools": check_chat_tools}

args = sys.argv[1:]
if args and any(a in NAMED for a in args):
    base = args.pop(0) if "://" in args[0] else os.environ.get("OPENAI_BASE_URL", "").removesuffix("/v1")
    named = OpenAI(base_url=f"{base}/v1", api_key="sk-client-key", max_retries=0)
    out, broken = {}, False
    for name in args:
        try:
            out[name] = NAMED[name](named)
        except Exception as e:  # noqa: BLE001 - report every failure to the caller
            broken = True
            out[name] = {"error": f"{type(e).__name__}: {e}"}
    print(json.dumps({"sdk": f"openai {openai.__version__}", "results": out}))
    sys.exit(1 if broken else 0)

base, limited = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=f"{base}/v1", api_key="sk-client-key", max_retries=0)
tight = OpenAI(base_url=f"{limited}/v1", api_key="sk-client-key", max_retries=0)
results = []


def check(name):
    def run(fn):
        try:
            fn()
            results.append((name, None))
        except Exception as e:  # noqa: BLE001 - report every failure
            results.append((name, f"{type(e).__name__}: {e}"))
    return run


@check("chat completion")
def _():
    r = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    assert r.choices[0].message.content == "Hello from the mock.", r
    assert r.usage.total_tokens == 18, r.usage
    assert r.model == "gpt-4o-mini", r.model


@check("streaming, chunks as they come, no usage unless asked")
def _():
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "tok0 tok1 tok2 ", text
    assert all(c.usage is None for c in chunks), [c.usage for c in chunks]


@check("streaming with stream_options.include_usage")
def _():
    chunks = list(client.chat.completions.create(
        model="gpt-4o-mini", messages=messages, stream=True,
        stream_options={"include_usage": True}))
    last = chunks[-1]
    assert last.choices == [] and last.usage.total_tokens == 18, last


@check("embeddings")
def _():
    r = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(r.data) == 2 and r.usage.prompt_tokens == 11, r


@check("filter's 400 raises BadRequestError with its message")
def _():
    try:
        tight.embeddings.create(model="x", input="a")
    except openai.BadRequestError as e:
        assert "does not offer embeddings" in str(e), str(e)
        assert e.code == "unsupported_request_kind", e.code
    else:
        raise AssertionError("no BadRequestError")


@check("rate-limit rejection raises RateLimitError with the message")
def _():
    tight.chat.completions.create(model="deepseek-chat", messages=messages)
    try:
        tight.chat.completions.create(model="deepseek-chat", messages=messages)
    except openai.RateLimitError as e:
        assert "quota exhausted for the demo" in str(e), str(e)
        assert e.response.headers.get("retry-after"), e.response.headers
    else:
        raise AssertionError("no RateLimitError")


failed = [(n, err) for n, err in results if err]
for name, err in results:
    print(f"{'ok  ' if err is None else 'FAIL'} {name}" + (f": {err}" if err else ""))
print(f"openai sdk {openai.__version__}: {len(results) - len(failed)} passed, {len(failed)} failed")
sys.exit(1 if failed else 0)
