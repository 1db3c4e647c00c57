"""The Agent-0 council: autogen ``AssistantAgent`` members that rewrite one failed answer, then vote.

Member ``i`` (1-based) speaks with the system prompt ``prompts/harvest_rewriter_<k>.j2`` (``k`` cycles over the
templates that exist: 1, 2, 3, 1, ...) through its own litellm model string (``LiteLLMChatClient``). Its model
context starts with the worked examples of ``prompts/harvest_examples.j2`` (few-shot user/assistant turns), which
small models need to follow the formats.

One record = two rounds, each member an independent ``AssistantAgent.run()`` (concurrently, so remote
models overlap; members do not see each other's drafts, which keeps proposals independent):

1. *propose*: ``harvest_task.j2`` (query, bad answer, correction if any) -> ``REASONING: ... ANSWER: ...``.
   Malformed replies are dropped and counted; with a correction, answers that do not agree with it are
   dropped and counted; identical answers (same normalised tokens) merge into one candidate. The user's
   correction itself joins the candidates (agent 0, no reasoning; worded by ``phrase``) unless a member's
   answer says exactly it, so a record with a correction always reaches the vote.
2. *vote*: fresh agents (same prompts and models, no memory of their own draft) read ``harvest_vote.j2``
   listing the candidates by number and answer ``VOTE: <n>``. Most votes wins; ties go to the higher
   quality score (``harvest.quality``), then to the lower candidate number.

A proposal's confidence is the mean token probability of the very model call that wrote it: every agent run
gets a ``LiteLLMChatClient`` of its own, and the round hands back each reply with that client's logprobs
(``Reply``), so records deliberated concurrently never read each other's calls.

A failed model call raises ``ModelCallError`` for the whole record (the caller retries it on a later run).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass, field

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import TaskResult
from autogen_core.model_context import UnboundedChatCompletionContext
from autogen_core.models import AssistantMessage, ChatCompletionTokenLogprob, SystemMessage, UserMessage

from council.core.errors import PromptError
from council.core.pii import redact
from council.routing.prompts import PromptStore
from harvest.model_client import LiteLLMChatClient, ModelCallError
from harvest.quality import Candidate, agrees, mean_probability, parse_candidate, parse_vote, score, tokens

log = logging.getLogger(__name__)
USER_CORRECTION = "user-correction"  # Candidate.model of the user's own correction (agent 0)
ORIGINAL_ANSWER = "original-answer"  # Candidate.model of the answer as given (agent -1), when it may stand
PHRASE_MAX_TOKENS = 64  # a worded correction is an answer of a sentence or two, not a rewrite
_TEMPLATE = re.compile(r"harvest_rewriter_(\d+)\.j2")


@dataclass(frozen=True)
class Reply:
    """One member's reply in a round, with the token logprobs of the model call that wrote it (None: none)."""

    text: str
    logprobs: list[ChatCompletionTokenLogprob] | None = None


@dataclass
class Outcome:
    """What the council decided for one record."""

    candidates: list[Candidate] = field(default_factory=list)
    winner: Candidate | None = None
    malformed: int = 0
    disagreeing: int = 0
    merged: int = 0
    ballots: list[int | None] = field(default_factory=list)  # per member; None = invalid ballot

    @property
    def votes(self) -> dict[str, object]:
        return {"for": self.winner.votes if self.winner else 0, "cast": len(self.ballots),
                "ballots": self.ballots}


def rewriter_templates(prompts: PromptStore) -> list[str]:
    """``harvest_rewriter_<n>.j2`` names in ``n`` order."""
    numbered = sorted((int(m.group(1)), name) for name in prompts.names()
                      if (m := _TEMPLATE.fullmatch(name)) is not None)
    if not numbered:
        raise PromptError(f"no harvest_rewriter_<n>.j2 templates in {prompts.folder}; restore them from the repo")
    return [name for _, name in numbered]


class HarvestCouncil:
    """``models[i]`` is member i's litellm model string; ``await council.deliberate(...)`` per record."""

    def __init__(self, models: list[str], prompts: PromptStore, *, max_tokens: int = 256,
                 vote_max_tokens: int = 16, temperature: float = 0.0, timeout_seconds: float = 120.0) -> None:
        if not models:
            raise ValueError("the council needs at least one member model")
        self.models = list(models)
        self.prompts = prompts
        templates = rewriter_templates(prompts)
        self.templates = [templates[i % len(templates)] for i in range(len(models))]

        self.max_tokens = {"rewrite": max_tokens, "vote": vote_max_tokens}
        self.temperature = temperature
        self.timeout_seconds = timeout_seconds

    def client(self, model: str, kind: str) -> LiteLLMChatClient:
        """A fresh client for one agent run (or one call): its ``results`` hold that run's calls only."""
        return LiteLLMChatClient(model, max_tokens=self.max_tokens[kind], temperature=self.temperature,
                                 timeout_seconds=self.timeout_seconds)

    def examples(self, kind: str) -> list[tuple[str, str]]:
        """(user turn, assistant turn) pairs from ``harvest_examples.j2`` for ``kind`` "rewrite" or "vote"."""
        try:
            data = json.loads(self.prompts.render("harvest_examples.j2"))
            pairs = []
            for ex in data.get(kind, []):
                if kind == "rewrite":
                    user = self.prompts.render("harvest_task.j2", query=ex["query"], bad_answer=ex["bad_answer"],
                                               correction=ex.get("correction"))
                else:
                    user = self.prompts.render("harvest_vote.j2", query=ex["query"], bad_answer=ex["bad_answer"],
                                               correction=ex.get("correction"), candidates=_numbered(ex["candidates"]))
                pairs.append((user, ex["reply"]))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise PromptError(f"harvest_examples.j2 must render to JSON {{'rewrite': [...], 'vote': [...]}}: {exc}") from exc
        return pairs

    def _agents(self, clients: list[LiteLLMChatClient], kind: str) -> list[AssistantAgent]:
        agents = []
        shots = self.examples(kind)
        for i, (template, client) in enumerate(zip(self.templates, clients, strict=True), start=1):
            name = f"rewriter_{i}"
            system = self.prompts.render(template, agent=i, agents=len(self.models))
            context = UnboundedChatCompletionContext(initial_messages=[
                message for user, reply in shots
                for message in (UserMessage(content=user, source="user"), AssistantMessage(content=reply, source=name))
            ])
            agents.append(AssistantAgent(name, model_client=client, system_message=system, model_context=context,
                                         description=f"harvest council member {i} ({template})"))
        return agents

    async def _round(self, kind: str, task: str) -> list[Reply]:
        """Every member answers ``task`` once, concurrently; each reply carries its own call's logprobs."""
        clients = [self.client(model, kind) for model in self.models]  # one per run, never shared
        results = await asyncio.gather(*(agent.run(task=task) for agent in self._agents(clients, kind)),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [Reply(_reply(result), client.results[-1].logprobs if client.results else None)
                for result, client in zip(results, clients, strict=True)]

    async def phrase(self, query: str, correction: str) -> str:
        """The correction as member 1's model answers the query with it in memory, or the correction verbatim.

        Member 1 answers under the serving system prompt (``system.j2``) holding the correction as a judged-
        correct past answer, i.e. the way the server answers once the correction is in its memory. Training
        on that wording (context distillation) moves the model less than training on a terse "41 hours":
        on the 135M model the terse targets turned "A week is approximately 7 days" into "31 days".
        An answer that does not agree with the correction is not used."""
        system = self.prompts.render("system.j2", context=[{"query": query, "answer": correction, "similarity": 1.0}],
                                     client_system="")
        result = await self.client(self.models[0], "rewrite").create(
            [SystemMessage(content=system), UserMessage(content=query, source="user")],
            extra_create_args={"max_tokens": PHRASE_MAX_TOKENS})
        text = result.content.strip() if isinstance(result.content, str) else ""
        return text if text and agrees(text, correction) else correction

    async def deliberate(self, query: str, bad_answer: str, correction: str | None,
                         keep_original: bool = False) -> Outcome:
        """Run both rounds for one (already redacted) record; ``outcome.winner`` is None if no candidate survived.

        ``keep_original``: the answer as given is on the ballot too (an answer no user faulted, e.g. one the
        model was merely unsure of), so a rewrite replaces it only by out-voting it; when it wins,
        ``outcome.winner.model`` is ``ORIGINAL_ANSWER``."""
        outcome = Outcome()
        task = self.prompts.render("harvest_task.j2", query=query, bad_answer=bad_answer, correction=correction)
        replies = await self._round("rewrite", task)
        seen: dict[tuple[str, ...], Candidate] = {}
        for i, reply in enumerate(replies):
            parsed = parse_candidate(reply.text)
            if parsed is None:
                outcome.malformed += 1
                log.debug("member %d (%s) reply is malformed: %.120r", i + 1, self.models[i], reply.text)
                continue
            reasoning, answer, strict = parsed
            if not agrees(answer, correction):
                outcome.disagreeing += 1
                continue
            key = tuple(tokens(answer))
            if key in seen:
                outcome.merged += 1
                continue
            probability = mean_probability([t.logprob for t in reply.logprobs or []])
            seen[key] = Candidate(agent=i + 1, model=self.models[i], reasoning=redact(reasoning),
                                  answer=redact(answer), strict=strict, probability=probability)
        if correction and tuple(tokens(correction)) not in seen:
            # The user's correction is always on the ballot: members that cannot phrase it (a small model
            # often cannot) no longer lose the record, and strong members can still out-vote it with a
            # reasoned rewrite that agrees with it.
            seen[tuple(tokens(correction))] = Candidate(agent=0, model=USER_CORRECTION, reasoning="",
                                                        answer=await self.phrase(query, correction), strict=True)
        if keep_original and seen and tuple(tokens(bad_answer)) not in seen:
            seen[tuple(tokens(bad_answer))] = Candidate(agent=-1, model=ORIGINAL_ANSWER, reasoning="",
                                                        answer=bad_answer, strict=True)
        outcome.candidates = list(seen.values())
        if not outcome.candidates:
            return outcome
        ballot = self.prompts.render("harvest_vote.j2", query=query, bad_answer=bad_answer, correction=correction,
                                     candidates=_numbered([{"reasoning": c.reasoning, "answer": c.answer,
                                                            "from_user": c.agent == 0,
                                                            "original": c.agent == -1}
                                                           for c in outcome.candidates]))
        for reply in await self._round("vote", ballot):
            choice = parse_vote(reply.text, len(outcome.candidates))
            outcome.ballots.append(choice)
            if choice is not None:
                outcome.candidates[choice - 1].votes += 1
        for candidate in outcome.candidates:
            score(candidate, council_size=len(self.models), bad_answer=bad_answer, correction=correction)
        ranked = sorted(enumerate(outcome.candidates), key=lambda ic: (-ic[1].votes, -ic[1].quality, ic[0]))
        outcome.winner = ranked[0][1]
        return outcome


def _numbered(candidates: list[dict]) -> list[dict]:
    return [{"number": n, "reasoning": c["reasoning"], "answer": c["answer"], "from_user": c.get("from_user", False),
             "original": c.get("original", False)} for n, c in enumerate(candidates, start=1)]


def _reply(result: TaskResult) -> str:
    message = result.messages[-1]
    content = getattr(message, "content", "")
    return content if isinstance(content, str) else ""


__all__ = ["ORIGINAL_ANSWER", "HarvestCouncil", "ModelCallError", "Outcome", "Reply", "rewriter_templates"]
