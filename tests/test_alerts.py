"""Webhook alerts against a real local HTTP receiver: Slack and Discord payloads, retries, rate limits, redaction."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from council.core.config import AlertSettings
from council.core.exitcodes import OK
from deploy.alerts import (
    DEPLOY_FAILURE,
    DEPLOY_SUCCESS,
    ROLLBACK,
    Alerter,
    is_discord,
    redact,
    retry_after_seconds,
)
from deploy.registry import Registry, RegistryState
from deploy.rollback import RollbackConfig
from deploy.rollback import main as rollback_main
from deploy.swap import point_current
from tests.test_deploy_registry import V1, V2, write_adapter

SLACK_PATH = "/services/T000/B000/slacksecret123"
DISCORD_PATH = "/api/webhooks/42/discordsecret456"


@dataclass
class Receiver:
    status: int = 200
    posts: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.posts.append((self.path, json.loads(body)))
            self.send_response(state.status)
            for name, value in state.headers.items():
                self.send_header(name, value)
            reply = b"ok" if state.status == 200 else b""
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def alerter(url: str, retries: int = 3) -> Alerter:
    return Alerter(AlertSettings(webhook_url=url, timeout_seconds=2, retries=retries), backoff_seconds=0.01)


def test_slack_payload(receiver):
    assert alerter(receiver.url(SLACK_PATH)).send(DEPLOY_SUCCESS, "Deployed adapter v1",
                                                 {"version": "v1", "canary": "7/7", "val loss": 0.123456})
    path, payload = receiver.posts[0]
    assert path == SLACK_PATH
    assert payload["text"].endswith("Deployed adapter v1") and "content" not in payload
    header, section, context = payload["blocks"]
    assert header == {"type": "header", "text": {"type": "plain_text", "text": "Deployed adapter v1"}}
    assert [f["text"] for f in section["fields"]] == ["*version*\nv1", "*canary*\n7/7", "*val loss*\n0.1235"]
    assert "deploy_success" in context["elements"][0]["text"]


def test_discord_payload(receiver):
    fields = {f"field{i}": i for i in range(30)}
    assert alerter(receiver.url(DISCORD_PATH)).send(ROLLBACK, "Deploy of v2 rolled back", fields)
    path, payload = receiver.posts[0]
    assert path == DISCORD_PATH
    assert payload["content"] == "Deploy of v2 rolled back" and "blocks" not in payload
    embed = payload["embeds"][0]
    assert embed["title"] == "Deploy of v2 rolled back" and embed["color"] == 0xE67E22
    assert len(embed["fields"]) == 25  # Discord's limit
    assert embed["fields"][3] == {"name": "field3", "value": "3", "inline": True}
    assert is_discord("https://discord.com/api/webhooks/1/x") and is_discord("https://discordapp.com/api/webhooks/1/x")
    assert not is_discord("https://hooks.slack.com/services/T/B/x")


def test_failing_webhook_retries_and_never_leaks_url(receiver, caplog):
    receiver.status = 500
    url = receiver.url(SLACK_PATH)
    sender = alerter(url, retries=4)
    with caplog.at_level(logging.DEBUG):
        assert sender.send(DEPLOY_FAILURE, "Deploy refused", {"reason": f"bad {url}"}) is False
    assert len(receiver.posts) == 4 and sender.last_attempts == 4
    assert "not delivered after 4 attempt(s): HTTP 500" in caplog.text
    assert url not in caplog.text and "slacksecret123" not in caplog.text


def test_rate_limit_is_retried(receiver):
    receiver.status, receiver.headers = 429, {"Retry-After": "0.01"}
    sender = alerter(receiver.url(SLACK_PATH), retries=2)
    assert sender.send(DEPLOY_SUCCESS, "x", {}) is False and len(receiver.posts) == 2


@dataclass
class Naps:
    """Stands in for time.sleep: records each wait instead of sleeping it."""

    taken: list[float] = field(default_factory=list)

    def __call__(self, seconds: float) -> None:
        self.taken.append(seconds)


def http_date(seconds_from_now: float) -> str:
    return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds_from_now), usegmt=True)


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_server_errors_and_rate_limits_are_retried(receiver, status):
    receiver.status = status
    assert alerter(receiver.url(SLACK_PATH), retries=3).send(DEPLOY_FAILURE, "x", {}) is False
    assert len(receiver.posts) == 3


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 413])
def test_other_client_errors_are_not_retried(receiver, status):
    receiver.status = status
    assert alerter(receiver.url(DISCORD_PATH), retries=3).send(DEPLOY_FAILURE, "x", {}) is False
    assert len(receiver.posts) == 1


def test_retry_after_delta_seconds_sets_the_wait(receiver):
    receiver.status, receiver.headers = 429, {"Retry-After": "7"}
    naps = Naps()
    sender = Alerter(AlertSettings(webhook_url=receiver.url(SLACK_PATH), timeout_seconds=2, retries=2),
                     backoff_seconds=0.01, sleep=naps, budget_seconds=60)
    assert sender.send(DEPLOY_SUCCESS, "x", {}) is False
    assert naps.taken == [7.0] and len(receiver.posts) == 2


def test_retry_after_http_date_sets_the_wait(receiver):
    receiver.status, receiver.headers = 429, {"Retry-After": http_date(120)}
    naps = Naps()
    sender = Alerter(AlertSettings(webhook_url=receiver.url(SLACK_PATH), timeout_seconds=2, retries=2),
                     backoff_seconds=0.01, sleep=naps, budget_seconds=600)
    assert sender.send(DEPLOY_SUCCESS, "x", {}) is False
    assert len(naps.taken) == 1 and 110 < naps.taken[0] <= 120  # the date has whole seconds
    assert len(receiver.posts) == 2


def test_a_short_retry_after_is_slept_for_real(receiver):
    receiver.status, receiver.headers = 503, {"Retry-After": "0.3"}
    started = time.monotonic()
    assert alerter(receiver.url(SLACK_PATH), retries=2).send(DEPLOY_SUCCESS, "x", {}) is False
    assert time.monotonic() - started >= 0.3 and len(receiver.posts) == 2


@pytest.mark.parametrize("header", ["86400", "http-date"])
def test_retry_after_beyond_the_budget_gives_up_at_once(receiver, caplog, header):
    """A day-long Retry-After (either form) ends the alert now: no sleep, no second request, a warning."""
    receiver.status = 429
    receiver.headers = {"Retry-After": http_date(86400) if header == "http-date" else header}
    url = receiver.url(SLACK_PATH)
    sender = alerter(url, retries=3)  # budget: 3 attempts x 2 s
    started = time.monotonic()
    with caplog.at_level(logging.DEBUG):
        assert sender.send(DEPLOY_FAILURE, "Deploy refused", {"reason": "x"}) is False
    assert time.monotonic() - started < 1.5
    assert len(receiver.posts) == 1 and sender.last_attempts == 1
    assert "not delivered: Retry-After 86" in caplog.text and "giving up after 1 attempt(s)" in caplog.text
    assert "HTTP 429" in caplog.text
    assert url not in caplog.text and "slacksecret123" not in caplog.text


def test_budget_parameter_caps_the_waits(receiver):
    receiver.status, receiver.headers = 429, {"Retry-After": "2"}
    naps = Naps()
    sender = Alerter(AlertSettings(webhook_url=receiver.url(SLACK_PATH), timeout_seconds=5, retries=5),
                     backoff_seconds=0.01, sleep=naps, budget_seconds=1.0)
    assert sender.send(DEPLOY_SUCCESS, "x", {}) is False
    assert naps.taken == [] and len(receiver.posts) == 1


def test_budget_must_be_positive(receiver, caplog):
    with pytest.raises(ValueError, match="budget_seconds must be > 0"):
        Alerter(AlertSettings(webhook_url=receiver.url(SLACK_PATH)), budget_seconds=0)
    with pytest.raises(ValueError, match="alerts.timeout_seconds must be > 0"):  # refused when settings load
        AlertSettings(webhook_url=receiver.url(SLACK_PATH), timeout_seconds=0)
    assert not receiver.posts


def test_retry_after_parsing():
    now = datetime(2015, 10, 21, 7, 27, tzinfo=UTC)
    assert retry_after_seconds("120", now) == 120.0
    assert retry_after_seconds(" 0 ", now) == 0.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now) == 60.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 -0000", now) == 60.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:00:00 GMT", now) == 0.0  # already past: no wait
    for bad in (None, "", "-5", "soon", "1e3", "Wed, 99 Foo 2015"):
        assert retry_after_seconds(bad, now) is None, bad


def test_unreachable_or_malformed_url_is_a_warning_only(caplog):
    secret = "http://127.0.0.1:9/services/T/B/unreachablesecret"
    with caplog.at_level(logging.WARNING):
        assert alerter(secret, retries=2).send(DEPLOY_FAILURE, "x", {}) is False
        assert alerter("notaurl-withsecret", retries=1).send(DEPLOY_FAILURE, "x", {}) is False
    assert "unreachablesecret" not in caplog.text and "withsecret" not in caplog.text
    assert caplog.text.count("not delivered") == 2


def test_no_url_logs_only(caplog, monkeypatch):
    monkeypatch.delenv("COUNCIL_WEBHOOK_URL", raising=False)
    with caplog.at_level(logging.INFO):
        assert Alerter(AlertSettings()).send(DEPLOY_SUCCESS, "Deployed adapter v9", {"version": "v9"})
    assert "alert [deploy_success] Deployed adapter v9 (version=v9)" in caplog.text


def test_env_url_is_used(receiver, monkeypatch):
    monkeypatch.setenv("COUNCIL_WEBHOOK_URL", receiver.url(SLACK_PATH))
    assert Alerter(AlertSettings()).send(DEPLOY_SUCCESS, "from env", {})
    assert receiver.posts[0][1]["text"].endswith("from env")


def test_redact():
    url = "https://hooks.slack.com/services/T1/B2/abc?x=1"
    text = f"failed {url} and /services/T1/B2/abc?x=1 and hooks.slack.com/services/T1/B2/abc?x=1"
    assert "abc" not in redact(text, url) and "T1" not in redact(text, url)


def test_pipeline_completes_when_webhook_fails(receiver, make_settings, caplog):
    """A rollback with a webhook that answers 500 every time still rolls back and exits 0."""
    receiver.status = 500
    url = receiver.url(SLACK_PATH)
    settings = make_settings(**{"alerts.webhook_url": url, "alerts.retries": 3, "alerts.timeout_seconds": 2})
    loras = settings.paths.ensure().loras
    write_adapter(loras, V1)
    write_adapter(loras, V2)
    registry = Registry(loras)
    point_current(loras, V2)
    registry.save(RegistryState(current=V2, previous=V1, deployed=[V1, V2]))
    with caplog.at_level(logging.DEBUG):
        code = rollback_main(RollbackConfig(settings, server_url="http://127.0.0.1:9", confirm_seconds=0))
    assert code == OK and registry.load().current == V1
    assert len(receiver.posts) == 3  # all retries used
    assert receiver.posts[0][1]["text"].endswith(f"Rolled back {V2} -> {V1}")
    assert url not in caplog.text and "slacksecret123" not in caplog.text
    assert "webhook alert [rollback] not delivered after 3 attempt(s)" in caplog.text
