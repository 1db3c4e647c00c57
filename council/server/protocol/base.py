"""The base of every typed OpenAI protocol model, and one way to read a request body into one.

``parse(Model, raw)`` reads the bytes as JSON (NaN and Infinity refused, text checked to be valid Unicode),
validates them against ``Model`` and returns it, or raises ``InvalidRequestError`` (HTTP 400) whose ``param`` is
the path of the field to fix as OpenAI writes it (``messages[0].content[1].text``) and whose ``code`` says what
is wrong with it:

====================  ==============================================================================
code                  when
====================  ==============================================================================
invalid_json          the body is not one JSON object
invalid_encoding      a string holds an unpaired surrogate (``"\\ud83d"``)
unknown_parameter     a key the reference does not have, at any level (``extra="forbid"``)
missing_field         a required field is absent (or null)
invalid_type          a field of the wrong JSON type (strict: ``"10"`` is not an integer, ``1`` not a bool)
invalid_value         the right type, out of range or not one of the allowed values
(a validator's own)   ``PydanticCustomError(code, message, {"at": key})`` raised in a model, e.g.
                      ``unsupported_parameter`` (``at``, when given, is appended to the path)
====================  ==============================================================================

Models are strict (no coercion, as the OpenAI API is) and refuse unknown keys; ``null`` means "not set" for
every optional field, as the reference says. Run ``python -m council.server.protocol.base`` for nothing: the
module only defines.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails

from council.core.errors import InvalidRequestError

M = TypeVar("M", bound=BaseModel)

TYPE_ERRORS = ("_type", "_parsing")  # pydantic error types that mean "the wrong JSON type"
MISSING = ("missing", "none_required")
VALUE_ERRORS = ("literal_error", "enum", "greater_than", "less_than", "too_long", "too_short", "string_pattern",
                "union_tag_invalid", "multiple_of", "finite_number", "value_error", "assertion_error")


class OpenAIModel(BaseModel):
    """A protocol model: strict types, unknown keys refused, documented by its fields' ``description``."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)


class ReplyModel(BaseModel):
    """A reply model: what Council sends; serialized with ``dump()`` (``None`` kept where OpenAI requires it)."""

    model_config = ConfigDict(extra="forbid")

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_unset=False, by_alias=True)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def load(raw: bytes) -> dict[str, Any]:
    """The body as a dict; raises InvalidRequestError (``invalid_json``, ``invalid_encoding``)."""
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise InvalidRequestError(f"request body is not valid JSON: {exc}", code="invalid_json") from exc
    except RecursionError as exc:
        raise InvalidRequestError("request body is nested too deeply", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise InvalidRequestError("request body must be a JSON object", code="invalid_json")
    check_text(body, "")
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
                raise InvalidRequestError(
                    f"{where or 'the body'} holds text that is not valid Unicode ({exc.reason} at character "
                    f"{exc.start}): send UTF-8 text, with surrogate pairs complete", param=where or None,
                    code="invalid_encoding") from exc
        elif isinstance(item, dict):
            for key, inner in item.items():
                stack.append((key, where))
                stack.append((inner, f"{where}.{key}" if where else str(key)))
        elif isinstance(item, list):
            stack.extend((inner, f"{where}[{i}]") for i, inner in enumerate(item))


def param_of(loc: tuple[int | str, ...], body: Any, missing: bool = False) -> tuple[str, int]:
    """The OpenAI path of a pydantic error location, and its depth.

    Locations hold labels that are not in the body (a union member's tag, a validator's name): the path keeps
    the steps that walk the body. A label that is also a key where it stands (a tag ``text`` beside a ``text``
    field) is tried both ways; the reading that walks further wins."""

    def walk(i: int, here: Any) -> list[str]:
        if i == len(loc):
            return []
        step = loc[i]
        skipped = walk(i + 1, here)
        if isinstance(step, int) and isinstance(here, list) and 0 <= step < len(here):
            taken = [f"[{step}]", *walk(i + 1, here[step])]
        elif isinstance(step, str) and isinstance(here, dict) and step in here:
            taken = [f".{step}", *walk(i + 1, here[step])]
        elif missing and i == len(loc) - 1 and isinstance(step, str) and isinstance(here, dict):
            taken = [f".{step}"]  # a missing key: its name ends the path
        else:
            return skipped
        return taken if len(taken) >= len(skipped) else skipped

    parts = walk(0, body)
    return "".join(parts).removeprefix("."), len(parts)


def code_of(error: ErrorDetails, param: str = "") -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown_parameter"
    loc = error["loc"]
    if kind in MISSING or kind == "union_tag_not_found" or (
            kind.endswith(TYPE_ERRORS) and kind != "invalid_type" and error["input"] is None
            and not (loc and isinstance(loc[-1], int)) and not param.endswith("]")):
        return "missing_field"  # absent, or null where a field's value is required (a null list item is a type)
    if kind.endswith(TYPE_ERRORS) or kind in OBJECT_ERRORS:
        return "invalid_type"
    if kind.startswith(VALUE_ERRORS) or kind.endswith(("too_short", "too_long")):
        return "invalid_value"
    return kind  # a PydanticCustomError's own code (unsupported_parameter, unsupported_content, ...)


OBJECT_ERRORS = ("model_type", "model_attributes_type", "dict_type", "dataclass_type", "is_instance_of")
TYPE_NAMES = {"string": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
              "list": "a list", "dict": "an object"}
# pydantic's wording that names its own classes or its discriminator machinery, said as the reference would
READABLE = {
    "union_tag_invalid": lambda ctx: f"must be one of {ctx.get('expected_tags', '')}, got {ctx.get('tag')!r}",
}


def _wording(error: ErrorDetails) -> str:
    """What is wrong, in the reference's terms: no pydantic class names or internals."""
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in READABLE:
        return READABLE[kind](ctx)
    if kind in OBJECT_ERRORS:
        return "must be an object"
    base = kind.removesuffix("_type").removesuffix("_parsing")
    if kind.endswith(TYPE_ERRORS) and base in TYPE_NAMES:
        return f"must be {TYPE_NAMES[base]}"
    text = error["msg"].removeprefix("Value error, ")
    return text.replace("Input should be", "must be").replace("after validation, ", "")


def _message(error: ErrorDetails, param: str, code: str) -> str:
    if code == "unknown_parameter":
        if "." not in param and "[" not in param:
            return f"Unrecognized request argument supplied: {param}"
        where, _, key = param.rpartition(".")
        return f"{where} has an unknown field {key!r}"
    if code == "missing_field":
        return f"'{param}' is required"
    text = _wording(error)
    return f"'{param}' {text}" if param and text.startswith("must") else f"'{param}': {text}" if param else text


RANK = {"unknown_parameter": 2, "missing_field": 0}  # on equal depth: an unknown key says most (a wrong shape)


def to_invalid(exc: ValidationError, body: Any) -> InvalidRequestError:
    """The most specific of the errors: the deepest path (of a union's members, the one that matched furthest);
    on equal depth an unknown key before a missing one (the client sent another shape, e.g. Responses' tool to
    chat)."""
    best: tuple[tuple[int, int], str, ErrorDetails] | None = None
    for error in exc.errors(include_url=False):
        param, depth = param_of(tuple(error["loc"]), body, error["type"] in MISSING)
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            tag = str(error.get("ctx", {}).get("discriminator", "")).strip("'")
            if tag.isidentifier():  # a field's name, not a function's
                param, depth = (f"{param}.{tag}" if param else tag), depth + 1
        at = (error.get("ctx") or {}).get("at")  # a custom error about one key of the value it checked
        if isinstance(at, str):
            param, depth = (f"{param}.{at}" if param else at), depth + 1
        score = (depth, RANK.get(code_of(error, param), 1))
        if best is None or score > best[0]:
            best = (score, param, error)
    if best is None:  # pragma: no cover - pydantic raises with at least one error
        return InvalidRequestError(str(exc))
    _, param, error = best
    code = code_of(error, param)
    return InvalidRequestError(_message(error, param, code), param=param or None, code=code)


def parse(model: type[M], raw: bytes | dict[str, Any]) -> M:
    """``raw`` (bytes or an already-read dict) as ``model``; raises InvalidRequestError naming the field."""
    body = load(raw) if isinstance(raw, bytes) else raw
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise to_invalid(exc, body) from None
