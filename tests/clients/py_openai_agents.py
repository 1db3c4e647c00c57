"""openai-agents: an agent with a ``@function_tool`` and a tool round-trip. ``chat``: the chat-completions model
(``OpenAIChatCompletionsModel(model="council", openai_client=AsyncOpenAI(...))``); ``responses``: the SDK's
default, the Responses API (``set_default_openai_client``, ``model="council"``). The first turn's tool call is
forced (``tool_choice="required"``; the SDK resets it to auto after the call). Prints
``{"tool_name", "tool_args", "answer"}``.
"""

import json
import os
import sys

from agents import (
    Agent,
    ModelSettings,
    OpenAIChatCompletionsModel,
    Runner,
    function_tool,
    set_default_openai_client,
    set_tracing_disabled,
)
from agents.items import ToolCallItem
from openai import AsyncOpenAI

set_tracing_disabled(True)
client = AsyncOpenAI(base_url=os.environ["COUNCIL_BASE_URL"], api_key="sk-council-test")


@function_tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"It is sunny and 21 degrees in {city}."


if sys.argv[1:] == ["responses"]:
    set_default_openai_client(client, use_for_tracing=False)
    # an answer cut at max_output_tokens is an "incomplete" response, which the SDK raises on (as with OpenAI);
    # the model's answer after the tool result needs more than 64 tokens
    model, max_tokens = "council", 128
else:
    model, max_tokens = OpenAIChatCompletionsModel(model="council", openai_client=client), 64
agent = Agent(name="weather", instructions="Answer with the get_weather tool's result.", model=model,
              tools=[get_weather], model_settings=ModelSettings(tool_choice="required", max_tokens=max_tokens))
result = Runner.run_sync(agent, "What is the weather in Paris?", max_turns=4)
calls = [item.raw_item for item in result.new_items if isinstance(item, ToolCallItem)]
if not calls:
    raise SystemExit(f"no tool call: {result.new_items!r}")
call = calls[0]
name = call.name if hasattr(call, "name") else call["name"]
arguments = call.arguments if hasattr(call, "arguments") else call["arguments"]
print(json.dumps({"tool_name": name, "tool_args": json.loads(arguments), "answer": result.final_output}))
