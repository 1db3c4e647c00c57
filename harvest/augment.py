"""Knowledge augmentation: more wordings of every fact a user taught, so training carries it to new questions.

A model fine-tuned on one phrasing of a fact answers that phrasing and little else (Allen-Zhu & Li, *Physics of
Language Models 3.1*, ICML 2024: ~10% on held-out wordings with one phrasing per fact, ~96% with several;
Ovadia et al., EMNLP 2024: accuracy rises with the number of paraphrases). So for every kept correction the
harvest council writes, through litellm (``HarvestCouncil.client``; a stronger ``--models`` writes better ones):

* **paraphrases** of the question (default 6): each member writes ``samples`` rewordings
  (``prompts/harvest_paraphrase.j2``), each after a different window of three worked examples and sampled at
  ``temperature`` 0.7 with its own seed. Greedy decoding made the 135M model repeat the question: 72 of 117
  proposals were dropped as the same, 0-3 kept per fact; sampled, 2-6 per fact pass the checks below, which
  catch the drift sampling brings;
* **statements** of the fact as one sentence (default 2, ``harvest_statement.j2``), written like the
  paraphrases (one more proposal than wanted, for the checks to choose from);
* one **reverse question** where the fact has one (``harvest_reverse.j2``: "Which novel did Frank Herbert
  write?"), since a model trained on "A is B" does not answer "B is?" (Berglund et al. 2023, the reversal curse).

Few-shot examples for every kind are in ``harvest_augment_examples.j2``. Each proposal is checked, in order:

1. ``format``: one line; a question ends with "?", a statement does not;
2. ``key_words``: it keeps at least two thirds of the question's key words (capitalised words after the first,
   anything with a digit), and invents no number the fact does not hold;
   ``kind`` (questions only): it asks for the same kind of answer (``answer_kind``: a person, a place, a time
   or an amount) where both wordings say which: "Who builds the Zorblax 3000?" does not reword "In which city
   is the Zorblax 3000 built?";
3. ``leak`` (questions only): it does not already contain the answer;
4. ``answer``: a statement or reverse answer agrees with the correction (``harvest.quality.agrees``);
5. ``same``: it differs from the original question and from every proposal kept before it (token F1 < 0.9);
6. ``meaning`` (with an embedder): its sentence embedding (all-MiniLM-L6-v2) has cosine >= ``min_similarity``
   (0.8) with the original question's: "How long is the warranty?" -> "What is the longest lifespan of the
   drone?" scored 0.59 and "In which city is it built?" -> "What is the tallest building in it?" passed 0.75,
   faithful rewordings 0.84-0.98. Paraphrases are kept most faithful first, so the ones held out as the
   deploy's probes are the surest;
   ``other_fact``: it is not closer, by more than ``other_fact_margin``, to another fact taught the same night
   (``Augmenter.other_questions``) than to its own: "Which company made the Zorblax 3000?", written for "Who is
   the CEO of the company that makes the Zorblax 3000?", would teach the CEO's name as the maker's. The margin
   lets through what is near both ("Who runs the company that makes it?" is 0.02 nearer the maker question);
7. ``vote``: most council members answer YES to ``harvest_agree.j2`` (does it ask for, or truly state, the fact).

Usage::

    augmenter = Augmenter(council, prompts, AugmentSettings())
    extra = await augmenter.augment(record_id, question, answer, correction)
    extra.paraphrases, extra.statements, extra.reverse, extra.dropped
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from autogen_core.models import AssistantMessage, SystemMessage, UserMessage

from council.core.errors import PromptError
from council.routing.prompts import PromptStore
from harvest.council import HarvestCouncil
from harvest.quality import agrees, f1, names, tokens

KINDS = ("paraphrase", "statement", "reverse", "agree")
SAME_F1 = 0.9  # token F1 at or above which two wordings count as the same
_WORDS = re.compile(r"[A-Za-z0-9]+")
_REVERSE = re.compile(r"question\s*:\s*(?P<q>.+?)\s*answer\s*:\s*(?P<a>.+)", re.IGNORECASE | re.DOTALL)


@dataclass
class AugmentSettings:
    paraphrases: int = field(default=6, metadata={"help": "Paraphrased questions kept per corrected fact (0 = none)."})
    statements: int = field(default=2, metadata={"help": "Declarative statements kept per corrected fact (0 = none)."})
    reverse: bool = field(default=True, metadata={"help": "Also write the reverse question where the fact has one."})
    samples: int = field(default=5, metadata={"help": "Paraphrases each council member writes per fact (each in "
                                                             "its own style: a window of the worked examples)."})
    min_similarity: float = field(default=0.8, metadata={
        "help": "Cosine similarity (all-MiniLM-L6-v2) a paraphrase or statement needs with the original question."})
    max_in_flight: int = field(default=32, metadata={
        "help": "Augmentation calls running at once across all facts (one decoding batch of the local model); "
                "a call's timeout starts only when it runs, so a long night queues instead of timing out."})
    temperature: float = field(default=0.7, metadata={
        "help": "Sampling temperature of the paraphrases (statements are greedy). Greedy (0) made the 135M model "
                "repeat the question (0-3 kept per fact); 0.7 gives 2-6, the checks drop the drift."})
    other_fact_margin: float = field(default=0.05, metadata={
        "help": "How much nearer (cosine) a paraphrase may be to another fact of the night than to its own."})
    max_tokens: int = field(default=48, metadata={"help": "Token limit of one proposal."})

    def __post_init__(self) -> None:
        if self.paraphrases < 0 or self.statements < 0 or self.samples < 1 or self.max_tokens < 8:
            raise ValueError("paraphrases and statements must be >= 0, samples >= 1 and max_tokens >= 8 "
                             "(defaults 6, 2, 5, 48)")
        if not 0 <= self.other_fact_margin <= 1:
            raise ValueError(f"other_fact_margin must be within 0..1 (default 0.05), got {self.other_fact_margin}")
        if self.max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1 (default 32)")
        if not 0 <= self.temperature <= 2:
            raise ValueError(f"augment temperature must be within 0..2 (default 0), got {self.temperature}")


@dataclass
class Augmented:
    """What the council wrote for one fact, after the checks; ``dropped`` counts proposals per failed check."""

    paraphrases: list[str] = field(default_factory=list)
    statements: list[str] = field(default_factory=list)
    reverse: tuple[str, str] | None = None  # (question about the answer, sentence answering it)
    proposed: int = 0
    dropped: Counter = field(default_factory=Counter)


def _numbers(text: str) -> set[str]:
    return {w for w in _WORDS.findall(text.replace(",", "")) if any(c.isdigit() for c in w)}


def keeps_key_words(candidate: str, question: str, fact: str) -> bool:
    """At least 2/3 of the question's key words are kept, and no number appears that the fact does not hold."""
    keys = names(question)
    have = {w.lower() for w in _WORDS.findall(candidate)}
    enough = len(keys & have) >= math.ceil(len(keys) * 2 / 3)
    return enough and _numbers(candidate) <= _numbers(question) | _numbers(fact)


_KINDS = (("amount", re.compile(r"\bhow (?:many|much|long|old|far|big|heavy|tall|fast|often)\b")),
          ("time", re.compile(r"\bwhen\b|\b(?:what|which) (?:year|date|day|month|time)\b")),
          ("place", re.compile(r"\bwhere\b|\b(?:what|which) (?:city|country|town|place|state|region)\b")),
          ("person", re.compile(r"\bwho(?:m|se)?\b")))


def answer_kind(question: str) -> str | None:
    """The kind of answer a question asks for, by its question words: amount, time, place, person or None
    (plain "what"/"which" could ask for anything, so such a wording is checked against nothing). The kinds are
    tried in that order: "Who knows how long it lasts?" asks for an amount."""
    text = question.lower()
    for kind, pattern in _KINDS:
        if pattern.search(text):
            return kind
    return None


def _line(text: str) -> str:
    return " ".join((text or "").strip().strip('"').split())


class Augmenter:
    """Writes and checks the extra wordings of one fact at a time; safe to run for many facts concurrently."""

    def __init__(self, council: HarvestCouncil, prompts: PromptStore, settings: AugmentSettings,
                 embed: Callable[[list[str]], np.ndarray] | None = None) -> None:
        self.council, self.prompts, self.settings, self.embed = council, prompts, settings, embed
        self._shots = {kind: self._examples(kind) for kind in KINDS}
        self._slots = asyncio.Semaphore(settings.max_in_flight)
        self.other_questions: list[str] = []  # the other facts taught the same night (see ``other_fact``)

    def _examples(self, kind: str) -> list[tuple[str, str]]:
        try:
            data = json.loads(self.prompts.render("harvest_augment_examples.j2"))
            return [(self.prompts.render(f"harvest_{kind}.j2", **ex["task"]), ex["reply"]) for ex in data[kind]]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise PromptError(f"harvest_augment_examples.j2 must render to JSON with a list per kind {KINDS}: "
                              f"{exc}") from exc

    async def _ask(self, model: str, kind: str, task: str, temperature: float, seed: int, max_tokens: int,
                   style: int = 0) -> str:
        messages = [SystemMessage(content=self.prompts.render("system.j2", context=[], client_system=""))]
        shots = self._shots[kind]
        width = 3 if kind == "paraphrase" else 2
        if kind in ("paraphrase", "statement") and len(shots) > width:  # style k: examples from the k-th on
            start = style % len(shots)
            shots = (shots + shots)[start:start + width]
        for user, reply in shots:
            messages += [UserMessage(content=user, source="user"), AssistantMessage(content=reply, source="council")]
        messages.append(UserMessage(content=task, source="user"))
        args = {"temperature": temperature, "max_tokens": max_tokens, "seed": seed}
        async with self._slots:
            result = await self.council.client(model, "rewrite").create(messages, extra_create_args=args)
        return result.content if isinstance(result.content, str) else ""

    async def _propose(self, record_id: str, question: str, answer: str) -> tuple[list[str], list[str], list[str]]:
        s, models = self.settings, self.council.models
        base = int(hashlib.sha256(record_id.encode()).hexdigest()[:8], 16)
        para = self.prompts.render("harvest_paraphrase.j2", question=question)
        fact = {"question": question, "answer": answer}
        calls = [("paraphrase", m, para, s.temperature, i * s.samples + j)  # the seed is the style, and seeds sampling
                 for i, m in enumerate(models) for j in range(s.samples if s.paraphrases else 0)]
        statement = self.prompts.render("harvest_statement.j2", **fact)
        calls += [("statement", models[i % len(models)], statement, 0.0, i)
                  for i in range(s.statements + 1 if s.statements else 0)]
        if s.reverse:
            calls.append(("reverse", models[0], self.prompts.render("harvest_reverse.j2", **fact), 0.0, base))
        texts = await asyncio.gather(*(self._ask(m, kind, task, temp, seed, s.max_tokens,
                                                 style=seed if kind in ("paraphrase", "statement") else 0)
                                       for kind, m, task, temp, seed in calls))
        out: dict[str, list[str]] = {"paraphrase": [], "statement": [], "reverse": []}
        for (kind, *_), text in zip(calls, texts, strict=True):
            out[kind].append(text)
        return out["paraphrase"], out["statement"], out["reverse"]

    async def _agreed(self, question: str, answer: str, candidate: str) -> bool:
        task = self.prompts.render("harvest_agree.j2", question=question, answer=answer, candidate=candidate)
        ballots = await asyncio.gather(*(self._ask(m, "agree", task, 0.0, 0, 2) for m in self.council.models))
        yes = sum(1 for b in ballots if b.strip().upper().startswith("YES"))
        return yes * 2 > len(ballots)

    async def augment(self, record_id: str, question: str, answer: str, correction: str) -> Augmented:
        """Paraphrases, statements and a reverse question for one (redacted) fact; see the module docstring.

        ``answer`` is the kept answer, ``correction`` the user's words (what a right answer must contain).
        Raises ``ModelCallError`` when a model call fails (the caller keeps the record for a later run)."""
        result = Augmented()
        paraphrases, statements, reverses = await self._propose(record_id, question, answer)
        result.proposed = len(paraphrases) + len(statements) + len(reverses)
        seen = [question]

        def fresh(text: str) -> bool:
            return all(f1(text, other) < SAME_F1 for other in seen)

        checked: list[tuple[str, str]] = []  # (kind, text) that passed the deterministic checks
        kind = answer_kind(question)
        for text in map(_line, paraphrases):
            why = ("format" if not text.endswith("?") or len(tokens(text)) > 2 * len(tokens(question)) + 4 else
                   "key_words" if not keeps_key_words(text, question, correction) else
                   "kind" if answer_kind(text) not in (kind, None) and kind is not None else
                   "leak" if agrees(text, correction) else "same" if not fresh(text) else None)
            if why is None:
                seen.append(text)
                checked.append(("paraphrase", text))
            else:
                result.dropped[why] += 1
        for text in map(_line, statements):
            why = ("format" if not text or text.endswith("?") else
                   "key_words" if not keeps_key_words(text, question, correction) else
                   "answer" if not agrees(text, correction) else "same" if not fresh(text) else None)
            if why is None:
                seen.append(text)
                checked.append(("statement", text))
            else:
                result.dropped[why] += 1
        checked = await self._faithful(question, checked, result)
        reverse = self._reverse(reverses, question, correction, result)
        votes = await asyncio.gather(*(self._agreed(question, correction, text) for _, text in checked))
        for (kind, text), agreed in zip(checked, votes, strict=True):
            if not agreed:
                result.dropped["vote"] += 1
            elif kind == "paraphrase" and len(result.paraphrases) < self.settings.paraphrases:
                result.paraphrases.append(text)
            elif kind == "statement" and len(result.statements) < self.settings.statements:
                result.statements.append(text)
        if reverse is not None and await self._agreed(question, correction, reverse[1]):
            result.reverse = reverse
        elif reverse is not None:
            result.dropped["vote"] += 1
        return result

    async def _faithful(self, question: str, checked: list[tuple[str, str]], result: Augmented) -> list[tuple[str, str]]:
        """Drop proposals whose meaning drifted from the question (embedding cosine below ``min_similarity``)."""
        if self.embed is None or not checked:
            return checked
        others = [q for q in self.other_questions if f1(q, question) < SAME_F1]
        vectors = await asyncio.to_thread(self.embed, [question, *(text for _, text in checked), *others])
        candidates, other = vectors[1:len(checked) + 1], vectors[len(checked) + 1:]
        nearest_other = (candidates @ other.T).max(axis=1) if len(others) else np.full(len(checked), -1.0)
        scored = []
        for (kind, text), similarity, rival in zip(checked, (candidates @ vectors[0]).tolist(),
                                                   nearest_other.tolist(), strict=True):
            if similarity < self.settings.min_similarity:
                result.dropped["meaning"] += 1
            elif kind == "paraphrase" and rival > similarity + self.settings.other_fact_margin:
                result.dropped["other_fact"] += 1
            else:
                scored.append((similarity, kind, text))
        return [(kind, text) for _, kind, text in sorted(scored, key=lambda item: -item[0])]

    @staticmethod
    def _reverse(replies: list[str], question: str, correction: str, result: Augmented) -> tuple[str, str] | None:
        """The first reply that asks about the answer and answers with the question's subject."""
        for reply in replies:
            match = _REVERSE.search(reply or "")
            if match is None:
                result.dropped["format"] += 1
                continue
            ask, say = _line(match.group("q")), _line(match.group("a"))
            if not ask.endswith("?") or f1(ask, question) >= SAME_F1:
                result.dropped["format" if not ask.endswith("?") else "same"] += 1
            elif not agrees(ask, correction) or not agrees(say, correction):
                result.dropped["answer"] += 1
            elif not keeps_key_words(say, question, correction):
                result.dropped["key_words"] += 1
            else:
                return ask, say
        return None
