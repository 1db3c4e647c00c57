"""``tools``, ``tool_choice`` and ``response_format`` of a chat request, typed.

Shapes as OpenAI's ``ChatCompletionTool``, ``ChatCompletionToolChoiceOption`` and ``ResponseFormat*``
(openai-openapi ``openapi.yaml``). Council serves function tools only: a ``custom`` tool, or an
``allowed_tools``/``custom`` tool choice, is refused by its ``type``. Names follow OpenAI's rule (1-64 letters,
digits, ``_`` or ``-``); a function's ``parameters`` describe an object.
"""

from __future__ import annotations

import functools
import json
from typing import Annotated, Any, Literal

import jsonschema
from pydantic import BeforeValidator, Discriminator, Field, Tag, field_validator
from pydantic_core import PydanticCustomError

from council.server.protocol.base import OpenAIModel

NAME = r"^[A-Za-z0-9_-]{1,64}$"  # OpenAI's rule for function and schema names
Name = Annotated[str, Field(pattern=NAME, description="1-64 letters, digits, _ or -.")]


class FunctionDefinition(OpenAIModel):
    name: Name
    description: str | None = None
    parameters: dict[str, Any] | None = Field(None, description="A JSON Schema for the arguments (an object).")
    strict: bool | None = None

    @field_validator("parameters")
    @classmethod
    def _an_object(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("type", "object") != "object":
            raise PydanticCustomError("invalid_value", "parameters must describe an object (type 'object')",
                                      {"at": "type"})
        return json_schema(value)


def json_schema(schema: dict[str, Any] | None) -> dict[str, Any] | None:
    """``schema`` when it is a valid JSON Schema (checked against its draft's metaschema with the ``jsonschema``
    library; draft 2020-12 unless ``$schema`` names another); else ``invalid_schema`` at the offending key. The
    verdict is cached by the schema's text: an agent sends the same tools with every request."""
    if schema is None:
        return None
    try:
        problem = _schema_problem(json.dumps(schema, sort_keys=True))
    except RecursionError:
        problem = ("the schema is nested too deeply", "")
    if problem is not None:
        why, at = problem
        raise PydanticCustomError("invalid_schema", "not a valid JSON Schema: {why}" if at or "nested" not in why
                                  else "{why}", {"why": why, **({"at": at} if at else {})})
    return schema


@functools.lru_cache(maxsize=1024)
def _schema_problem(text: str) -> tuple[str, str] | None:
    """(why, path in the schema) of the first metaschema error, or None."""
    schema = json.loads(text)
    error = jsonschema.exceptions.best_match(_meta_validator(jsonschema.validators.validator_for(
        schema, default=jsonschema.Draft202012Validator)).iter_errors(schema))
    if error is None:
        return None
    return error.message[:200], "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.path).removeprefix(".")


@functools.lru_cache(maxsize=8)
def _meta_validator(cls: Any) -> Any:
    """A validator of schemas for one draft, built once (building it is most of ``check_schema``'s cost)."""
    return cls(cls.META_SCHEMA)


def _function_only(kind: str) -> Any:
    def check(value: Any) -> Any:
        if isinstance(value, dict) and value.get("type") != "function":
            raise PydanticCustomError("invalid_value", "{kind} of type {type} is not served: Council serves "
                                      "function tools only", {"kind": kind, "type": repr(value.get("type")), "at": "type"})
        return value
    return check


class FunctionTool(OpenAIModel):
    type: Literal["function"]
    function: FunctionDefinition


Tool = Annotated[FunctionTool, BeforeValidator(_function_only("a tool"))]


class NamedFunction(OpenAIModel):
    name: str


class NamedToolChoice(OpenAIModel):
    type: Literal["function"]
    function: NamedFunction


ToolChoice = Annotated[
    Annotated[Literal["none", "auto", "required"], Tag("mode")]
    | Annotated[Annotated[NamedToolChoice, BeforeValidator(_function_only("tool_choice"))], Tag("named")],
    Discriminator(lambda v: "mode" if isinstance(v, str) else "named")]


class TextFormat(OpenAIModel):
    type: Literal["text"]


class JsonObjectFormat(OpenAIModel):
    type: Literal["json_object"]


class JsonSchemaSpec(OpenAIModel):
    name: Name
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema", description="The JSON Schema the answer follows.")
    strict: bool | None = None

    @field_validator("schema_")
    @classmethod
    def _valid(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return json_schema(value)


class JsonSchemaFormat(OpenAIModel):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")]


def format_dict(value: TextFormat | JsonObjectFormat | JsonSchemaFormat | None) -> dict[str, Any] | None:
    """The format the engines read: None for text, else the OpenAI dict (unset keys left out)."""
    if value is None or isinstance(value, TextFormat):
        return None
    return value.model_dump(by_alias=True, exclude_none=True)
