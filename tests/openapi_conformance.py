"""Validate Council's replies against OpenAI's own OpenAPI document (tests/data/openai-openapi.yaml).

``validate(schema_name, instance)`` checks one JSON object against a component schema of the document, e.g.
``CreateChatCompletionResponse``, ``CreateChatCompletionStreamResponse``, ``ListModelsResponse``, ``Model``,
``CreateEmbeddingResponse``, ``CreateCompletionResponse``, ``Response``, ``ResponseStreamEvent`` (or one event,
e.g. ``ResponseTextDeltaEvent``) and ``ErrorResponse``, and returns the errors as readable strings (empty: it
conforms). The document is loaded once; ``$ref``s resolve through a ``referencing`` registry holding it, and the
schemas are JSON Schema 2020-12 (OpenAPI 3.1's dialect), so ``type: [..., "null"]`` and ``anyOf`` with
``{"type": "null"}`` work as written. Two OpenAPI-isms are translated first: the 3.0 keyword ``nullable: true``,
which the document still uses in places (e.g. a stream chunk's ``usage``), becomes ``anyOf: [schema, null]``;
and a schema with a ``discriminator`` (``ResponseStreamEvent``) is checked against the one member its
discriminating property names, so an error points at that member instead of "not valid under any of 60".
Formats (``unixtime``, ``uri``...) are annotations here, not checked. No reply schema Council serves sets
``additionalProperties: false``, so Council's extra top-level ``council`` field is allowed.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).resolve().parent / "data" / "openai-openapi.yaml"
BASE_URI = "urn:openai:openapi"
SCHEMAS = "#/components/schemas/"


def _without_nullable(node: Any) -> Any:
    """OpenAPI 3.0's ``nullable: true`` rewritten as JSON Schema: ``anyOf: [schema, {"type": "null"}]``."""
    if isinstance(node, list):
        return [_without_nullable(value) for value in node]
    if not isinstance(node, dict):
        return node
    nullable = node.get("nullable") is True
    rest = {key: _without_nullable(value) for key, value in node.items()
            if not (key == "nullable" and isinstance(value, bool))}
    return {"anyOf": [rest, {"type": "null"}]} if nullable else rest


@functools.cache
def document() -> dict:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return _without_nullable(yaml.load(SPEC_PATH.read_text(encoding="utf-8"), Loader=loader))


def version() -> str:
    """The document's ``info.version`` (OpenAI's API version the checks follow)."""
    return str(document()["info"]["version"])


def schema_names() -> list[str]:
    return sorted(document()["components"]["schemas"])


@functools.cache
def _registry() -> Registry:
    resource = Resource.from_contents(document(), default_specification=DRAFT202012)
    return Registry().with_resource(BASE_URI, resource)


@functools.cache
def _validator(schema_name: str) -> Draft202012Validator:
    if schema_name not in document()["components"]["schemas"]:
        raise KeyError(f"no component schema {schema_name!r} in {SPEC_PATH.name}")
    return Draft202012Validator({"$ref": f"{BASE_URI}{SCHEMAS}{schema_name}"}, registry=_registry())


def _discriminated(schema_name: str, instance: Any) -> str | None:
    """The member schema a discriminated union picks for ``instance`` (None: not a union, or no member fits)."""
    schema = document()["components"]["schemas"][schema_name]
    prop = (schema.get("discriminator") or {}).get("propertyName")
    if not prop or not isinstance(instance, dict):
        return None
    for member in schema.get("anyOf") or schema.get("oneOf") or []:
        name = member.get("$ref", "").removeprefix(SCHEMAS)
        allowed = document()["components"]["schemas"].get(name, {}).get("properties", {}).get(prop, {})
        if instance.get(prop) in allowed.get("enum", ()) or instance.get(prop) == allowed.get("const", object()):
            return name
    return None


def _message(error: ValidationError) -> str:
    """jsonschema's message, with a long echo of the offending value cut to its type."""
    echo = repr(error.instance)
    if len(echo) > 60 and error.message.startswith(echo):
        return f"<{type(error.instance).__name__}>{error.message[len(echo):]}"
    return error.message


def _describe(error: ValidationError, schema_name: str) -> str:
    where = "/".join(str(part) for part in error.absolute_path) or "$"
    text = f"{schema_name} at {where}: {_message(error)}"
    if not error.context:
        return text
    # anyOf / oneOf: say why each member failed when there are few, else the member that came closest
    shown = error.context if len(error.context) <= 4 else [best_match(error.context)]
    reasons = dict.fromkeys(f"at {'/'.join(map(str, e.absolute_path)) or '$'}: {_message(e)}" for e in shown)
    return f"{text} ({'; '.join(reasons)})"


def validate(schema_name: str, instance: Any) -> list[str]:
    """Every way ``instance`` breaks the component schema ``schema_name``; an empty list means it conforms."""
    member = _discriminated(schema_name, instance)
    if member is None and document()["components"]["schemas"].get(schema_name, {}).get("discriminator"):
        prop = document()["components"]["schemas"][schema_name]["discriminator"]["propertyName"]
        value = instance.get(prop) if isinstance(instance, dict) else None
        return [f"{schema_name}: no member has {prop} = {value!r}"]
    name = member or schema_name
    errors = sorted(_validator(name).iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)))
    return [_describe(error, name) for error in errors]
