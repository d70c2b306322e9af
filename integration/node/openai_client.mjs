// The official openai npm package as a client of Envoy with the filter: chat, streaming,
// embeddings, and the filter's errors as the SDK's error classes.
// Usage: node openai_client.mjs BASE_URL LIMITED_BASE_URL (as integration/python/openai_client.py)
import OpenAI from "openai";

const [base, limited] = process.argv.slice(2);
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: "sk-client-key", maxRetries: 0 });
const tight = new OpenAI({ baseURL: `${limited}/v1`, apiKey: "sk-client-key", maxRetries: 0 });
const messages = [{ role: "user", content: "Say hello" }];
const results = [];

async function check(name, fn) {
  try {
    await fn();
    results.push([name, null]);
  } catch (e) {
    results.push([name, `${e?.constructor?.name}: ${e?.message ?? e}`]);
  }
}

function assert(cond, what) {
  if (!cond) throw new Error(`assertion failed: ${what}`);
}

await check("chat completion", async () => {
  const r = await client.chat.completions.create({ model: "gpt-4o-mini", messages });
  assert(r.choices[0].message.content === "Hello from the mock.", JSON.stringify(r));
  assert(r.usage.total_tokens === 18, JSON.stringify(r.usage));
});

await check("streaming, no usage unless asked", async () => {
  const stream = await client.chat.completions.create({ model: "gpt-4o-mini", messages, stream: true });
  let text = "";
  let usage = null;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta?.content ?? "";
    usage = usage ?? chunk.usage ?? null;
  }
  assert(text === "tok0 tok1 tok2 ", text);
  assert(usage === null, JSON.stringify(usage));
});

await check("streaming with include_usage", async () => {
  const stream = await client.chat.completions.create({
    model: "gpt-4o-mini", messages, stream: true, stream_options: { include_usage: true },
  });
  let last = null;
  for await (const chunk of stream) last = chunk;
  assert(last.choices.length === 0 && last.usage.total_tokens === 18, JSON.stringify(last));
});

await check("embeddings", async () => {
  const r = await client.embeddings.create({ model: "text-embedding-3-small", input: ["a", "b"] });
  assert(r.data.length === 2, JSON.stringify(r));
});

await check("filter's 400 is a BadRequestError", async () => {
  try {
    await tight.embeddings.create({ model: "x", input: "a" });
  } catch (e) {
    assert(e instanceof OpenAI.BadRequestError, e?.constructor?.name);
    assert(String(e.message).includes("does not offer embeddings"), e.message);
    return;
  }
  throw new Error("no BadRequestError");
});

await check("rate-limit rejection is a RateLimitError", async () => {
  await tight.chat.completions.create({ model: "deepseek-chat", messages });
  try {
    await tight.chat.completions.create({ model: "deepseek-chat", messages });
  } catch (e) {
    assert(e instanceof OpenAI.RateLimitError, e?.constructor?.name);
    assert(String(e.message).includes("quota exhausted for the demo"), e.message);
    return;
  }
  throw new Error("no RateLimitError");
});

const failed = results.filter(([, err]) => err);
for (const [name, err] of results) console.log(`${err ? "FAIL" : "ok  "} ${name}${err ? `: ${err}` : ""}`);
console.log(`openai npm: ${results.length - failed.length} passed, ${failed.length} failed`);
process.exit(failed.length ? 1 : 0);
