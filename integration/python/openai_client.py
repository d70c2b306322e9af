"""The official OpenAI Python SDK as a client of Envoy with the filter: chat, streaming
(with and without usage), embeddings, and the filter's errors as the SDK's exceptions.

Usage: openai_client.py BASE_URL LIMITED_BASE_URL
  BASE_URL          Envoy with one provider in front of the mock
  LIMITED_BASE_URL  Envoy with provider deepseek (no embeddings) and a 1-token limit
Prints one line per check and exits non-zero if any fails.
"""
import sys

import openai
from openai import OpenAI

base, limited = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=f"{base}/v1", api_key="sk-client-key", max_retries=0)
tight = OpenAI(base_url=f"{limited}/v1", api_key="sk-client-key", max_retries=0)
messages = [{"role": "user", "content": "Say hello"}]
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
