"""Parsing and checking an OpenAI chat-completions request body."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from council.errors import InvalidRequestError

ROLES = ("system", "developer", "user", "assistant", "tool")
COUNCIL_MODEL = "council"


@dataclass
class ChatRequest:
    model: str
    messages: list[dict[str, str]]
    stream: bool = False
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    user: str | None = None
    logprobs: bool = False

    @property
    def query(self) -> str:
        """The last user message: what the council answers and remembers."""
        return next((m["content"] for m in reversed(self.messages) if m["role"] == "user"), "")

    def params(self, default_temperature: float) -> dict[str, Any]:
        params: dict[str, Any] = {"temperature": default_temperature if self.temperature is None else self.temperature}
        if self.max_tokens is not None:
            params["max_tokens"] = self.max_tokens
        if self.top_p is not None:
            params["top_p"] = self.top_p
        if self.stop:
            params["stop"] = self.stop
        if self.seed is not None:
            params["seed"] = self.seed
        return params


def _bad(message: str, param: str | None = None, code: str = "invalid_request") -> InvalidRequestError:
    return InvalidRequestError(message, code=code, param=param)


def _number(body: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(f"'{name}' must be a number, got {type(value).__name__}", name, "invalid_type")
    if not low <= value <= high:
        raise _bad(f"'{name}' must be between {low} and {high}, got {value}", name, "invalid_value")
    return float(value)


def _content(message: dict[str, Any], index: int) -> str:
    content = message.get("content")
    if content is None and message.get("role") == "assistant":
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise _bad(f"messages[{index}].content: only text parts are supported", f"messages[{index}].content")
            parts.append(part["text"])
        return "".join(parts)
    raise _bad(f"messages[{index}].content must be a string or a list of text parts", f"messages[{index}].content",
               "invalid_type")


def parse_chat_request(raw: bytes) -> ChatRequest:
    """Parse and validate a request body; raises InvalidRequestError saying what to fix."""
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _bad(f"request body is not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise _bad("request body must be a JSON object", code="invalid_json")
    model = body.get("model", COUNCIL_MODEL)
    if not isinstance(model, str) or not model:
        raise _bad("'model' must be a non-empty string", "model", "invalid_type")
    messages = body.get("messages")
    if messages is None:
        raise _bad("'messages' is required", "messages", "missing_field")
    if not isinstance(messages, list):
        raise _bad("'messages' must be a list", "messages", "invalid_type")
    if not messages:
        raise _bad("'messages' must not be empty", "messages", "invalid_value")
    parsed = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _bad(f"messages[{i}] must be an object", f"messages[{i}]", "invalid_type")
        role = message.get("role")
        if role not in ROLES:
            raise _bad(f"messages[{i}].role {role!r} is not one of {', '.join(ROLES)}", f"messages[{i}].role",
                       "invalid_value")
        parsed.append({"role": "system" if role == "developer" else role, "content": _content(message, i)})
    if not any(m["role"] == "user" for m in parsed):
        raise _bad("'messages' needs at least one message with role 'user'", "messages", "invalid_value")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)):
        raise _bad("'max_tokens' must be an integer", "max_tokens", "invalid_type")
    if max_tokens is not None and max_tokens < 1:
        raise _bad(f"'max_tokens' must be at least 1, got {max_tokens}", "max_tokens", "invalid_value")
    stop = body.get("stop") or []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) for s in stop):
        raise _bad("'stop' must be a string or a list of up to 4 strings", "stop", "invalid_type")
    for name in ("stream", "logprobs"):
        if not isinstance(body.get(name, False), bool):
            raise _bad(f"'{name}' must be true or false", name, "invalid_type")
    n = body.get("n", 1)
    if n != 1:
        raise _bad("only n=1 is supported", "n", "invalid_value")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise _bad("'seed' must be an integer", "seed", "invalid_type")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise _bad("'user' must be a string", "user", "invalid_type")
    return ChatRequest(
        model=model, messages=parsed, stream=body.get("stream", False), max_tokens=max_tokens,
        temperature=_number(body, "temperature", 0.0, 2.0), top_p=_number(body, "top_p", 0.0, 1.0),
        stop=stop, seed=seed, user=user, logprobs=body.get("logprobs", False),
    )
