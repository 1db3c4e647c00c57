"""Who may recall what, and in which order: ``memory.share`` as SQL, and corrections ranked first.

``memory.share`` = "corrections" (default): corrected exchanges are shared knowledge, successes are recalled for
their own user only; "none": everything stays with its user; "all": every success and correction is shared.
``council/memory/store.py`` applies both in ``search``. A superseded correction (``corrections.py``) is never
recalled: the question's newest correction answers it.
"""

from __future__ import annotations

from council.memory.corrections import CURRENT as _CORRECTED  # a superseded correction is never recalled
from council.memory.corrections import same_question
from council.memory.schema import ExchangeRecord

CORRECTION_LEAD = 0.05  # a recalled correction goes before successes less than this much more similar
__all__ = ["CORRECTION_LEAD", "RECALL", "ranked", "same_question"]
RECALL = {"all": (f"(success = 1 OR {_CORRECTED})", 0), "none": (f"(success = 1 OR {_CORRECTED}) AND user IS ?", 1),
           "corrections": (f"({_CORRECTED} OR (success = 1 AND user IS ?))", 1)}  # memory.share -> SQL, user args


def ranked(hits: list[tuple[ExchangeRecord, float]], lead: float) -> list[tuple[ExchangeRecord, float]]:
    """Recall order: a correction leads hits up to ``lead`` more similar, and a success to the same question as a
    recalled correction goes (superseded). With ``lead`` 0 (not recall), ``hits`` as they are."""
    if not lead:
        return hits
    corrected = {same_question(r.query) for r, _ in hits if r.gold_answer}
    kept = [(r, s) for r, s in hits if r.gold_answer or same_question(r.query) not in corrected]
    return sorted(kept, key=lambda hit: -(hit[1] + lead * bool(hit[0].gold_answer)))
