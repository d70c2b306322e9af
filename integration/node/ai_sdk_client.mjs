// The Vercel AI SDK as a client: the default `openai(model)` of @ai-sdk/openai, which speaks
// the OpenAI Responses API (POST BASE_URL/v1/responses). Point it at the bare mock or at
// Envoy with the filter.
//
// Usage: node ai_sdk_client.mjs [BASE_URL] [CHECK ...]
//   BASE_URL  the server; default $AI_SDK_BASE_URL
//   CHECK     generateText  text, finish reason and usage of generateText
//             streamText    text (joined textStream), finish reason, usage and the errors
//                           streamText reports (it does not throw)
//             (both when none is named)
// Prints one JSON object, {"sdk": ..., "results": {CHECK: result}}; a check that failed has
// {"error": "..."} and the exit status is 1.
import { createRequire } from "node:module";
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, streamText } from "ai";

const args = process.argv.slice(2);
const base = args[0]?.includes("://") ? args.shift() : process.env.AI_SDK_BASE_URL;
if (!base) {
  console.error("usage: node ai_sdk_client.mjs BASE_URL [generateText] [streamText]");
  process.exit(2);
}
const openai = createOpenAI({ baseURL: `${base}/v1`, apiKey: "sk-client-key" });
const model = openai("gpt-4o-mini");
const prompt = "Say hello";

const checks = {
  async generateText() {
    const r = await generateText({ model, prompt, maxRetries: 0 });
    return { text: r.text, finishReason: r.finishReason, usage: r.usage };
  },
  async streamText() {
    const errors = [];
    const r = streamText({
      model, prompt, maxRetries: 0,
      onError: ({ error }) => errors.push(String(error?.message ?? error)),
    });
    let text = "";
    let pieces = 0;
    for await (const piece of r.textStream) {
      text += piece;
      pieces += 1;
    }
    const [finishReason, usage] = await Promise.all([r.finishReason, r.usage]);
    if (errors.length) throw new Error(`streamText reported: ${errors.join("; ")}`);
    return { text, pieces, finishReason, usage };
  },
};

const require = createRequire(import.meta.url);
const version = (name) => require(`${name}/package.json`).version;
const results = {};
let failed = false;
for (const name of args.length ? args : Object.keys(checks)) {
  try {
    if (!checks[name]) throw new Error(`no check named ${name}`);
    results[name] = await checks[name]();
  } catch (e) {
    failed = true;
    results[name] = { error: `${e?.constructor?.name}: ${e?.message ?? e}` };
  }
}
console.log(JSON.stringify({
  sdk: `ai ${version("ai")}, @ai-sdk/openai ${version("@ai-sdk/openai")}`,
  results,
}));
process.exit(failed ? 1 : 0);
