"""`council nightly`: the whole loop on real stores, a real trainer and real deploy checks; the lock; alerts."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from council import exitcodes
from council.embedder import Embedder
from cron.nightly import BUSY, NightlyConfig, cli, main, nightly_lock
from tests.test_harvest_pipeline import DAY, add, council_answers, failure

CLOSED_PORT_URL = "http://127.0.0.1:9"  # discard port: nothing answers, deploy runs unmonitored


@pytest.fixture
def webhook():
    """A real local HTTP server standing in for Slack; collects the JSON bodies it receives."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/services/T000/B000/XXXX", received
    server.shutdown()


def texts(received: list[dict]) -> str:
    return json.dumps(received)


def test_nothing_to_harvest_is_a_normal_night(make_settings, webhook):
    url, received = webhook
    settings = make_settings(**{"alerts.webhook_url": url})
    code = main(NightlyConfig(settings=settings, server_url=CLOSED_PORT_URL))
    assert code == exitcodes.OK
    summary = json.loads((settings.paths.logs / "nightly_summary.json").read_text())
    assert summary["result"] == "nothing_to_do" and summary["stages"] == {"harvest": exitcodes.NOTHING_TO_DO}
    assert any("Nightly loop: nothing_to_do" in texts([r]) for r in received)
    assert list(settings.paths.logs.glob("nightly-*/harvest.log"))


def test_second_run_is_refused_while_the_lock_is_held(make_settings, capsys):
    settings = make_settings()
    with nightly_lock(settings.home) as held:
        assert held
        assert cli([], settings) == BUSY
    assert "another nightly run is in progress" in capsys.readouterr().err
    with nightly_lock(settings.home) as held_again:
        assert held_again


def test_preflight_failure_alerts_and_exits_1(make_settings, webhook):
    url, received = webhook
    settings = make_settings(**{"alerts.webhook_url": url})
    code = main(NightlyConfig(settings=settings, server_url=CLOSED_PORT_URL, min_free_gb=1e9))
    assert code == exitcodes.FAILURE
    assert "pipeline_error" in texts(received) or "Nightly loop failed" in texts(received)
    assert url not in (settings.paths.logs / "nightly_summary.json").read_text()


@pytest.mark.slow
def test_full_night_harvests_trains_and_deploys(make_settings, base_model_dir, webhook):
    url, received = webhook
    settings = make_settings(**{"model.source": str(base_model_dir), "alerts.webhook_url": url})
    queries = ["What is the capital of France?", "What is the capital of Spain?", "What is 2+2?",
               "How do I reverse a list in Python?", "What is the capital of Italy?", "What is the capital of Peru?"]
    add(settings, Embedder(), *(failure(q, hours=i + 1, thumbs="down") for i, q in enumerate(queries)))
    council_answers()
    config = NightlyConfig(settings=settings, server_url=CLOSED_PORT_URL, since=DAY.isoformat(),
                           until=(DAY + timedelta(days=1)).isoformat(), harvest_models="scripted/m1,scripted/m2",
                           fresh=True, epochs=1, min_examples=5)
    assert main(config) == exitcodes.OK
    summary = json.loads((settings.paths.logs / "nightly_summary.json").read_text())
    assert summary["result"] == "improved", summary
    assert summary["stages"] == {"harvest": 0, "train": 0, "deploy": 0}
    current = settings.paths.current_adapter.resolve()
    assert (current / "adapter_model.safetensors").is_file()
    metrics = json.loads((settings.paths.logs / "loop_metrics.json").read_text())
    assert metrics["training_completed_total"] == 1 and metrics["deployment_success_total"] == 1
    assert metrics["training_loss"] > 0 and 0 < metrics["agent0_rewrite_success_rate"] <= 1
    sent = texts(received)
    for event in ("training_done", "deploy_success", "Nightly loop: improved"):
        assert event in sent or event.replace("_", " ") in sent.lower(), event
