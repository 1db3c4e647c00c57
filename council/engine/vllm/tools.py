"""Tool calls and structured outputs on vLLM, made the way the in-process engine makes them.

A request with ``tools`` (and ``tool_choice`` other than "none") or a ``response_format`` is held to the same
llguidance Lark grammar as on the in-process engine (``council.engine.grammar.constraint_for``), sent as vLLM's
``structured_outputs: {"grammar": "<lark>"}`` request field through litellm's ``extra_body``. The vLLM server
``council serve`` starts runs the ``guidance`` structured-outputs backend (llguidance, ``GUIDANCE_ARGS``), which
reads the grammar's ``%json`` and its ``x-guidance`` layout as Council's own decoder does. ``response_format``
takes the same path (one grammar for both) instead of vLLM's native ``response_format``: that one leaves objects
open to other keys and JSON free in its whitespace, where Council's grammar closes them (the 135M model invented
keys) and writes JSON on one line. History tool calls and results are written as text (``as_text_messages``);
``<tool_call>`` blocks in the reply become OpenAI ``tool_calls`` (``parse_tool_calls``, ``settle``): a call cut
by the token limit is dropped, a call repeating an earlier one ends the answer, and under "auto" calls that were
all made already are answered again, in words. So both engines answer tool requests alike.

Why not vLLM's own tool calling (``tools`` passed through to a server started with ``--enable-auto-tool-choice
--tool-call-parser ...``)? It needs a chat template that renders the tools into the prompt and a model trained to
answer in its parser's format; SmolLM2's template has no tool support, so the model would never see the tools.
A tool-capable model (Qwen2.5, Llama 3.1, Hermes, ...) on vLLM is better served as a council head named
``hosted_vllm/<served name>`` (``HOSTED_VLLM_API_BASE`` = its server's ``/v1``) on a vLLM started with
``--enable-auto-tool-choice --tool-call-parser <its parser, e.g. hermes>``: Council writes tools into the prompt
only for ``local/`` models, and litellm passes ``tools`` and ``tool_choice`` to vLLM, whose template and parser
do the rest (Council's adapter deploys and replica sync then do not apply to it).

Replicas listed in ``engine.urls`` (started by someone else) need the guidance backend too (``GUIDANCE_ARGS``):
under vLLM's default "auto", xgrammar takes the grammar and ignores its ``x-guidance`` layout.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from council.engine.grammar import CALL_CLOSE, CALL_OPEN, Constraint
from council.engine.sampling import SamplingParams
from council.engine.tool_calls import parse_tool_calls, repeated_call

GUIDANCE_ARGS = ["--structured-outputs-config", json.dumps({"backend": "guidance"})]


def vllm_keywords(sampling: SamplingParams, max_new_tokens: int, constraint: Constraint | None) -> dict[str, Any]:
    """litellm keywords for one ``hosted_vllm/`` call: ``sampling``'s settings, ``max_tokens`` capped at
    ``max_new_tokens``, and ``constraint`` (the grammar of its tools or response_format, or WORDS) as
    ``structured_outputs`` in place of the OpenAI ``tools`` / ``response_format`` fields."""
    decoding = replace(sampling, max_tokens=sampling.limited(max_new_tokens), tools=(), tool_choice=None,
                       parallel_tool_calls=True, response_format=None)
    return {**decoding.to_litellm(), **structured_outputs(constraint)}


def structured_outputs(constraint: Constraint | None) -> dict[str, Any]:
    """litellm keywords that send ``constraint`` to vLLM (none when there is no constraint)."""
    return {"extra_body": {"structured_outputs": {"grammar": constraint.lark}}} if constraint is not None else {}


def until_repeat(text: str) -> tuple[str, bool]:
    """``text`` up to the first call that repeats an earlier one, and whether one did (the in-process decoder
    stops there as it decodes; vLLM has written on, so the cut is made afterwards)."""
    end = 0
    while (close := text.find(CALL_CLOSE, end)) >= 0:
        end = close + len(CALL_CLOSE)
        cut = repeated_call(text[:end])
        if cut is not None:
            return text[:cut], True
    return text, False


def settle(text: str, finish: str, constraint: Constraint | None) -> tuple[str, str, list[dict[str, Any]] | None]:
    """(text, finish_reason, tool_calls) of a reply held to ``constraint``: whole calls become ``tool_calls``
    (text "", finish "tool_calls"); an answer that holds no whole call but began one is empty."""
    if constraint is None or constraint.kind != "tools":
        return text, finish, None
    text, repeated = until_repeat(text)
    finish = "stop" if repeated else finish
    if finish not in ("stop", "length"):
        return text, finish, None
    calls = parse_tool_calls(text)
    if calls:
        return "", "tool_calls", calls
    return ("" if text.startswith(CALL_OPEN) else text), finish, None
