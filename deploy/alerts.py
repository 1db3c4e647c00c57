"""Pipeline alerts to a Slack- or Discord-compatible incoming webhook, or to the log only.

``Alerter(settings.alerts).send(event, title, fields) -> bool``. The URL comes from
``settings.alerts.webhook_url`` (``COUNCIL_WEBHOOK_URL`` sets it; read here too as a fallback). A URL on
discord.com / discordapp.com, or any URL whose path starts with ``/api/webhooks/``, gets Discord's
``{"content", "embeds"}``; every other URL gets Slack's ``{"text", "blocks"}``.

Each alert is tried up to ``retries`` times with exponential backoff and a per-attempt timeout, all within
a time budget (``budget_seconds``; by default ``retries x timeout_seconds``, the time the attempts alone may
take). HTTP 429 and 5xx are retried, other 4xx are not. A ``Retry-After`` header (RFC 9110 §10.2.3: delta
seconds or an HTTP-date, ``retry_after_seconds``) sets the wait before the next attempt; when it asks for
more than the budget has left, the alert gives up at once rather than retry early. A webhook that fails never
fails the caller: ``send`` logs a warning and returns False. The URL is a secret: it never appears in a log
line or an exception message (``redact``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

from council.core import http
from council.core.config import AlertSettings

log = logging.getLogger(__name__)

TRAINING_DONE = "training_done"
DEPLOY_SUCCESS = "deploy_success"
DEPLOY_FAILURE = "deploy_failure"
ROLLBACK = "rollback"
PIPELINE_ERROR = "pipeline_error"
EVENTS = (TRAINING_DONE, DEPLOY_SUCCESS, DEPLOY_FAILURE, ROLLBACK, PIPELINE_ERROR)

_STYLE = {  # event -> (emoji, Discord colour)
    TRAINING_DONE: (":brain:", 0x3498DB),
    DEPLOY_SUCCESS: (":white_check_mark:", 0x2ECC71),
    DEPLOY_FAILURE: (":x:", 0xE74C3C),
    ROLLBACK: (":rewind:", 0xE67E22),
    PIPELINE_ERROR: (":rotating_light:", 0xE74C3C),
}
_DISCORD_HOSTS = ("discord.com", "discordapp.com")
_HEADERS = {"Content-Type": "application/json", "User-Agent": "council-alerts/1"}


def redact(text: str, url: str) -> str:
    """``text`` with the webhook URL (and its secret path and query) replaced by ``<webhook>``."""
    if not url:
        return text
    parts = urlsplit(url)
    secrets = [url, url.split("://", 1)[-1]]
    if len(parts.path) > 1:
        secrets.append(parts.path)
    if parts.query:
        secrets.append(parts.query)
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "<webhook>")
    return text


def is_discord(url: str) -> bool:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    on_discord = any(host == h or host.endswith("." + h) for h in _DISCORD_HOSTS)
    return on_discord or parts.path.startswith("/api/webhooks/")


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None:
        return "-"
    return str(value)


def slack_payload(event: str, title: str, fields: dict[str, Any]) -> dict[str, Any]:
    emoji = _STYLE.get(event, (":bell:", 0))[0]
    items = [{"type": "mrkdwn", "text": f"*{k}*\n{_text(v)}"[:2000]} for k, v in fields.items()]
    blocks: list[dict[str, Any]] = [{"type": "header", "text": {"type": "plain_text", "text": title[:150]}}]
    for start in range(0, len(items), 10):  # Slack allows 10 fields per section
        blocks.append({"type": "section", "fields": items[start:start + 10]})
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"council · {event} · {stamp}"}]})
    return {"text": f"{emoji} {title}", "blocks": blocks}


def discord_payload(event: str, title: str, fields: dict[str, Any]) -> dict[str, Any]:
    colour = _STYLE.get(event, ("", 0x95A5A6))[1]
    embed = {
        "title": title[:256],
        "color": colour,
        "fields": [
            {"name": str(k)[:256], "value": _text(v)[:1024] or "-", "inline": len(_text(v)) < 40}
            for k, v in list(fields.items())[:25]
        ],
        "footer": {"text": f"council · {event}"},
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return {"content": title[:2000], "embeds": [embed]}


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delta-seconds or HTTP-date); None when absent or invalid.

    A date in the past means no wait (0.0). Delta-seconds may carry a fraction, which some servers send."""
    text = (value or "").strip()
    if not text:
        return None
    if text.replace(".", "", 1).isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" in the date: UTC with no offset information
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class Alerter:
    """Sends pipeline events; never raises for webhook trouble."""

    def __init__(
        self,
        settings: AlertSettings,
        backoff_seconds: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        budget_seconds: float | None = None,
    ) -> None:
        self.url = settings.webhook_url or os.environ.get("COUNCIL_WEBHOOK_URL", "")
        self.timeout = settings.timeout_seconds
        self.retries = max(1, settings.retries)
        self.backoff = backoff_seconds
        self.sleep = sleep
        if budget_seconds is not None and not budget_seconds > 0:
            raise ValueError(f"budget_seconds must be > 0 (the most time one alert may take, retries included), "
                             f"got {budget_seconds}; pass None to use timeout_seconds x retries")
        self.budget = self.timeout * self.retries if budget_seconds is None else budget_seconds
        self.last_attempts = 0

    def payload(self, event: str, title: str, fields: dict[str, Any]) -> dict[str, Any]:
        if is_discord(self.url):
            return discord_payload(event, title, fields)
        return slack_payload(event, title, fields)

    def send(self, event: str, title: str, fields: dict[str, Any] | None = None) -> bool:
        """Log the alert and post it to the webhook; True when delivered (or when only logging)."""
        fields = dict(fields or {})
        level = logging.WARNING if event in (DEPLOY_FAILURE, ROLLBACK, PIPELINE_ERROR) else logging.INFO
        summary = ", ".join(f"{k}={_text(v)}" for k, v in fields.items())
        log.log(level, "alert [%s] %s%s", event, redact(title, self.url), f" ({redact(summary, self.url)})"
                if summary else "")
        self.last_attempts = 0
        if not self.url:
            return True
        body = self.payload(event, title, fields)
        deadline = time.monotonic() + self.budget
        error = ""
        for attempt in range(self.retries):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                hint = "" if self.budget > 0 else " (set alerts.timeout_seconds > 0)"
                error = f"{error + '; ' if error else ''}the {self.budget:g} s alert budget is spent{hint}"
                break
            self.last_attempts = attempt + 1
            retry_after = None
            try:
                reply = http.request("POST", self.url, body, headers=_HEADERS, timeout=min(self.timeout, remaining))
            except http.RequestFailed as exc:
                error = str(exc)
            else:
                if reply.ok:
                    return True
                error = f"HTTP {reply.status}"
                if reply.status != 429 and reply.status < 500:
                    break  # a client error will not go away by retrying
                retry_after = retry_after_seconds(reply.headers.get("Retry-After"))
            if attempt + 1 == self.retries:
                break
            delay = max(self.backoff * (2 ** attempt), retry_after or 0.0)
            remaining = deadline - time.monotonic()
            if delay >= remaining:
                rate_limited = retry_after is not None and retry_after >= delay
                asked = f"Retry-After {delay:.0f} s" if rate_limited else f"backoff {delay:.1f} s"
                log.warning("webhook alert [%s] not delivered: %s (%s) is beyond the %.1f s left of its %g s "
                            "budget; giving up after %d attempt(s) instead of retrying early",
                            event, asked, redact(error, self.url), max(remaining, 0.0), self.budget,
                            self.last_attempts)
                return False
            self.sleep(delay)
        log.warning("webhook alert [%s] not delivered after %d attempt(s): %s",
                    event, self.last_attempts, redact(error, self.url))
        return False
