"""The one record Council keeps per exchange, shared by serving (writes) and harvest (reads)."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from council.core.errors import InvalidRequestError

THUMBS = ("up", "down")
FAILING_RATING = 2  # a rating at or below this marks the exchange a failure


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_record_id() -> str:
    return f"rec_{uuid.uuid4().hex}"


def to_iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


def from_iso(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@dataclass
class Feedback:
    """What a user said about an answer; a later POST /v1/feedback updates it in place."""

    thumbs: str | None = None
    rating: int | None = None
    correction: str | None = None
    at: datetime | None = None

    @property
    def is_negative(self) -> bool:
        return (
            self.thumbs == "down"
            or (self.rating is not None and self.rating <= FAILING_RATING)
            or bool(self.correction)
        )

    def to_dict(self) -> dict[str, Any]:
        return {"thumbs": self.thumbs, "rating": self.rating, "correction": self.correction, "at": to_iso(self.at)}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Feedback | None:
        if not data:
            return None
        return cls(data.get("thumbs"), data.get("rating"), data.get("correction"), from_iso(data.get("at")))


@dataclass
class ExchangeRecord:
    """One question and the answer the council gave, with everything harvest needs later."""

    query: str
    answer: str
    confidence: float
    success: bool
    model: str
    id: str = field(default_factory=new_record_id)
    created_at: datetime = field(default_factory=utcnow)
    user: str | None = None
    session: str | None = None
    messages: list[dict[str, str]] = field(default_factory=list)
    adapter: str | None = None
    route: list[str] = field(default_factory=list)
    latency_ms: float = 0.0
    context_ids: list[str] = field(default_factory=list)
    feedback: Feedback | None = None
    harvested_at: datetime | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)  # the request's tools, as sent (OpenAI shape)
    response_format: dict[str, Any] | None = None  # json_object / json_schema the answer was held to
    tool_calls: list[dict[str, Any]] | None = None  # the answer, when it was tool calls (answer is then "")
    supersedes: list[str] = field(default_factory=list)  # earlier corrections of the same question this one replaced
    superseded_by: str | None = None  # the newer correction that replaced this one: no longer recalled or trained on

    @property
    def failure_source(self) -> str | None:
        """Why this record is a failure: correction, thumbs_down, low_rating, low_confidence; None if it is not."""
        if self.success:
            return None
        fb = self.feedback
        if fb is not None and fb.correction:
            return "correction"
        if fb is not None and fb.thumbs == "down":
            return "thumbs_down"
        if fb is not None and fb.rating is not None and fb.rating <= FAILING_RATING:
            return "low_rating"
        return "low_confidence"

    @property
    def gold_answer(self) -> str | None:
        return self.feedback.correction if self.feedback and self.feedback.correction else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["created_at"] = to_iso(self.created_at)
        data["harvested_at"] = to_iso(self.harvested_at)
        data["feedback"] = self.feedback.to_dict() if self.feedback else None
        data["failure_source"] = self.failure_source
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExchangeRecord:
        data = {k: v for k, v in data.items() if k != "failure_source"}
        data["created_at"] = from_iso(data["created_at"])
        data["harvested_at"] = from_iso(data.get("harvested_at"))
        data["feedback"] = Feedback.from_dict(data.get("feedback"))
        return cls(**data)


def check_feedback(thumbs: str | None, rating: int | None, correction: str | None) -> None:
    """Raise InvalidRequestError (naming the field) unless this is feedback a record can take."""
    if thumbs is not None and thumbs not in THUMBS:
        raise InvalidRequestError(f"thumbs must be one of {list(THUMBS)}, got {thumbs!r}", param="thumbs")
    if rating is not None and (isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 5):
        raise InvalidRequestError(f"rating must be an integer 1..5, got {rating!r}", param="rating")
    if correction is not None and (not isinstance(correction, str) or not correction.strip()):
        raise InvalidRequestError("correction must be a non-empty string", param="correction")
    if thumbs is None and rating is None and correction is None:
        raise InvalidRequestError("feedback needs at least one of thumbs, rating, correction")
