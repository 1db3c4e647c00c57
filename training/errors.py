"""Errors raised by the training stage (``council train``)."""

from __future__ import annotations

from council.core.errors import CouncilError


class TrainingError(CouncilError):
    """Training could not produce an adapter (backend crash, lock held, unusable parent adapter)."""

    code = "training_failed"
