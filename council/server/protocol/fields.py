"""Field types shared by the endpoints' protocol models, with the OpenAI reference's ranges.

Ranges are the chat-completions reference's (platform.openai.com/docs/api-reference/chat/create): temperature
0-2, top_p 0-1, penalties -2..2, top_logprobs 0-20, logit_bias -100..100 by token id, seed a signed 64-bit
integer, stop up to 4 strings, metadata up to 16 pairs (keys up to 64 characters, values up to 512).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field
from pydantic_core import PydanticCustomError

SEED_RANGE = (-(2**63), 2**63 - 1)
MAX_TOP_LOGPROBS = 20

Temperature = Annotated[float, Field(ge=0.0, le=2.0, description="Sampling temperature, 0-2; 0 is greedy.")]
TopP = Annotated[float, Field(ge=0.0, le=1.0, description="Nucleus sampling mass, 0-1.")]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0, description="-2..2, subtracted from repeated tokens' logits.")]
Seed = Annotated[int, Field(ge=SEED_RANGE[0], le=SEED_RANGE[1], description="Same seed, same sampled answer.")]
TokenLimit = Annotated[int, Field(ge=1, description="Tokens to generate at most (capped by model.max_new_tokens).")]
TopLogprobs = Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS, description="Alternatives per token, 0-20.")]


def _stop(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _nonempty(stop: list[str]) -> list[str]:
    return [s for s in stop if s]


Stop = Annotated[list[str], BeforeValidator(_stop), Field(max_length=4), AfterValidator(_nonempty),
                 Field(description="A string or up to 4 strings; the answer ends before the first one.")]


def _logit_bias(value: dict[str, float]) -> dict[int, float]:
    parsed: dict[int, float] = {}
    for key, bias in value.items():
        if not key.isascii() or not key.isdigit() or len(key) > 9:
            raise PydanticCustomError("invalid_value", "key {key} is not a token id",
                                      {"key": repr(key[:20]), **({"at": key} if len(key) <= 64 else {})})
        if not -100 <= bias <= 100:
            raise PydanticCustomError("invalid_value", "the bias for token {key} must be from -100 to 100",
                                      {"key": key, "at": key})
        parsed[int(key)] = float(bias)
    return parsed


LogitBias = Annotated[dict[str, float], AfterValidator(_logit_bias),
                      Field(description="Token id (as a string) -> -100..100 added to its logit.")]


def _metadata(value: dict[str, Any]) -> dict[str, Any]:
    if len(value) > 16:
        raise PydanticCustomError("invalid_value", "metadata holds at most 16 pairs")
    for key, item in value.items():
        if len(key) > 64 or not isinstance(item, str) or len(item) > 512:
            raise PydanticCustomError("invalid_value", "metadata keys are up to 64 characters, values strings up "
                                      "to 512", {"at": key[:64]})
    return value


Metadata = Annotated[dict[str, Any], AfterValidator(_metadata),
                     Field(description="Up to 16 string pairs, kept with the request; no effect on the answer.")]


def refused(why: str) -> Any:
    """A field Council cannot honour: accepted only when null; anything else is ``unsupported_parameter``."""

    def check(value: Any) -> Any:
        if value is not None:
            raise PydanticCustomError("unsupported_parameter", "not supported: {why}", {"why": why})
        return value

    return Annotated[Any, AfterValidator(check), Field(description=f"Refused when set: {why}.")]
