"""pydantic-ai against Council: ``Agent(OpenAIChatModel("council", provider=OpenAIProvider(...)),
output_type=City)`` (its default tool output: a ``final_result`` tool it requires, ``tool_choice: "required"``),
or, with ``tool``, an agent with a function tool and a text answer after the tool's result. pydantic-ai refuses
a static ``tool_choice="required"``; a per-step callable forces the call until the tool has answered (the 135M
model seldom calls one on "auto"). Prints ``{"city"}`` or ``{"tool_name", "tool_args", "answer"}``.
"""

import json
import os
import sys

from pydantic import BaseModel
from pydantic_ai import Agent
from pydantic_ai.messages import ToolCallPart, ToolReturnPart
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider


class City(BaseModel):
    name: str
    country: str


model = OpenAIChatModel("council", provider=OpenAIProvider(base_url=os.environ["COUNCIL_BASE_URL"],
                                                            api_key="sk-council-test"))
settings = {"max_tokens": 64, "temperature": 0.0}


def tool_first(ctx):
    """Settings for this step: the tool call required until a tool result is in the conversation."""
    answered = any(isinstance(part, ToolReturnPart) for message in ctx.messages for part in message.parts)
    return settings if answered else {**settings, "tool_choice": "required"}

if sys.argv[1:] == ["tool"]:
    agent = Agent(model, instructions="Answer with the get_weather tool's result.")

    @agent.tool_plain
    def get_weather(city: str) -> str:
        """The current weather in a city."""
        return f"It is sunny and 21 degrees in {city}."

    result = agent.run_sync("What is the weather in Paris?", model_settings=tool_first)
    calls = [part for message in result.all_messages() for part in message.parts if isinstance(part, ToolCallPart)]
    if not calls:
        raise SystemExit(f"no tool call: {result.all_messages()!r}")
    print(json.dumps({"tool_name": calls[0].tool_name, "tool_args": calls[0].args_as_dict(),
                      "answer": result.output}))
else:
    # no max_tokens: the library's default; at 64 a repeated final_result call is cut mid-way (see the report)
    result = Agent(model, output_type=City).run_sync("Name one city in France.", model_settings={"temperature": 0.0})
    print(json.dumps({"city": result.output.model_dump()}))
