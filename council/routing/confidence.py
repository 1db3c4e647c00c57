"""How sure the council is of an answer, from 0 to 1.

With token logprobs (the local provider and most OpenAI-compatible servers return them)::

    p_i        = exp(logprob_i)                       # probability of each generated token
    mean       = sum(p_i) / n                         # mean token probability
    low        = 10th percentile of p_i               # the shakiest tokens
    confidence = 0.75 * mean + 0.25 * low

The mean alone is dominated by easy tokens (punctuation, the echo of the question); the low percentile
pulls confidence down when a few content tokens were guesses, which is how wrong facts look. An empty
answer has confidence 0.

Without logprobs the council asks the same model to rate its answer with ``prompts/self_rate.j2``
("CONFIDENCE: <0-10>"), and uses that number / 10; if the rating cannot be read, confidence is 0, so
the answer counts as a failure and escalates, rather than passing unchecked.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

MEAN_WEIGHT = 0.75
LOW_PERCENTILE = 0.10
_RATING = re.compile(r"CONFIDENCE\s*[:=]\s*(\d+(?:\.\d+)?)", re.IGNORECASE)


def _percentile(sorted_values: Sequence[float], fraction: float) -> float:
    position = fraction * (len(sorted_values) - 1)
    low, high = math.floor(position), math.ceil(position)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def from_logprobs(logprobs: Sequence[float]) -> float:
    """Confidence from per-token log-probabilities (see the module docstring)."""
    if not logprobs:
        return 0.0
    probs = sorted(math.exp(min(lp, 0.0)) for lp in logprobs)
    mean = sum(probs) / len(probs)
    return round(MEAN_WEIGHT * mean + (1 - MEAN_WEIGHT) * _percentile(probs, LOW_PERCENTILE), 6)


def from_self_rating(text: str) -> float | None:
    """Read "CONFIDENCE: 7" (0-10) from a model's self-rating; None when absent."""
    match = _RATING.search(text or "")
    if match is None:
        return None
    return max(0.0, min(1.0, float(match.group(1)) / 10.0))


def percentile_of_sorted(values: Sequence[float], fraction: float) -> float:
    """Linear-interpolated percentile of ``values``, already in ascending order (0 for none)."""
    return _percentile(values, fraction) if values else 0.0
