"""Parsing and checking an OpenAI chat-completions request body, field by field.

``parse_chat_request(raw)`` returns a ``ChatRequest`` or raises ``InvalidRequestError`` naming the field to
fix (HTTP 400). It follows the OpenAI chat-completions reference (platform.openai.com/docs/api-reference/chat/
create): ``null`` means "not set" for every optional field; ranges are the reference's (temperature 0-2,
top_p 0-1, penalties -2..2, top_logprobs 0-20, logit_bias -100..100, seed a signed 64-bit integer);
``max_completion_tokens`` wins over the deprecated ``max_tokens`` (both are type-checked). Messages are checked
in ``council/server/openai/chat_messages.py``, tools and ``response_format`` in ``chat_tools.py``. Parameters
Council cannot honour (audio, predicted output, n > 1, reasoning options) are refused by name, never ignored,
and so is any field the reference does not have, at every level. Text that cannot be encoded as UTF-8 (an unpaired surrogate
such as ``"\\ud83d"``) is refused with the path of the string that holds it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from council.core.errors import InvalidRequestError
from council.server.openai.chat_messages import parse_messages
from council.server.openai.chat_tools import parse_tool_settings

COUNCIL_MODEL = "council"
TEMPERATURE_EPSILON = 1e-5  # below this a temperature is greedy decoding: logits / 1e-40 overflow to inf
SEED_RANGE = (-(2**63), 2**63 - 1)
MAX_TOP_LOGPROBS = 20

# Accepted and without effect on the answer, as the reference allows (hints, bookkeeping, identities).
ACCEPTED_HINTS = ("metadata", "store", "service_tier", "prompt_cache_key", "safety_identifier", "user")
# Refused by name when set: Council cannot honour them, and ignoring them would answer something else.
UNSUPPORTED = {
    "functions": "use 'tools' instead of the deprecated 'functions'",
    "function_call": "use 'tool_choice' instead of the deprecated 'function_call'",
    "audio": "audio output is not supported",
    "prediction": "predicted outputs are not supported",
    "web_search_options": "web search is not supported",
    "reasoning_effort": "the models behind Council are not reasoning models",
    "verbosity": "verbosity is not supported",
}
HANDLED = ("model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "temperature",
           "top_p", "stop", "seed", "n", "logprobs", "top_logprobs", "frequency_penalty", "presence_penalty",
           "logit_bias", "response_format", "modalities", "tools", "tool_choice", "parallel_tool_calls")
KNOWN = frozenset(HANDLED) | frozenset(ACCEPTED_HINTS) | frozenset(UNSUPPORTED)


@dataclass
class ChatRequest:
    model: str
    messages: list[dict[str, Any]]
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    user: str | None = None
    logprobs: bool = False
    top_logprobs: int = 0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool = True
    response_format: dict[str, Any] | None = None  # json_object or json_schema; None = text

    @property
    def may_call_tools(self) -> bool:
        """Whether the answer may be tool calls: such a stream is sent decided (calls are whole), not live."""
        return bool(self.tools) and self.tool_choice != "none"

    @property
    def query(self) -> str:
        """What the council answers and remembers: the last user message (the last message when none is)."""
        users = [m["content"] for m in self.messages if m["role"] == "user"]
        return users[-1] if users else self.messages[-1]["content"]

    def params(self, default_temperature: float) -> dict[str, Any]:
        """Sampling parameters for ``litellm.acompletion`` (only those the client set, plus temperature)."""
        temperature = default_temperature if self.temperature is None else self.temperature
        params: dict[str, Any] = {"temperature": 0.0 if temperature < TEMPERATURE_EPSILON else temperature}
        optional = {"max_tokens": self.max_tokens, "top_p": self.top_p, "seed": self.seed, "stop": self.stop or None,
                    "top_logprobs": self.top_logprobs or None,
                    "logit_bias": {str(k): v for k, v in self.logit_bias.items()} or None,
                    "frequency_penalty": self.frequency_penalty or None,
                    "presence_penalty": self.presence_penalty or None,
                    "tools": self.tools or None, "tool_choice": self.tool_choice if self.tools else None,
                    "parallel_tool_calls": False if self.tools and not self.parallel_tool_calls else None,
                    "response_format": self.response_format}
        params.update({name: value for name, value in optional.items() if value is not None})
        return params


def _bad(message: str, param: str | None = None, code: str = "invalid_request") -> InvalidRequestError:
    return InvalidRequestError(message, code=code, param=param)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _load(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise _bad(f"request body is not valid JSON: {exc}", code="invalid_json") from exc
    except RecursionError as exc:
        raise _bad("request body is nested too deeply", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise _bad("request body must be a JSON object", code="invalid_json")
    return body


def check_text(value: Any, path: str) -> None:
    """Raise if any string in ``value`` (keys included) cannot be encoded as UTF-8 (an unpaired surrogate)."""
    stack = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise _bad(f"{where or 'the body'} holds text that is not valid Unicode ({exc.reason} at "
                           f"character {exc.start}): send UTF-8 text, with surrogate pairs complete",
                           where or None, "invalid_encoding") from exc
        elif isinstance(item, dict):
            for key, inner in item.items():
                stack.append((key, where))
                stack.append((inner, f"{where}.{key}" if where else str(key)))
        elif isinstance(item, list):
            stack.extend((inner, f"{where}[{i}]") for i, inner in enumerate(item))


def _number(body: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(f"'{name}' must be a number, got {type(value).__name__}", name, "invalid_type")
    if not low <= value <= high:
        raise _bad(f"'{name}' must be between {low:g} and {high:g}, got {value}", name, "invalid_value")
    return float(value)


def _integer(body: dict[str, Any], name: str, low: int, high: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"'{name}' must be an integer, got {type(value).__name__}", name, "invalid_type")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise _bad(f"'{name}' must be {bound}, got {value}", name, "invalid_value")
    return value


def boolean(body: dict[str, Any], name: str, default: bool = False) -> bool:
    """``body[name]`` as a bool (``default`` when absent or null); refused by name when it is not one."""
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _bad(f"'{name}' must be true or false", name, "invalid_type")
    return value


def _string(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise _bad(f"'{name}' must be a string", name, "invalid_type")
    return value


def _stop(body: dict[str, Any]) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) for s in stop):
        raise _bad("'stop' must be a string or a list of up to 4 strings", "stop", "invalid_type")
    return [s for s in stop if s]


def _logit_bias(body: dict[str, Any]) -> dict[int, float]:
    bias = body.get("logit_bias")
    if bias is None:
        return {}
    if not isinstance(bias, dict):
        raise _bad("'logit_bias' must be an object mapping token ids to numbers", "logit_bias", "invalid_type")
    parsed: dict[int, float] = {}
    for key, value in bias.items():
        if not key.isascii() or not key.isdigit() or len(key) > 9:
            raise _bad(f"'logit_bias' key {key!r} is not a token id", "logit_bias", "invalid_value")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not -100 <= value <= 100:
            raise _bad(f"'logit_bias' value for {key} must be a number from -100 to 100", "logit_bias",
                       "invalid_value")
        parsed[int(key)] = float(value)
    return parsed


def _refuse_unsupported(body: dict[str, Any]) -> None:
    unknown = sorted(set(body) - KNOWN)
    if unknown:
        raise _bad(f"Unrecognized request argument supplied: {unknown[0]}", unknown[0], "unknown_parameter")
    for name, why in UNSUPPORTED.items():
        value = body.get(name)
        if value is None or (name == "functions" and value == []):
            continue
        raise _bad(f"'{name}' is not supported: {why}", name, "unsupported_parameter")
    modalities = body.get("modalities")
    if modalities is not None and (not isinstance(modalities, list) or set(modalities) - {"text"}):
        raise _bad("'modalities' may only be [\"text\"]: audio output is not supported", "modalities",
                   "unsupported_parameter")
    n = _integer(body, "n", 1, 128)
    if n is not None and n != 1:
        raise _bad("'n' is not supported above 1: Council answers each request once", "n", "unsupported_parameter")
    for name in ACCEPTED_HINTS:
        value = body.get(name)
        expected = {"metadata": dict, "store": bool}.get(name, str)
        if value is not None and not isinstance(value, expected):
            raise _bad(f"'{name}' must be a {expected.__name__}", name, "invalid_type")
    metadata = body.get("metadata") or {}
    if len(metadata) > 16 or any(len(k) > 64 or not isinstance(v, str) or len(v) > 512 for k, v in metadata.items()):
        raise _bad("'metadata' holds at most 16 pairs, keys up to 64 characters, string values up to 512",
                   "metadata", "invalid_value")


def parse_chat_request(raw: bytes) -> ChatRequest:
    """Parse and validate a request body; raises InvalidRequestError saying what to fix."""
    body = _load(raw)
    check_text(body, "")
    _refuse_unsupported(body)
    model = body.get("model")
    model = COUNCIL_MODEL if model is None else model
    if not isinstance(model, str) or not model:
        raise _bad("'model' must be a non-empty string", "model", "invalid_type")
    messages = parse_messages(body)
    tools = parse_tool_settings(body)
    legacy_max = _integer(body, "max_tokens", 1)  # checked even when max_completion_tokens overrides it
    max_tokens = _integer(body, "max_completion_tokens", 1)
    if max_tokens is None:
        max_tokens = legacy_max
    stream = boolean(body, "stream")
    options = body.get("stream_options")
    if options is not None:
        if not stream:
            raise _bad("'stream_options' is only allowed when 'stream' is true", "stream_options", "invalid_value")
        if not isinstance(options, dict) or set(options) - {"include_usage", "include_obfuscation"}:
            raise _bad("'stream_options' must be an object with 'include_usage' (and 'include_obfuscation')",
                       "stream_options", "invalid_type")
        for key in options:
            boolean(options, key)
    logprobs = boolean(body, "logprobs")
    top_logprobs = _integer(body, "top_logprobs", 0, MAX_TOP_LOGPROBS)
    if top_logprobs and not logprobs:
        raise _bad("'logprobs' must be true when 'top_logprobs' is used", "top_logprobs", "invalid_value")
    return ChatRequest(
        model=model, messages=messages, stream=stream,
        include_usage=bool((options or {}).get("include_usage")), max_tokens=max_tokens,
        temperature=_number(body, "temperature", 0.0, 2.0), top_p=_number(body, "top_p", 0.0, 1.0),
        stop=_stop(body), seed=_integer(body, "seed", *SEED_RANGE), user=_string(body, "user"),
        logprobs=logprobs, top_logprobs=top_logprobs or 0,
        frequency_penalty=_number(body, "frequency_penalty", -2.0, 2.0) or 0.0,
        presence_penalty=_number(body, "presence_penalty", -2.0, 2.0) or 0.0,
        logit_bias=_logit_bias(body), tools=tools.tools, tool_choice=tools.tool_choice,
        parallel_tool_calls=tools.parallel_tool_calls, response_format=tools.response_format,
    )
