"""Council routing: memory context, Agent-0 first, specialist heads when Agent-0 is unsure.

1. The query's nearest past exchanges that may be recalled (``council.memory_k``, at least
   ``council.memory_min_similarity``; corrections and successes, see ``memory.share``) become context in the
   system prompt, a correction standing in for the answer it corrected. A model that is not ``local/`` (nor
   any model of its fallback chain) gets them PII-redacted (``council/core/pii.py``), as harvest does.
2. Agent-0 (``council.agent0``, prompt ``prompts/system.j2``) answers.
3. If its confidence is below ``council.threshold``, every head in ``council.heads`` (prompt
   ``prompts/head_<name>.j2``) answers concurrently; the most confident answer wins. Ties go to the
   earlier entrant: Agent-0 first, then heads in configured order.
4. A model that errors or times out is replaced by its ``council.fallbacks`` chain, then skipped; when no
   model at all answers, the request fails with 503.

Every model call goes through ``litellm.acompletion``, its sampling settings a ``SamplingParams`` turned into
litellm keywords there (``to_litellm()``).

``stream`` is the live variant (``council.stream_mode = "live"``): Agent-0's answer (or its fallback's, when the
model fails before its first token) is passed on token by token as it is made; the heads are not asked, so its
confidence, known only at the end, decides whether the record is a success or a failure for the night.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import litellm
import openai

from council.core.config import Settings
from council.core.errors import CouncilError, ModelUnavailableError
from council.core.pii import redact
from council.engine.sampling import SamplingParams
from council.routing import confidence as conf
from council.routing.prompts import SYSTEM_TEMPLATE, PromptStore, tools_section

log = logging.getLogger(__name__)
AGENT0 = "agent0"
LOCAL_PREFIX = "local/"  # the in-process model: memories it sees never leave the machine
RATING = SamplingParams(max_tokens=8)  # a model's self-rating of its answer: a few greedy tokens


@dataclass
class Candidate:
    head: str
    model: str
    text: str
    confidence: float
    finish_reason: str
    logprobs: list[Any] | None  # per token: litellm's ChatCompletionTokenLogprob objects or their dicts

    def token_dicts(self) -> list[dict[str, Any]]:
        """``logprobs`` as plain dicts (token, logprob, bytes, top_logprobs); made only when a reply needs them."""
        return [t if isinstance(t, dict) else t.model_dump() for t in self.logprobs or []]
    usage: dict[str, int]
    adapter: str | None = None
    tool_calls: list[dict[str, Any]] | None = None  # OpenAI tool calls, when the answer is calls (text is "")


@dataclass
class Decision:
    winner: Candidate
    route: list[str]
    context: list[tuple[Any, float]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def council_error_in(exc: BaseException) -> CouncilError | None:
    """The CouncilError a provider raised, if litellm wrapped one."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, CouncilError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


class Router:
    """Decides which model answers a chat request; knows nothing about HTTP or storage."""

    def __init__(self, settings: Settings, prompts: PromptStore) -> None:
        self.settings = settings
        self.prompts = prompts

    @property
    def council(self):  # noqa: ANN201 - CouncilSettings
        return self.settings.council

    def remote(self, model: str) -> bool:
        """True when ``model``, or a model its fallbacks may call, runs outside this process."""
        return any(not m.startswith(LOCAL_PREFIX) for m in [model, *self.council.fallbacks.get(model, [])])

    def system_prompt(self, template: str, context: list[tuple[Any, float]], client_system: str,
                      model: str | None = None) -> str:
        """``template`` with the recalled exchanges, redacted unless ``model`` is known to be local (``remote``)."""
        clean = redact if model is None or self.remote(model) else str
        memories = [{"query": clean(r.query), "answer": clean(r.gold_answer or r.answer), "similarity": round(s, 3),
                     "corrected": bool(r.gold_answer)} for r, s in context]
        return self.prompts.render(template, context=memories, client_system=client_system)

    def with_tools(self, system: str, model: str, params: SamplingParams) -> str:
        """``system`` followed by the request's tools (``prompts/tools.j2``) for models that read tools from the
        prompt (``local/``: the grammar in council/engine/grammar.py holds their answer to its format)."""
        if not model.startswith(LOCAL_PREFIX):
            return system
        section = tools_section(self.prompts, list(params.tools), params.tool_choice, params.parallel_tool_calls)
        return "\n".join(part for part in (system, section) if part)

    async def _call(self, model: str, messages: list[dict[str, Any]], params: SamplingParams) -> Any:
        return await asyncio.wait_for(
            litellm.acompletion(model=model, messages=messages, logprobs=True, **params.to_litellm()),
            timeout=self.council.head_timeout_seconds,
        )

    async def _confidence(self, model: str, messages: list[dict[str, Any]], choice: Any) -> float:
        logprobs = getattr(choice, "logprobs", None)
        content = getattr(logprobs, "content", None) if logprobs is not None else None
        if content:
            return conf.from_logprobs([t.logprob for t in content])
        if not choice.message.content:
            return 0.0
        rate_prompt = self.prompts.render("self_rate.j2", question=messages[-1]["content"],
                                          answer=choice.message.content)
        rating = await self._call(model, [{"role": "user", "content": rate_prompt}], RATING)
        return conf.from_self_rating(rating.choices[0].message.content or "") or 0.0

    async def ask(self, head: str, model: str, messages: list[dict[str, Any]],
                  params: SamplingParams) -> Candidate:
        """One head's answer from ``model`` or, when it fails, from its fallback chain."""
        chain = [model, *self.council.fallbacks.get(model, [])]
        errors: list[str] = []
        for candidate_model in chain:
            try:
                response = await self._call(candidate_model, messages, params)
                choice = response.choices[0]
                usage = getattr(response, "usage", None)
                return Candidate(
                    head=head,
                    model=candidate_model,
                    text=choice.message.content or "",
                    tool_calls=[call.model_dump(exclude_none=True) if hasattr(call, "model_dump") else call
                                for call in choice.message.tool_calls] if choice.message.tool_calls else None,
                    confidence=await self._confidence(candidate_model, messages, choice),
                    finish_reason=choice.finish_reason or "stop",
                    logprobs=list(choice.logprobs.content)  # as litellm gives them; token_dicts() when sent
                    if getattr(choice, "logprobs", None) is not None and choice.logprobs.content else None,
                    usage={"prompt_tokens": getattr(usage, "prompt_tokens", 0) or 0,
                           "completion_tokens": getattr(usage, "completion_tokens", 0) or 0},
                    adapter=response._hidden_params.get("council_adapter"),
                )
            except (TimeoutError, openai.OpenAIError, CouncilError) as exc:
                inner = council_error_in(exc)
                if inner is not None and inner.status < 500:
                    raise inner from exc
                if inner is not None and inner.code == "overloaded" and len(chain) == 1:
                    raise inner from exc
                reason = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
                log.warning("head %s: model %s failed (%s)", head, candidate_model, reason[:300])
                errors.append(f"{candidate_model}: {reason[:200]}")
        raise ModelUnavailableError(f"head {head}: every model failed ({'; '.join(errors)})")

    async def decide(self, messages: list[dict[str, Any]], params: SamplingParams,
                     context: list[tuple[Any, float]], direct_model: str | None = None) -> Decision:
        """Run the route for one request. ``direct_model`` skips the council and asks that model only."""
        client_system = "\n".join(m["content"] for m in messages if m["role"] in ("system", "developer"))
        dialogue = [m for m in messages if m["role"] not in ("system", "developer")]
        first_model = direct_model or self.council.agent0
        system = self.with_tools(self.system_prompt(SYSTEM_TEMPLATE, context, client_system, first_model),
                                 first_model, params)
        skipped: dict[str, str] = {}
        candidates: list[Candidate] = []
        try:
            candidates.append(await self.ask(AGENT0, first_model, [{"role": "system", "content": system}, *dialogue],
                                             params))
        except ModelUnavailableError as exc:
            if direct_model:
                raise
            skipped[AGENT0] = exc.message
        route = [AGENT0]
        if not direct_model and (not candidates or candidates[0].confidence < self.council.threshold):
            heads = list(self.council.heads.items())
            route += [name for name, _ in heads]
            started = time.perf_counter()
            results = await asyncio.gather(
                *(self.ask(name, model,
                           [{"role": "system", "content": self.with_tools(self.system_prompt(
                               f"head_{name}.j2", context, client_system, model), model, params)}, *dialogue],
                           params)
                  for name, model in heads),
                return_exceptions=True,
            )
            for (name, _), result in zip(heads, results, strict=True):
                if isinstance(result, Candidate):
                    candidates.append(result)
                elif isinstance(result, CouncilError) and result.status >= 500:
                    skipped[name] = result.message
                elif isinstance(result, BaseException):
                    raise result
            log.debug("heads answered in %.1f s", time.perf_counter() - started)
        if not candidates:
            raise ModelUnavailableError("every configured model failed: " + "; ".join(skipped.values()))
        winner = max(candidates, key=lambda c: c.confidence)  # max keeps the first of equals
        return Decision(winner=winner, route=route, context=context, skipped=skipped)

    def _split(self, messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
        client_system = "\n".join(m["content"] for m in messages if m["role"] in ("system", "developer"))
        return client_system, [m for m in messages if m["role"] not in ("system", "developer")]

    async def stream(self, messages: list[dict[str, Any]], params: SamplingParams, context: list[tuple[Any, float]],
                     on_text: Callable[[str], Awaitable[None]], direct_model: str | None = None) -> Decision:
        """Agent-0's answer (``direct_model``'s, when given), each piece of text awaited through ``on_text`` as
        the model makes it. A model that fails before its first piece is replaced by its fallbacks; after it,
        the error propagates (a half-sent answer cannot switch models). Raises ModelUnavailableError."""
        client_system, dialogue = self._split(messages)
        model = direct_model or self.council.agent0
        errors: list[str] = []
        sent: list[str] = []

        async def forward(piece: str) -> None:
            sent.append(piece)
            await on_text(piece)

        for candidate_model in [model, *self.council.fallbacks.get(model, [])]:
            system = self.with_tools(self.system_prompt(SYSTEM_TEMPLATE, context, client_system, candidate_model),
                                     candidate_model, params)
            full = [{"role": "system", "content": system}, *dialogue]
            try:
                winner = await self._stream_one(candidate_model, full, params, forward)
                return Decision(winner=winner, route=[AGENT0, "stream"], context=context)
            except (TimeoutError, openai.OpenAIError, CouncilError) as exc:
                inner = council_error_in(exc)
                if sent or (inner is not None and inner.status < 500):
                    raise (inner or exc) from exc
                reason = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
                log.warning("stream: model %s failed before its first token (%s)", candidate_model, reason[:300])
                errors.append(f"{candidate_model}: {reason[:200]}")
        raise ModelUnavailableError(f"every model failed ({'; '.join(errors)})")

    async def _stream_one(self, model: str, messages: list[dict[str, Any]], params: SamplingParams,
                          on_text: Callable[[str], Awaitable[None]]) -> Candidate:
        pieces, logprobs, usage, finish, adapter = [], [], None, "stop", None
        async with asyncio.timeout(self.council.head_timeout_seconds):
            response = await litellm.acompletion(model=model, messages=messages, logprobs=True, stream=True,
                                                 stream_options={"include_usage": True}, **params.to_litellm())
            async for chunk in response:
                usage = getattr(chunk, "usage", None) or usage
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                extra = getattr(choice.delta, "provider_specific_fields", None) or {}
                content = getattr(getattr(choice, "logprobs", None), "content", None) or []
                logprobs += extra.get("logprobs") or [t.logprob for t in content]
                adapter = extra.get("adapter", adapter)
                finish = choice.finish_reason or finish
                if choice.delta.content:
                    pieces.append(choice.delta.content)
                    await on_text(choice.delta.content)
        text = "".join(pieces)
        confidence = conf.from_logprobs(logprobs) if logprobs else await self._rate(model, messages, text)
        return Candidate(head=AGENT0, model=model, text=text, confidence=confidence, finish_reason=finish,
                         logprobs=None, adapter=adapter,
                         usage={"prompt_tokens": getattr(usage, "prompt_tokens", 0) or 0,
                                "completion_tokens": getattr(usage, "completion_tokens", 0) or len(logprobs)})

    async def _rate(self, model: str, messages: list[dict[str, Any]], answer: str) -> float:
        """Self-rated confidence, for models that give no logprobs."""
        if not answer:
            return 0.0
        rate_prompt = self.prompts.render("self_rate.j2", question=messages[-1]["content"], answer=answer)
        rating = await self._call(model, [{"role": "user", "content": rate_prompt}], RATING)
        return conf.from_self_rating(rating.choices[0].message.content or "") or 0.0
