"""Parsing council replies and scoring a rewrite's quality (0-1), deterministically.

Candidate format: ``REASONING: <text> ANSWER: <text>`` (case-insensitive, markdown ``**`` ignored). A reply
that starts with ``REASONING:`` is *strict* (format = 1.0); one with other text before it is *lenient*
(format = 0.5); one without both non-empty parts is malformed and dropped. Ballots: ``VOTE: <n>``.

Text similarity uses normalised tokens (lower case, runs of letters/digits, a few stop words dropped, number
words zero..twenty written as digits):
``f1(a, b)`` is the token F1 of the two bags; ``containment(part, whole)`` is the share of ``part``'s tokens
found in ``whole``.

Quality = weighted mean of the components below; a component that does not apply (no correction, no
logprobs) is left out and the remaining weights are re-normalised, so the score stays within 0..1::

    vote_share   0.30  votes for this candidate / council members (invalid ballots count as no support)
    format       0.10  1.0 strict, 0.5 lenient
    reasoning    0.15  min(1, words of REASONING / 20)
    improvement  0.15  1 - f1(answer, bad answer): the rewrite must actually change the failed answer
    agreement    0.20  containment(correction, answer)       (only when the user gave a correction)
    confidence   0.10  mean token probability of the reply   (only when the provider gave logprobs)

Rewrites scoring at least ``min_quality`` (default 0.7) are kept. With a correction, a candidate whose
answer contains less than 80% of the correction's tokens (``AGREEMENT_GATE``; so all of them for
corrections of up to four tokens: "Tallinn, Estonia" is not agreed with by "Estonia", nor "41 hours" by
"41 days") does not agree with it and is dropped before the vote; nor does one that drops any name or
number of the correction (capitalised words after the first, words with a digit).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field

WEIGHTS = {"vote_share": 0.30, "format": 0.10, "reasoning": 0.15, "improvement": 0.15, "agreement": 0.20,
           "confidence": 0.10}
REASONING_WORDS = 20
AGREEMENT_GATE = 0.8
_STOP = frozenset("a an the is are was were be of to in on and or it this that for as with by at".split())
_NUMBERS = {word: str(n) for n, word in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_MARKUP = re.compile(r"[*_#`]+")
_CANDIDATE = re.compile(r"reasoning\s*:\s*(?P<reasoning>.*?)\s*\banswer\s*:\s*(?P<answer>.*)",
                        re.IGNORECASE | re.DOTALL)
_NEXT_SECTION = re.compile(r"\n\s*(?:reasoning|vote|candidate|question|bad answer)\s*:", re.IGNORECASE)
_VOTE = re.compile(r"vote\s*:?\s*\[?#?(\d+)\]?", re.IGNORECASE)


@dataclass
class Candidate:
    """One council member's proposal, parsed."""

    agent: int
    model: str
    reasoning: str
    answer: str
    strict: bool
    probability: float | None = None  # mean token probability of the reply, if the provider gave logprobs
    votes: int = 0
    quality: float = 0.0
    parts: dict[str, float] = field(default_factory=dict)


def tokens(text: str) -> list[str]:
    """Lower-cased runs of letters/digits, stop words dropped, number words zero..twenty as digits."""
    return [_NUMBERS.get(t, t) for t in re.findall(r"[a-z0-9]+", text.lower()) if t not in _STOP]


def f1(a: str, b: str) -> float:
    ta, tb = Counter(tokens(a)), Counter(tokens(b))
    if not ta or not tb:
        return 1.0 if not ta and not tb else 0.0
    common = sum((ta & tb).values())
    if common == 0:
        return 0.0
    precision, recall = common / sum(ta.values()), common / sum(tb.values())
    return 2 * precision * recall / (precision + recall)


def containment(part: str, whole: str) -> float:
    tp, tw = Counter(tokens(part)), Counter(tokens(whole))
    if not tp:
        return 1.0
    return sum((tp & tw).values()) / sum(tp.values())


def parse_candidate(text: str) -> tuple[str, str, bool] | None:
    """``(reasoning, answer, strict)`` from a ``REASONING: ... ANSWER: ...`` reply, or None if malformed."""
    clean = _MARKUP.sub("", text or "").strip()
    match = _CANDIDATE.search(clean)
    if match is None:
        return None
    reasoning = match.group("reasoning").strip()
    answer = _NEXT_SECTION.split(match.group("answer"), maxsplit=1)[0].strip()
    if not tokens(reasoning) or not tokens(answer):
        return None
    return reasoning, answer, clean[: match.start()].strip() == ""


def parse_vote(text: str, choices: int) -> int | None:
    """The 1-based candidate number in a ``VOTE: <n>`` ballot, or None if absent or out of range."""
    clean = _MARKUP.sub("", text or "").strip()
    match = _VOTE.search(clean)
    if match is None and clean.isdigit():
        number = int(clean)
    elif match is not None:
        number = int(match.group(1))
    else:
        return None
    return number if 1 <= number <= choices else None


def mean_probability(logprobs: list[float]) -> float | None:
    return sum(math.exp(lp) for lp in logprobs) / len(logprobs) if logprobs else None


def score(candidate: Candidate, *, council_size: int, bad_answer: str, correction: str | None) -> float:
    """Set ``candidate.parts`` and ``candidate.quality`` per the formula in the module docstring."""
    parts = {
        "vote_share": candidate.votes / council_size if council_size else 0.0,
        "format": 1.0 if candidate.strict else 0.5,
        "reasoning": min(1.0, len(candidate.reasoning.split()) / REASONING_WORDS),
        "improvement": 1.0 - f1(candidate.answer, bad_answer),
    }
    if correction:
        parts["agreement"] = containment(correction, candidate.answer)
    if candidate.probability is not None:
        parts["confidence"] = candidate.probability
    total = sum(WEIGHTS[name] for name in parts)
    candidate.parts = {name: round(value, 4) for name, value in parts.items()}
    candidate.quality = round(sum(WEIGHTS[name] * value for name, value in parts.items()) / total, 4)
    return candidate.quality


def names(text: str) -> set[str]:
    """Lower-cased words of ``text`` that name things: capitalised words after the first, and any with a digit."""
    words = re.findall(r"[A-Za-z0-9]+", text)
    return {w.lower() for i, w in enumerate(words) if any(c.isdigit() for c in w) or (i > 0 and w[0].isupper())}


def agrees(answer: str, correction: str | None) -> bool:
    """True when ``answer`` holds >= 80% of the correction's words and every name and number in it: "Krell is the
    capital of Zorvath" holds 4/5 of "The capital of Zorvath is Krell Harbor" but drops the name's "Harbor"."""
    if not correction:
        return True
    return (containment(correction, answer) >= AGREEMENT_GATE
            and set(tokens(" ".join(names(correction)))) <= set(tokens(answer)))
