"""One small synchronous JSON-over-HTTP call, built on ``httpx``, for Council's own outgoing requests.

Used by ``deploy.monitor.ServerClient`` (a running server's /health, /admin/reload, probe chats),
``cron.demo_server.DemoServer`` (the demo's child server) and ``deploy.alerts.Alerter`` (Slack/Discord
webhooks)::

    try:
        reply = request("POST", url, {"text": "hi"}, headers={"User-Agent": "council-alerts/1"}, timeout=5.0)
    except RequestFailed as exc:   # no HTTP reply at all: refused, timed out, malformed URL, ...
        ...
    if reply.ok:
        data = reply.json()

Every HTTP status comes back as a ``Reply``; the caller decides what a 4xx or 5xx means (and whether to
retry: nothing here retries). Each call opens its own connection (no pooling), follows redirects, and
verifies TLS against the system's certificate store, as ``urllib.request`` does. A ``RequestFailed`` message
does not carry the URL (httpx names at most the offending part of a malformed one); a caller holding a secret
URL (a webhook) still redacts what it logs.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import httpx


class RequestFailed(Exception):
    """No HTTP reply: connection refused or reset, timeout, bad URL, broken protocol, unencodable header.

    ``str()`` is ``"<error type>: <its message>"`` (no URL, at most the offending part of a malformed one);
    ``__cause__`` is the httpx (or encoding) error.
    """


@dataclass(frozen=True)
class Reply:
    """One HTTP response, read in full: ``status`` code, raw ``content`` bytes, case-insensitive ``headers``."""

    status: int
    content: bytes
    headers: Mapping[str, str]

    @property
    def ok(self) -> bool:
        """True for a 2xx status."""
        return 200 <= self.status < 300

    def json(self) -> Any:
        """The body parsed as JSON; json.JSONDecodeError (or UnicodeDecodeError) when it is not JSON."""
        return json.loads(self.content)


@cache
def _tls_context() -> ssl.SSLContext:
    """The system trust store (what urllib used), built once: a context per call costs ~20 ms."""
    return ssl.create_default_context()


def request(method: str, url: str, body: Any = None, *, headers: Mapping[str, str] | None = None,
            timeout: float) -> Reply:
    """Send ``method url`` and read the whole reply, whatever its status.

    ``body``: a JSON-serialisable value sent as ``json.dumps(body)`` in UTF-8 with ``Content-Type:
    application/json`` (unless ``headers`` sets one); None sends no body. ``headers`` are sent as given.
    ``timeout``: seconds allowed for each of connecting, sending and each read of the reply (like urllib's
    socket timeout, not a limit on the whole exchange). Raises RequestFailed when no HTTP reply came, and
    TypeError/ValueError from ``json.dumps`` for a body that is not JSON-serialisable.
    """
    sent = dict(headers or {})
    content = None
    if body is not None:
        content = json.dumps(body).encode("utf-8")
        if not any(name.lower() == "content-type" for name in sent):
            sent["Content-Type"] = "application/json"
    try:
        with httpx.Client(verify=_tls_context(), follow_redirects=True, timeout=timeout) as client:
            response = client.request(method, url, content=content, headers=sent)
    except (httpx.HTTPError, httpx.InvalidURL, UnicodeEncodeError) as exc:
        # httpx.InvalidURL is not an httpx.HTTPError; UnicodeEncodeError: a header value that is not ASCII.
        detail = str(exc)
        raise RequestFailed(f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__) from exc
    return Reply(response.status_code, response.content, response.headers)
