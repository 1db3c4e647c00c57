// Vercel AI SDK: generateText with a tool and a round-trip: step 1 must call the tool (toolChoice "required":
// the 135M model seldom calls one on "auto"), step 2 (auto) answers in text from the tool's result.
// Prints {"tool_name", "tool_args", "answer"}.
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { generateText, isStepCount, tool } from "ai";
import { z } from "zod";

const council = createOpenAICompatible({ name: "council", baseURL: process.env.COUNCIL_BASE_URL,
  apiKey: "sk-council-test" });
const result = await generateText({
  model: council("council"),
  tools: {
    get_weather: tool({
      description: "The current weather in a city.",
      inputSchema: z.object({ city: z.string() }),
      execute: async ({ city }) => `It is sunny and 21 degrees in ${city}.`,
    }),
  },
  prepareStep: ({ stepNumber }) => ({ toolChoice: stepNumber === 0 ? "required" : "auto" }),
  stopWhen: isStepCount(2),
  prompt: "What is the weather in Paris?",
  maxOutputTokens: 64,
  maxRetries: 0,
});
const calls = result.steps.flatMap((step) => step.toolCalls);
if (calls.length === 0) throw new Error(`no tool call: ${JSON.stringify(result.steps)}`);
console.log(JSON.stringify({ tool_name: calls[0].toolName, tool_args: calls[0].input, answer: result.text }));
