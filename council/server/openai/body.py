"""Reading an OpenAI request body for the endpoints in this package: one JSON object, UTF-8 text only,
no field the endpoint does not know (refused by name, as OpenAI does)."""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from council.core.errors import InvalidRequestError
from council.server.validation import check_text


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def load_body(raw: bytes, known: Collection[str]) -> dict[str, Any]:
    """The request body as a dict; raises InvalidRequestError (400) for bad JSON, a non-object, text that is
    not valid Unicode, or a field outside ``known``."""
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"request body is not valid JSON: {exc}", code="invalid_json") from exc
    except RecursionError as exc:
        raise InvalidRequestError("request body is nested too deeply", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise InvalidRequestError("request body must be a JSON object", code="invalid_json")
    check_text(body, "")
    unknown = sorted(set(body) - set(known))
    if unknown:
        raise InvalidRequestError(f"Unrecognized request argument supplied: {unknown[0]}", param=unknown[0],
                                  code="unknown_parameter")
    return body


def is_token_ids(value: Any) -> bool:
    """Whether ``value`` is a token-id array (``[1, 2]``) or a list of them (``[[1, 2], [3]]``)."""
    if not isinstance(value, list) or not value:
        return False
    flat = [x for item in value for x in item] if all(isinstance(item, list) for item in value) else value
    return all(isinstance(x, int) and not isinstance(x, bool) for x in flat)
