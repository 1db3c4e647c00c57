"""Requests on their way to the in-process engine, so that requests sent together are decoded together.

The batched decoder takes no new rows once a batch runs (``council/engine/local/batched.py``), and requests that
a client sends at the same moment reach the engine some tens of milliseconds apart (memory recall, prompt
rendering, litellm). So a batch about to start waits, up to ``model.batch_wait_ms``, for every request still on
its way; a lone request never waits. Measured with 8 streamed requests at once on 2 cores: before, 3 or 4 got
their first token in ~0.6 s and the others only after the first batch's whole answers (~6-8 s); after, all 8
in ~1.3-1.6 s::

    arrivals = Arrivals()
    with arrivals.arriving():        # around the request's handling (ChatService.answer)
        ...                          # the engine, when the request is queued: arrivals.queued()
    arrivals.wait(0.25)              # on the model thread, before a batch starts

A request is found again when it is queued through a context variable, which follows it through litellm's
awaits (and the tasks litellm creates, which copy the context).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Iterator

log = logging.getLogger(__name__)


class _Ticket:
    """One request on its way; closed once, when it is queued or when its handling ends."""

    def __init__(self, arrivals: Arrivals) -> None:
        self.arrivals, self.open = arrivals, True

    def close(self) -> None:
        if self.open:
            self.open = False
            self.arrivals._arrived()


_TICKET: contextvars.ContextVar[_Ticket | None] = contextvars.ContextVar("council_arrival", default=None)


class Arrivals:
    """A count of requests on their way, and a wait for it to reach zero."""

    def __init__(self) -> None:
        self._count = 0
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        ticket = _Ticket(self)
        with self._changed:
            self._count += 1
        token = _TICKET.set(ticket)
        try:
            yield
        finally:
            _TICKET.reset(token)
            ticket.close()

    def queued(self) -> None:
        """The current request reached the engine's queue (a no-op outside ``arriving``)."""
        ticket = _TICKET.get()
        if ticket is not None:
            ticket.close()

    def _arrived(self) -> None:
        with self._changed:
            self._count -= 1
            self._changed.notify_all()

    def wait(self, seconds: float) -> None:
        """Block until no request is on its way, or ``seconds`` have passed."""
        started = time.perf_counter()
        with self._changed:
            self._changed.wait_for(lambda: self._count == 0, timeout=seconds)
            still = self._count
        log.debug("batch waited %.0f ms for arriving requests (%d still on their way)",
                  1000 * (time.perf_counter() - started), still)
