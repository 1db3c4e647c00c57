"""Talking to the running server after a swap: confirm the adapter, then watch the health window.

The server's ``GET /health`` reports ``adapter`` and ``window`` = {since, requests, success_rate,
p95_latency_ms}, counted since its last adapter change. ``watch`` samples it every ``sample_seconds``
for ``window_seconds``; once ``min_requests`` requests are seen it rolls back when the success rate or
the p95 latency crosses its threshold. With no traffic it can send probe prompts to
``/v1/chat/completions`` so the window gets data.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

log = logging.getLogger(__name__)

_NETWORK_ERRORS = (urllib.error.URLError, OSError, TimeoutError, ValueError)


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
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout) as response:
                raw = response.read()
                status = response.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        except _NETWORK_ERRORS as exc:
            self.last_error = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
            return None
        try:
            return status, json.loads(raw) if raw else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            return status, None

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
                "max_tokens": max_tokens, "temperature": 0}
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
    min_requests: int = 5
    min_success_rate: float = 0.85
    max_p95_latency_ms: float = 1000.0


@dataclass
class WatchResult:
    decision: str  # "keep" | "rollback"
    reason: str
    requests: int = 0
    success_rate: float | None = None
    p95_latency_ms: float | None = None
    probes_sent: int = 0
    probe_failures: int = 0
    samples: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge(window: dict[str, Any], limits: Thresholds) -> str | None:
    """Why the window calls for a rollback, or None."""
    requests = int(window.get("requests") or 0)
    if requests < limits.min_requests:
        return None
    rate = window.get("success_rate")
    if rate is not None and float(rate) < limits.min_success_rate:
        return f"success rate {float(rate):.2f} < {limits.min_success_rate} over {requests} requests"
    p95 = window.get("p95_latency_ms")
    if p95 is not None and float(p95) > limits.max_p95_latency_ms:
        return f"p95 latency {float(p95):.0f} ms > {limits.max_p95_latency_ms:.0f} ms over {requests} requests"
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
) -> WatchResult:
    """Sample /health until the window ends or a rollback is called for."""
    result = WatchResult("keep", "")
    started = time.monotonic()
    misses = 0
    probe_index = 0
    while True:
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
            result.samples.append({"t": elapsed, "adapter": health.get("adapter"), **window})
            log.info("monitor t=%.0fs: %s", elapsed, window)
            if health.get("adapter") != version:
                result.decision = "rollback"
                result.reason = f"server serves {health.get('adapter')!r} instead of {version!r}"
                return result
            why = judge(window, limits)
            if why:
                result.decision, result.reason = "rollback", why
                return result
            if probes and result.requests < limits.min_requests:
                for _ in range(limits.min_requests - result.requests):
                    ok = client.chat(probes[probe_index % len(probes)], probe_model, probe_max_tokens)
                    probe_index += 1
                    result.probes_sent += 1
                    result.probe_failures += 0 if ok else 1
        remaining = window_seconds - (time.monotonic() - started)
        if remaining <= 0:
            break
        sleep(min(sample_seconds, remaining))
    if result.requests < limits.min_requests:
        result.reason = (f"only {result.requests} request(s) in the {window_seconds:.0f} s window "
                         f"(need {limits.min_requests} to judge); keeping the candidate")
    else:
        result.reason = (f"healthy: {result.requests} requests, success rate {result.success_rate}, "
                         f"p95 {result.p95_latency_ms} ms")
    return result
