"""``POST /v1/embeddings``: the request and the reply as typed protocol models.

``EmbeddingRequest`` follows OpenAI's ``CreateEmbeddingRequest`` (openai-openapi ``openapi.yaml``): ``input`` is
a string or a list of up to ``MAX_INPUTS`` non-empty strings (token-id arrays are refused as
``unsupported_input``: only text is supported), ``encoding_format`` is ``"float"`` (default) or ``"base64"``,
``dimensions`` may only be the embedder's own size (it cannot shorten its vectors: ``check_dimensions`` after
parsing, since the size is the loaded embedder's), ``user`` is a string. Unknown keys are refused by name.
``CreateEmbeddingResponse`` is the reply (``object: "list"``, ``data`` of ``embedding`` objects, ``model``,
``usage``). ``texts_only`` (the refusal of token ids) is shared with ``/v1/completions``'s ``prompt``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field
from pydantic_core import PydanticCustomError

from council.core.errors import InvalidRequestError
from council.server.protocol.base import OpenAIModel, ReplyModel

MAX_INPUTS = 2048  # as OpenAI


def is_token_ids(value: Any) -> bool:
    """Whether ``value`` is a token-id array (``[1, 2]``) or a list of them (``[[1, 2], [3]]``)."""
    if not isinstance(value, list) or not value:
        return False
    flat = [x for item in value for x in item] if all(isinstance(item, list) for item in value) else value
    return all(isinstance(x, int) and not isinstance(x, bool) for x in flat)


def texts_only(name: str, send: str) -> BeforeValidator:
    """A required text field (``name``) that refuses null as missing and token ids as ``unsupported_input``
    (``send``: what to send instead)."""

    def check(value: Any) -> Any:
        if value is None:
            raise PydanticCustomError("missing_field", "'{name}' is required", {"name": name})
        if is_token_ids(value):
            raise PydanticCustomError("unsupported_input", "holds token ids: only text is supported; send {send}",
                                      {"send": send})
        return value

    return BeforeValidator(check)


def _texts(value: str | list[str]) -> list[str]:
    texts = [value] if isinstance(value, str) else value
    if not texts:
        raise PydanticCustomError("invalid_value", "must not be an empty list")
    if len(texts) > MAX_INPUTS:
        raise PydanticCustomError("invalid_value", "holds {n} texts; at most {most} per request",
                                  {"n": len(texts), "most": MAX_INPUTS})
    for i, text in enumerate(texts):
        if not text.strip():
            where = "input" if isinstance(value, str) else f"input[{i}]"
            raise InvalidRequestError(f"{where} must not be empty", param=where, code="invalid_value")
    return texts


def _an_integer(value: Any) -> Any:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise PydanticCustomError("invalid_type", "must be an integer (the embedder's size), got {got}",
                                  {"got": repr(value)[:40]})
    return value


class EmbeddingRequest(OpenAIModel):
    """The body of ``POST /v1/embeddings``."""

    input: Annotated[str | list[str], texts_only("input", "a string or a list of strings"),
                     AfterValidator(_texts),
                     Field(description=f"A text or a list of up to {MAX_INPUTS} non-empty texts.")]
    model: Annotated[str, Field(min_length=1)] | None = Field(
        None, description="council (default) or any model GET /v1/models lists: all use the memory's embedder.")
    encoding_format: Literal["float", "base64"] | None = Field(
        None, description="float (default) or base64: the little-endian float32 bytes.")
    dimensions: Annotated[int, BeforeValidator(_an_integer)] | None = Field(
        None, description="Only the embedder's own size (384): it cannot shorten its vectors.")
    user: str | None = Field(None, description="Accepted; no effect on the vectors.")

    @property
    def texts(self) -> list[str]:
        """The texts to embed (``input`` as a list after validation)."""
        return [self.input] if isinstance(self.input, str) else list(self.input)

    def check_dimensions(self, size: int) -> None:
        """Refuse ``dimensions`` other than ``size`` (the loaded embedder's) as ``invalid_value``."""
        if self.dimensions is not None and self.dimensions != size:
            raise InvalidRequestError(f"'dimensions' must be {size} (the embedder's size; it cannot shorten its "
                                      f"vectors), got {self.dimensions}", param="dimensions", code="invalid_value")


class Embedding(ReplyModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="The vector, or its float32 bytes in base64.")


class EmbeddingUsage(ReplyModel):
    prompt_tokens: int = Field(description="Word pieces the embedder read, [CLS]/[SEP] included.")
    total_tokens: int


class CreateEmbeddingResponse(ReplyModel):
    """The reply of ``POST /v1/embeddings``."""

    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
