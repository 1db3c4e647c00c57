"""The server's start: the port is bound at once, the models and stores load behind it.

Kubernetes' convention: ``/livez`` answers 200 as soon as the process serves HTTP, ``/readyz`` 503 until
the models and stores are loaded and 200 after; ``/health`` says ``"starting"`` meanwhile. Requests that
need the models wait for them (up to ``server.request_timeout_seconds``) instead of being refused, so a
client that connects early is answered, just later. ``Startup`` is what the app and its middleware share.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Startup:
    """Whether the server can answer yet: ``done`` is set once loading ended, well (``error`` None) or not."""

    started: float = field(default_factory=time.time)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    error: str | None = None
    ready_seconds: float | None = None
    on_ready: list[Callable[[], None]] = field(default_factory=list)  # e.g. the CLI's "ready on URL" line
    on_failure: list[Callable[[str], None]] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return self.done.is_set() and self.error is None

    def finish(self, error: str | None = None) -> None:
        self.error = error
        self.ready_seconds = round(time.time() - self.started, 3)
        self.done.set()
        for callback in self.on_failure if error else self.on_ready:
            callback(error) if error else callback()

    def state(self) -> str:
        return "starting" if not self.done.is_set() else ("failed" if self.error else "ready")
