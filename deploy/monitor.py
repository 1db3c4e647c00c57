"""Talking to the running server around a swap: measure the baseline, confirm the adapter, watch the window.

The server's ``GET /health`` reports ``adapter`` and ``window`` = {since, requests, success_rate,
p95_latency_ms, served}, counted since its last adapter change: the top-level figures cover only the
requests the live adapter answered, ``served`` every request. Like Flagger's or Argo Rollouts' canary
analysis, the window is judged relative to figures measured on the same server before the swap
(``measure_baseline``: the ``served`` figures, topped up with probe prompts when they hold fewer than
``min_requests``), so the defaults hold on any hardware. ``watch`` samples /health every
``sample_seconds`` for ``window_seconds``; once the adapter answered ``min_requests`` requests it rolls
back when their success rate falls more than ``max_success_drop`` below the baseline's or their p95
exceeds ``max_latency_ratio`` times the baseline's (plus ``LATENCY_FLOOR_MS``), or crosses an absolute
limit the user set. With too little traffic it sends the same probes so the window gets data.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from council.core import http

log = logging.getLogger(__name__)

LATENCY_FLOOR_MS = 50.0  # added to the relative p95 limit: a 2 ms baseline must not fail at 7 ms


def default_server_url(settings: Any) -> str:
    """``http://host:port`` of the configured server (a wildcard bind address becomes 127.0.0.1)."""
    host = settings.server.host
    host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    return f"http://[{host}]:{settings.server.port}" if ":" in host else f"http://{host}:{settings.server.port}"


class ServerClient:
    """Synchronous JSON client for one Council server; network trouble returns None, never raises."""

    def __init__(self, base_url: str, api_key: str = "", timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.last_error = ""

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None,
                 timeout: float | None = None) -> tuple[int, Any] | None:
        """(HTTP status, its JSON body or None when empty or not JSON); None, with ``last_error``, on no reply."""
        headers = {"Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        try:
            reply = http.request(method, self.base_url + path, body, headers=headers,
                                 timeout=timeout or self.timeout)
        except http.RequestFailed as exc:
            self.last_error = str(exc)
            return None
        try:
            return reply.status, reply.json() if reply.content else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            return reply.status, None

    def health(self) -> dict[str, Any] | None:
        """The /health JSON, or None when no server answers (or it answers garbage)."""
        reply = self._request("GET", "/health")
        if reply is None:
            return None
        status, data = reply
        if not isinstance(data, dict):
            self.last_error = f"/health answered HTTP {status} without a JSON object"
            return None
        return data

    def reload(self) -> dict[str, Any] | None:
        """POST /admin/reload; the new health JSON, or None when refused or unreachable."""
        reply = self._request("POST", "/admin/reload", body={})
        if reply is None:
            return None
        status, data = reply
        if status != 200 or not isinstance(data, dict):
            self.last_error = f"/admin/reload answered HTTP {status}"
            log.warning("%s (is server.api_key the server's token?)", self.last_error)
            return None
        return data

    def chat(self, prompt: str, model: str, max_tokens: int) -> bool:
        """Send one probe chat completion; True on HTTP 200."""
        body = {"model": model, "messages": [{"role": "user", "content": prompt}],
                "max_tokens": max_tokens, "temperature": 0, "store": False}  # counted in the window, not recorded
        reply = self._request("POST", "/v1/chat/completions", body=body, timeout=max(self.timeout, 60.0))
        return reply is not None and reply[0] == 200


def confirm_adapter(client: ServerClient, version: str | None, timeout: float,
                    sleep: Callable[[float], None] = time.sleep) -> tuple[bool, bool, dict[str, Any] | None]:
    """Ask the server to reload and wait until /health reports ``version``.

    Returns (reachable, confirmed, last health JSON).
    """
    health = client.reload() or client.health()
    if health is None:
        return False, False, None
    deadline = time.monotonic() + timeout
    while True:
        if health is not None and health.get("adapter") == version:
            return True, True, health
        if time.monotonic() >= deadline:
            return True, False, health
        sleep(0.25)
        health = client.health() or health


@dataclass
class Thresholds:
    """When the window calls for a rollback; 0 turns an absolute limit or the latency ratio off."""

    min_requests: int = 5
    min_success_rate: float = 0.0
    max_p95_latency_ms: float = 0.0
    max_success_drop: float = 0.15
    max_latency_ratio: float = 3.0


@dataclass
class Baseline:
    """The server's figures just before the swap; ``skipped`` says why the relative checks cannot run."""

    requests: int = 0
    success_rate: float | None = None
    p95_latency_ms: float | None = None
    adapter: str | None = None
    probes_sent: int = 0
    probe_failures: int = 0
    skipped: str | None = None


@dataclass
class WatchResult:
    decision: str  # "keep" | "rollback"
    reason: str
    requests: int = 0  # answered by the candidate
    success_rate: float | None = None
    p95_latency_ms: float | None = None
    served: int = 0  # all requests since the swap
    probes_sent: int = 0
    probe_failures: int = 0
    samples: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def served_figures(window: dict[str, Any]) -> dict[str, Any]:
    """A window's figures over every request (a server older than ``served`` counted every request)."""
    served = window.get("served")
    return served if isinstance(served, dict) else window


class Prober:
    """Sends the probe prompts in turn, counting what it sent and what failed."""

    def __init__(self, client: ServerClient, probes: list[str] | None, model: str, max_tokens: int) -> None:
        self.client, self.probes, self.model, self.max_tokens = client, probes or [], model, max_tokens
        self.sent = self.failures = 0

    def send(self, count: int) -> None:
        for _ in range(count if self.probes else 0):
            ok = self.client.chat(self.probes[self.sent % len(self.probes)], self.model, self.max_tokens)
            self.sent += 1
            self.failures += 0 if ok else 1


def measure_baseline(client: ServerClient, min_requests: int, probes: list[str] | None = None,
                     probe_model: str = "", probe_max_tokens: int = 16) -> Baseline:
    """The served figures of the server's current window, topped up with probes below ``min_requests``."""
    health = client.health()
    if health is None:
        return Baseline(skipped=f"no server answered /health before the swap ({client.last_error})")
    figures = served_figures(health.get("window") or {})
    prober = Prober(client, probes, probe_model, probe_max_tokens)
    if int(figures.get("requests") or 0) < min_requests and probes:
        prober.send(min_requests - int(figures.get("requests") or 0))
        health = client.health() or health
        figures = served_figures(health.get("window") or {})
    baseline = Baseline(int(figures.get("requests") or 0), figures.get("success_rate"),
                        figures.get("p95_latency_ms"), health.get("adapter"), prober.sent, prober.failures)
    if baseline.requests < min_requests or baseline.success_rate is None or baseline.p95_latency_ms is None:
        baseline.skipped = (f"only {baseline.requests} request(s) served before the swap (need {min_requests}"
                            f"{'' if probes else '; set a probe file to measure them'}); only absolute limits "
                            "apply")
    return baseline


def judge(window: dict[str, Any], limits: Thresholds, baseline: Baseline | None = None) -> str | None:
    """Why the window calls for a rollback, or None; it judges only the requests the adapter answered."""
    requests = int(window.get("requests") or 0)
    if requests < limits.min_requests:
        return None
    over = f"over {requests} adapter-answered requests"
    rate, p95 = window.get("success_rate"), window.get("p95_latency_ms")
    if rate is not None and limits.min_success_rate and float(rate) < limits.min_success_rate:
        return f"success rate {float(rate):.2f} < {limits.min_success_rate} {over}"
    if p95 is not None and limits.max_p95_latency_ms and float(p95) > limits.max_p95_latency_ms:
        return f"p95 latency {float(p95):.0f} ms > {limits.max_p95_latency_ms:.0f} ms {over}"
    if baseline is None or baseline.skipped:
        return None
    if rate is not None and float(rate) < float(baseline.success_rate) - limits.max_success_drop:
        return (f"success rate {float(rate):.2f} fell more than {limits.max_success_drop} below the pre-swap "
                f"{float(baseline.success_rate):.2f} {over}")
    ceiling = limits.max_latency_ratio * float(baseline.p95_latency_ms) + LATENCY_FLOOR_MS
    if p95 is not None and limits.max_latency_ratio and float(p95) > ceiling:
        return (f"p95 latency {float(p95):.0f} ms > {ceiling:.0f} ms ({limits.max_latency_ratio}x the pre-swap "
                f"{float(baseline.p95_latency_ms):.0f} ms + {LATENCY_FLOOR_MS:.0f}) {over}")
    return None


def lost_replicas(health: dict[str, Any]) -> str | None:
    """Why the window fails when the server's engine lost replicas: vLLM replicas down or without the live
    adapter (``/health`` "engine"); None when all serve it (or the engine is in process)."""
    replicas = (health.get("engine") or {}).get("replicas") or []
    lost = [r.get("url") for r in replicas if not (r.get("up") and r.get("live_loaded"))]
    if lost:
        return f"{len(lost)} of {len(replicas)} vLLM replica(s) down or without the adapter: {', '.join(map(str, lost))}"
    return None


def watch(
    client: ServerClient,
    version: str | None,
    window_seconds: float,
    sample_seconds: float,
    limits: Thresholds,
    probes: list[str] | None = None,
    probe_model: str = "",
    probe_max_tokens: int = 16,
    down_after: int = 2,
    sleep: Callable[[float], None] = time.sleep,
    baseline: Baseline | None = None,
) -> WatchResult:
    """Sample /health until the window ends or a rollback is called for (``judge`` against ``baseline``).

    While fewer than ``min_requests`` requests were served since the swap, it sends probes to make up the
    difference; whether the adapter or the base model answers them, it stops there."""
    result = WatchResult("keep", "")
    started = time.monotonic()
    misses = 0
    prober = Prober(client, probes, probe_model, probe_max_tokens)
    ended = False  # the window is over: this sample is the last
    while True:
        sent = prober.sent
        health = client.health()
        elapsed = round(time.monotonic() - started, 2)
        if health is None:
            misses += 1
            result.samples.append({"t": elapsed, "reachable": False, "error": client.last_error})
            log.warning("monitor: server did not answer /health (%s), %d in a row", client.last_error, misses)
            if misses >= down_after:
                result.decision, result.reason = "rollback", f"server stopped answering /health ({client.last_error})"
                return result
        else:
            misses = 0
            window = health.get("window") or {}
            result.requests = int(window.get("requests") or 0)
            result.success_rate = window.get("success_rate")
            result.p95_latency_ms = window.get("p95_latency_ms")
            result.served = int(served_figures(window).get("requests") or 0)
            result.samples.append({"t": elapsed, "adapter": health.get("adapter"), **window})
            log.info("monitor t=%.0fs: %s", elapsed, window)
            if health.get("adapter") != version:
                result.decision = "rollback"
                result.reason = f"server serves {health.get('adapter')!r} instead of {version!r}"
                return result
            why = judge(window, limits, baseline) or lost_replicas(health)
            if why:
                result.decision, result.reason = "rollback", why
                return result
            if not ended:
                prober.send(max(0, limits.min_requests - result.served))
                result.probes_sent, result.probe_failures = prober.sent, prober.failures
        remaining = window_seconds - (time.monotonic() - started)
        if ended or (remaining <= 0 and prober.sent == sent):
            break
        ended = remaining <= 0  # probes went out as the window ended: one more sample counts them
        sleep(max(0.0, min(sample_seconds, remaining)))
    if result.requests < limits.min_requests:
        result.reason = (f"only {result.requests} request(s) answered by {version} in the {window_seconds:.0f} s "
                         f"window ({result.served} served in all; need {limits.min_requests} to judge); keeping "
                         "the candidate")
    else:
        result.reason = (f"healthy: {result.requests} requests, success rate {result.success_rate}, "
                         f"p95 {result.p95_latency_ms} ms")
        if baseline is not None and baseline.skipped is None:
            result.reason += (f" (pre-swap: success rate {baseline.success_rate}, p95 "
                              f"{baseline.p95_latency_ms} ms)")
    if baseline is not None and baseline.skipped:
        result.reason += f"; relative checks skipped: {baseline.skipped}"
    return result
