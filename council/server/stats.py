"""Serving metrics: Prometheus series (``GET /metrics``) and the post-deploy window (``GET /health``).

The window starts when the live adapter changes and keeps two tallies (requests, successes, latencies):
``served``, every request since the change (the deploy monitor's pre-swap baseline), and the window's own
figures, only the requests the live adapter itself answered, so the monitor judges a new adapter on its own
answers, not on those the base model gave outside its scope or a remote model gave. While no adapter is
live, both tallies count every request.
"""

from __future__ import annotations

import bisect
import json
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from council.routing.confidence import percentile_of_sorted

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
CONFIDENCE_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))
WINDOW_LATENCIES = 10_000  # latencies kept for the window's p95


@dataclass
class Tally:
    """Requests, successes and the last WINDOW_LATENCIES latencies of one set of requests."""

    requests: int = 0
    successes: int = 0
    arrivals: deque[float] = field(default_factory=deque)  # the kept latencies, oldest first
    ordered: list[float] = field(default_factory=list)  # the same latencies, sorted: p95 without a sort

    def add(self, success: bool, latency_ms: float) -> None:
        self.requests += 1
        self.successes += int(success)
        self.arrivals.append(latency_ms)
        bisect.insort(self.ordered, latency_ms)
        if len(self.arrivals) > WINDOW_LATENCIES:
            del self.ordered[bisect.bisect_left(self.ordered, self.arrivals.popleft())]

    def to_dict(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "successes": self.successes,
            "success_rate": round(self.successes / self.requests, 4) if self.requests else None,
            "p95_latency_ms": round(percentile_of_sorted(self.ordered, 0.95), 2) if self.ordered else None,
        }


@dataclass
class Window:
    """Figures since ``adapter`` went live: ``answered`` (by that adapter; by anything while it is None)
    and ``served`` (every request)."""

    adapter: str | None
    since: float = field(default_factory=time.time)
    answered: Tally = field(default_factory=Tally)
    served: Tally = field(default_factory=Tally)

    @property
    def requests(self) -> int:
        return self.answered.requests

    def add(self, success: bool, latency_ms: float, answered_by: str | None) -> None:
        self.served.add(success, latency_ms)
        if self.adapter is None or answered_by == self.adapter:
            self.answered.add(success, latency_ms)

    def to_dict(self) -> dict[str, object]:
        return {"adapter": self.adapter, "since": self.since, **self.answered.to_dict(),
                "served": self.served.to_dict()}


class ServerStats:
    """All counters of one server; one CollectorRegistry per app, never the global one."""

    def __init__(self, loop_metrics_file: Path | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("council_requests", "Chat requests answered, by route winner.", ["head"], registry=r)
        self.errors = Counter("council_request_errors", "Chat requests that failed, by HTTP status.", ["status"],
                              registry=r)
        self.latency = Histogram("council_request_latency_seconds", "Chat request latency.", buckets=LATENCY_BUCKETS,
                                 registry=r)
        self.confidence = Histogram("council_confidence", "Confidence of the answers given.",
                                    buckets=CONFIDENCE_BUCKETS, registry=r)
        self.failures = Counter("council_failures", "Answers recorded as failures, by cause.", ["source"], registry=r)
        self.cancelled = Counter("council_requests_cancelled", "Chat requests whose client hung up before the "
                                 "answer; their generation was stopped and nothing was recorded.", registry=r)
        self.escalations = Counter("council_escalations", "Requests the specialist heads answered too.", registry=r)
        self.feedback = Counter("council_feedback", "Feedback received, by kind.", ["kind"], registry=r)
        self.memory_size = Gauge("council_memory_records", "Exchanges in the memory store.", registry=r)
        self.adapter_info = Gauge("council_live_adapter", "1 for the adapter being served.", ["version"], registry=r)
        self.adapter_changed = Gauge("council_adapter_changed_timestamp_seconds",
                                     "When the live adapter last changed.", registry=r)
        self.window_success = Gauge("council_window_success_rate", "Success rate of the requests the live "
                                    "adapter answered since it changed (all requests while none is live).",
                                    registry=r)
        self.window_p95 = Gauge("council_window_p95_latency_ms", "p95 latency of the requests the live adapter "
                                "answered since it changed (all requests while none is live).", registry=r)
        self.window_requests = Gauge("council_window_requests", "Requests the live adapter answered since it "
                                     "changed (all requests while none is live).", registry=r)
        self.window_served = Gauge("council_window_served_requests", "All requests served since the live "
                                   "adapter changed, whoever answered them.", registry=r)
        self.loop = Gauge("council_loop", "Nightly-loop figures read from logs/loop_metrics.json.", ["name"],
                          registry=r)
        self.loop_metrics_file = loop_metrics_file
        self.window = Window(adapter=None)

    def adapter_live(self, version: str | None, since: float | None = None) -> None:
        """The server serves ``version`` (since ``since``, Unix seconds; default now): start a new window."""
        self.adapter_info.clear()
        self.adapter_info.labels(version or "base").set(1)
        self.adapter_changed.set(since or time.time())
        self.window = Window(adapter=version)
        self._publish_window()

    def observe(self, head: str, success: bool, confidence: float, latency_ms: float, source: str | None,
                escalated: bool, adapter: str | None, live: str | None) -> None:
        """Count one answered request: ``adapter`` answered it (None: the base model or a remote one) while
        ``live`` was the live adapter (a change not yet noted starts a new window first)."""
        if live != self.window.adapter:
            self.adapter_live(live)
        self.requests.labels(head).inc()
        self.latency.observe(latency_ms / 1000)
        self.confidence.observe(confidence)
        if escalated:
            self.escalations.inc()
        if not success:
            self.failures.labels(source or "low_confidence").inc()
        self.window.add(success, latency_ms, answered_by=adapter)
        self._publish_window()

    def _publish_window(self) -> None:
        data = self.window.to_dict()
        self.window_requests.set(self.window.requests)
        self.window_served.set(self.window.served.requests)
        self.window_success.set(data["success_rate"] if data["success_rate"] is not None else float("nan"))
        self.window_p95.set(data["p95_latency_ms"] if data["p95_latency_ms"] is not None else float("nan"))

    def refresh_loop_metrics(self) -> None:
        """Copy the nightly loop's figures (written by ``council nightly``) into gauges."""
        if self.loop_metrics_file is None or not self.loop_metrics_file.is_file():
            return
        try:
            figures = json.loads(self.loop_metrics_file.read_text())
        except (OSError, json.JSONDecodeError):
            return
        for name, value in figures.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.loop.labels(name).set(value)
