"""langchain-openai: ``bind_tools([get_weather])`` and a tool round-trip: the model calls the tool (forced by
name: the 135M model seldom calls one on "auto"), the ToolMessage goes back with the tools still bound (auto),
and the model answers in text. Prints ``{"tool_name", "tool_args", "answer"}``.
"""

import json
import os

from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI


@tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"It is sunny and 21 degrees in {city}."


llm = ChatOpenAI(model="council", base_url=os.environ["COUNCIL_BASE_URL"], api_key="sk-council-test",
                 max_tokens=64, temperature=0)
messages = [HumanMessage("What is the weather in Paris? Use the get_weather tool.")]
called = llm.bind_tools([get_weather], tool_choice="get_weather").invoke(messages)
if not called.tool_calls:
    raise SystemExit(f"no tool call: {called!r}")
call = called.tool_calls[0]
messages += [called, ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])]
answer = llm.bind_tools([get_weather]).invoke(messages)
print(json.dumps({"tool_name": call["name"], "tool_args": call["args"], "answer": answer.content,
                  "answer_tool_calls": answer.tool_calls}))
