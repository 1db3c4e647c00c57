// Vercel AI SDK: generateObject with a zod schema through @ai-sdk/openai-compatible.
// "default": the provider's defaults (supportsStructuredOutputs false): the SDK sends response_format
// json_object WITHOUT the schema (and warns so), so nothing makes the model write the schema's keys.
// "structured": createOpenAICompatible({ supportsStructuredOutputs: true }): response_format json_schema.
// Prints {"city": {...} | null, "text": raw answer, "warnings": [...]}.
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { generateObject, NoObjectGeneratedError } from "ai";
import { z } from "zod";

globalThis.AI_SDK_LOG_WARNINGS = false;
const structured = process.argv[2] === "structured";
const council = createOpenAICompatible({ name: "council", baseURL: process.env.COUNCIL_BASE_URL,
  apiKey: "sk-council-test", ...(structured ? { supportsStructuredOutputs: true } : {}) });
try {
  const { object, warnings } = await generateObject({
    model: council("council"),
    schema: z.object({ name: z.string(), country: z.string() }),
    prompt: "Name one city in France.",
    maxOutputTokens: 64,
    maxRetries: 0,
  });
  console.log(JSON.stringify({ city: object, text: JSON.stringify(object), warnings }));
} catch (error) {
  if (structured || !NoObjectGeneratedError.isInstance(error)) throw error;
  console.log(JSON.stringify({ city: null, text: error.text, error: error.message,
    cause: String(error.cause?.message ?? "").slice(0, 300) }));
}
