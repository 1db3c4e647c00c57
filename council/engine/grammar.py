"""Constrained decoding: what an answer must look like (JSON, a JSON schema, or a tool call) as a grammar.

OpenAI's ``response_format`` (``json_object``, ``json_schema``) and ``tools`` + ``tool_choice`` become one
``Constraint``: a Lark grammar for llguidance (https://github.com/guidance-ai/llguidance), whose ``%json{...}``
embeds a JSON schema. The in-process decoder asks a ``Matcher`` each step which tokens may come next and masks
the rest, so the answer always parses and validates, or ends with ``finish_reason: "length"``.

llguidance was chosen over xgrammar after ``bench/grammar_bench.py`` measured both on this decoder (2 cores,
2026-12-07): a mask costs 36 µs a token with llguidance 1.9.1 and 7 µs with xgrammar 0.2.9, both under 0.5% of
an 88 ms decode step at batch 8; eight constrained rows add 5.5-7.8% a step in all (the masking and the
constrained logprobs included). llguidance has no dependencies (xgrammar pulls triton, ~1 GB) and its Lark
grammars express "text or a tool call" directly.

Tool calls are written as the Hermes / Qwen format does it (one call a block; reading and writing them:
``council/engine/tool_calls.py``)::

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

``tool_choice``: "required" is one or more calls, a named function one call of it, "auto" free text (not
opening with ``<``) or calls, "none" free text only. ``parallel_tool_calls: false`` allows one call only.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from council.core.errors import InvalidRequestError

CALL_OPEN, CALL_CLOSE = "<tool_call>\n", "\n</tool_call>"
ANY_OBJECT = {"type": "object"}
# JSON written as people write it on one line ({"a": 1, "b": 2}): no free whitespace for a small model to
# wander in (llguidance's JSON options, https://github.com/guidance-ai/llguidance/blob/main/docs/json_schema.md)
LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


@dataclass(frozen=True)
class Constraint:
    """A request's grammar (Lark, for llguidance) and what it constrains: "json", "tools" or "words"."""

    kind: str
    lark: str


TEXT_RULE = "TEXT: /[^<][\\s\\S]*/\n"  # free text that does not open a <tool_call>
WORDS = Constraint("words", "start: TEXT\n" + TEXT_RULE)


def closed(schema: Any) -> Any:
    """``schema`` with every object that lists its ``properties`` and says nothing of others closed to others
    (``additionalProperties: false``, as OpenAI's strict mode requires). Answers still validate against the
    original; without it the 135M model invented keys (``{", ": "...``) and wrote on until its token limit."""
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: value if key in ("const", "enum", "default", "examples") else closed(value)
           for key, value in schema.items()}
    if isinstance(schema.get("properties"), dict) and "additionalProperties" not in schema:
        out["additionalProperties"] = False
    return out


def _json_rule(schema: dict[str, Any]) -> str:
    return "%json " + json.dumps({"x-guidance": LAYOUT, **closed(schema)}, separators=(",", ":"))


def _refs(schema: Any, moved: Callable[[str], str]) -> Any:
    """``schema`` with its local ``$ref``s pointed where ``moved`` says."""
    if isinstance(schema, list):
        return [_refs(item, moved) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _refs(value, moved) for key, value in schema.items() if key not in ("const", "enum")}
    out.update({key: schema[key] for key in ("const", "enum") if key in schema})
    if isinstance(schema.get("$ref"), str):
        out["$ref"] = moved(schema["$ref"])
    return out


def _call_schema(function: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """One call of ``function`` as JSON; its parameters' ``$defs`` (pydantic writes them for nested models) move
    to the call grammar's root ``defs`` under ``<function>.<name>``, their references rewritten to match."""
    parameters = dict(function.get("parameters") or {"type": "object", "properties": {}})
    fn = function["name"]
    for key in ("$defs", "definitions"):
        for name, definition in (parameters.pop(key, None) or {}).items():
            defs[f"{fn}.{name}"] = definition

    def moved(ref: str) -> str:  # a reference into the parameters, pointed at where they now are
        for key in ("$defs", "definitions"):
            if ref.startswith(f"#/{key}/"):
                return f"#/$defs/{fn}.{ref.removeprefix(f'#/{key}/')}"
        return f"#/$defs/{fn}{ref[1:]}" if ref == "#" or ref.startswith("#/") else ref

    defs.update({name: _refs(definition, moved) for name, definition in defs.items() if name.startswith(f"{fn}.")})
    arguments = _refs(parameters, moved)
    if _points_at_root(parameters):  # "#" or "#/properties/...": the parameters become a definition of their own
        defs[fn], arguments = arguments, {"$ref": f"#/$defs/{fn}"}
    return {"type": "object", "properties": {"name": {"const": fn}, "arguments": arguments},
            "required": ["name", "arguments"], "additionalProperties": False}


def _points_at_root(schema: Any) -> bool:
    """Whether a ``$ref`` in ``schema`` points into it from its root (not into its ``$defs``)."""
    if isinstance(schema, list):
        return any(_points_at_root(item) for item in schema)
    if not isinstance(schema, dict):
        return False
    ref = schema.get("$ref")
    if isinstance(ref, str) and (ref == "#" or (ref.startswith("#/") and not ref.startswith(("#/$defs/",
                                                                                              "#/definitions/")))):
        return True
    return any(_points_at_root(value) for key, value in schema.items() if key not in ("const", "enum"))


def _tool_choice_name(tool_choice: Any) -> str | None:
    return tool_choice["function"]["name"] if isinstance(tool_choice, dict) else None


def _format_rule(response_format: dict[str, Any] | None) -> str | None:
    kind = (response_format or {}).get("type", "text")
    if kind == "json_object":
        return _json_rule(ANY_OBJECT)
    if kind == "json_schema":
        return _json_rule(response_format["json_schema"].get("schema") or ANY_OBJECT)
    return None


def constraint_for(response_format: dict[str, Any] | None, tools: list[dict[str, Any]] | None,
                   tool_choice: Any = "auto", parallel_tool_calls: bool = True,
                   history_calls: bool = False) -> Constraint | None:
    """The constraint a request asks for, or None. With tools, an answer in words (``tool_choice`` "auto" or
    "none") is held to ``response_format`` when one is given, else to text that opens no call; so is any answer
    whose conversation holds calls (``history_calls``): a model shown calls in its prompt imitates them."""
    functions = [tool["function"] for tool in tools or [] if tool.get("type") == "function"]
    fmt = _format_rule(response_format)
    words = f"start: {fmt}\n" if fmt else "start: TEXT\n" + TEXT_RULE
    if functions and tool_choice != "none":
        named = _tool_choice_name(tool_choice)
        if named is not None:
            functions = [f for f in functions if f["name"] == named]
        defs: dict[str, Any] = {}
        choices = [_call_schema(f, defs) for f in functions]
        root = {"anyOf": choices} if len(choices) > 1 else choices[0]
        call = f'"<tool_call>\\n" {_json_rule({**root, "$defs": defs} if defs else root)} "\\n</tool_call>"'
        calls = "call" if named is not None or not parallel_tool_calls else 'call ("\\n" call)*'
        if tool_choice not in (None, "auto"):
            return Constraint("tools", f"start: calls\ncalls: {calls}\ncall: {call}\n")
        answer = f"start: ANSWER | calls\nANSWER: {fmt}\n" if fmt else "start: TEXT | calls\n" + TEXT_RULE
        return Constraint("tools", answer.replace("ANSWER", "answer") + f"calls: {calls}\ncall: {call}\n")
    if fmt:
        return Constraint("json", words)
    if functions or history_calls:  # tool_choice "none", or calls in the history: words only
        return WORDS
    return None


@functools.lru_cache(maxsize=512)
def _grammar_error(lark: str) -> str:
    """llguidance's verdict on a grammar ("" when it compiles). Cached: an agent sends the same tools with every
    request, and checking 8 tools' grammar takes ~2 ms (bench/protocol_bench.py)."""
    import llguidance

    return llguidance.LLMatcher.validate_grammar(llguidance.LLMatcher.grammar_from_lark(lark)) or ""


def check(constraint: Constraint | None, param: str) -> None:
    """Raise InvalidRequestError (naming ``param``) when llguidance cannot compile the constraint."""
    if constraint is None:
        return
    error = _grammar_error(constraint.lark)
    if error:  # its first line, without the compiled grammar llguidance quotes after it
        error = error.splitlines()[0].split("failed to compile JSON schema: ")[-1]
        raise InvalidRequestError(f"'{param}' holds a schema Council cannot enforce: {error}", param=param,
                                  code="invalid_schema")


class Grammars:
    """Compiles constraints for one tokenizer (llguidance's view of it is built once, ~0.4 s)."""

    def __init__(self, hf_tokenizer: Any) -> None:
        import llguidance.hf

        self.tokenizer = llguidance.hf.from_tokenizer(hf_tokenizer)
        self.vocab = self.tokenizer.vocab_size

    def matcher(self, constraint: Constraint) -> Matcher:
        import llguidance

        inner = llguidance.LLMatcher(self.tokenizer, llguidance.LLMatcher.grammar_from_lark(constraint.lark))
        if inner.is_error():
            raise InvalidRequestError(f"the request's schema cannot be enforced: {inner.get_error()}",
                                      code="invalid_schema", param="response_format")
        return Matcher(inner, self.vocab, "tools" if constraint.kind == "tools" else "response_format")


class Matcher:
    """One answer's place in its grammar: which tokens may come next, and the tokens taken so far. A grammar
    that no answer can finish (a schema whose required fields recurse forever) fails its own request with a
    400 naming ``param``, never its batch."""

    def __init__(self, inner: Any, vocab: int, param: str = "response_format") -> None:
        import numpy as np

        self.inner = inner
        self.vocab = vocab
        self.param = param
        self._bits = np.zeros((vocab + 31) // 32, dtype=np.int32)

    def allowed(self) -> Any:
        """A bool tensor over the vocabulary: True where the token keeps the answer in the grammar."""
        import numpy as np
        import torch

        self.inner.unsafe_compute_mask_ptr(self._bits.ctypes.data, self._bits.nbytes)
        self._check()
        bits = np.unpackbits(self._bits.view(np.uint8), bitorder="little")[: self.vocab]
        return torch.from_numpy(bits.astype(bool))

    def mask(self, logits: Any) -> Any:
        """``logits`` with every token outside the grammar at -inf (a copy; the vocabulary may be padded)."""
        allowed = self.allowed()
        masked = logits.clone()
        masked[: allowed.shape[0]][~allowed] = float("-inf")
        masked[allowed.shape[0]:] = float("-inf")
        return masked

    def _check(self) -> None:
        if self.inner.is_error():
            raise InvalidRequestError(f"no answer can satisfy this '{self.param}' schema (it cannot be finished): "
                                      f"{self.inner.get_error()[:300]}", param=self.param, code="invalid_schema")

    def take(self, token: int) -> None:
        """Advance by the sampled token (one the mask allowed); raises InvalidRequestError when the grammar
        cannot go on (see the class docstring)."""
        if not self.inner.consume_token(token):
            self._check()
            raise InvalidRequestError(f"the answer left its '{self.param}' grammar at token {token}",
                                      param=self.param, code="invalid_schema")
