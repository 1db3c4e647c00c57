"""SamplingParams, the one form of sampling settings: litellm keywords out and back, limits, vLLM keywords.

No model is loaded: these check the conversions every layer relies on (router -> litellm -> provider).
"""

from __future__ import annotations

import pytest

from council.engine.grammar import WORDS
from council.engine.sampling import SamplingParams
from council.engine.vllm.tools import vllm_keywords

WEATHER = ({"type": "function", "function": {"name": "get_weather", "description": "Weather in a city.",
                                             "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                            "required": ["city"]}}},)

SETTINGS = [
    SamplingParams(),
    SamplingParams(max_tokens=32, temperature=0.7, top_p=0.9, seed=7),
    SamplingParams(stop=("\n\n",)),
    SamplingParams(stop=("Q:", "A:", "\n")),
    SamplingParams(top_logprobs=5, logit_bias={42: -100.0, 7: 2.5}, frequency_penalty=0.5, presence_penalty=-1.0),
    SamplingParams(tools=WEATHER, tool_choice="auto", parallel_tool_calls=False),
    SamplingParams(tools=WEATHER, tool_choice={"type": "function", "function": {"name": "get_weather"}}),
    SamplingParams(response_format={"type": "json_object"}, max_tokens=64),
    SamplingParams(seed=-1, temperature=2.0),
]


@pytest.mark.parametrize("params", SETTINGS, ids=range(len(SETTINGS)))
def test_litellm_keywords_give_the_same_settings_back(params: SamplingParams):
    assert SamplingParams.from_litellm(params.to_litellm()) == params


def test_keywords_are_openai_shaped():
    keywords = SamplingParams(logit_bias={42: -100.0}, stop=("x",), tools=WEATHER, tool_choice="auto",
                              parallel_tool_calls=False).to_litellm()
    assert keywords["logit_bias"] == {"42": -100.0}  # JSON object keys are strings
    assert keywords["stop"] == ["x"] and keywords["tools"] == list(WEATHER)
    assert keywords["parallel_tool_calls"] is False and keywords["tool_choice"] == "auto"
    assert SamplingParams().to_litellm() == {"temperature": 0.0}  # only what differs from the defaults
    assert "parallel_tool_calls" not in SamplingParams(parallel_tool_calls=False).to_litellm()  # no tools


def test_what_litellm_hands_a_provider_is_read_back():
    back = SamplingParams.from_litellm({"stop": "\n", "logit_bias": {"42": -100}, "max_completion_tokens": 9,
                                        "temperature": None, "top_p": None, "parallel_tool_calls": None})
    assert back == SamplingParams(stop=("\n",), logit_bias={42: -100.0}, max_tokens=9)


def test_a_tiny_temperature_is_greedy():
    assert SamplingParams(temperature=1e-40).temperature == 0.0
    assert SamplingParams.from_litellm({"temperature": 1e-9}).to_litellm()["temperature"] == 0.0
    assert SamplingParams(temperature=0.5).temperature == 0.5


def test_limited_never_exceeds_the_engines_limit():
    assert SamplingParams().limited(256) == 256
    assert SamplingParams(max_tokens=16).limited(256) == 16
    assert SamplingParams(max_tokens=4096).limited(256) == 256


def test_constraint_follows_tools_and_response_format():
    assert SamplingParams().constraint() is None
    assert SamplingParams(tools=WEATHER, tool_choice="none").constraint() == WORDS  # words, never a call
    assert SamplingParams(tools=WEATHER).constraint([]).kind == "tools"
    assert SamplingParams(response_format={"type": "json_object"}).constraint().kind != "tools"


def test_vllm_gets_the_settings_with_the_grammar_in_place_of_tools():
    params = SamplingParams(max_tokens=4096, temperature=0.3, stop=("\n",), logit_bias={5: 1.0}, tools=WEATHER,
                            tool_choice="required", parallel_tool_calls=False)
    constraint = params.constraint([])
    keywords = vllm_keywords(params, 256, constraint)
    assert keywords["max_tokens"] == 256 and keywords["temperature"] == 0.3 and keywords["stop"] == ["\n"]
    assert keywords["logit_bias"] == {"5": 1.0}
    assert keywords["extra_body"] == {"structured_outputs": {"grammar": constraint.lark}}
    assert not {"tools", "tool_choice", "parallel_tool_calls", "response_format"} & set(keywords)
    words = vllm_keywords(SamplingParams(), 64, WORDS)
    assert words["max_tokens"] == 64 and words["extra_body"]["structured_outputs"]["grammar"] == WORDS.lark
    assert "extra_body" not in vllm_keywords(SamplingParams(max_tokens=8), 64, None)
