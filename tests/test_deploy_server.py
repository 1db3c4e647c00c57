"""End to end: a real ``council serve`` subprocess on a free port, deploys confirmed through its /health,
a rollback through the ``council`` command, and a server killed during the monitoring window."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from council.core.exitcodes import FAILURE, OK
from deploy.main import DeployConfig, cli, main
from deploy.registry import Registry
from tests.conftest import REPO
from tests.test_alerts import SLACK_PATH, receiver  # noqa: F401 - fixture
from tests.test_deploy import V1, V2, adapter_bank, install, one_case_canary  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_health(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as response:
            return json.loads(response.read())
    except OSError:
        return None


def wait_for(predicate, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def server_home(council_home: Path, base_model_dir: Path) -> Path:
    council_home.mkdir(parents=True, exist_ok=True)
    (council_home / "council.toml").write_text(
        f'[server]\napi_key = "deploy-test-token"\n'
        f'[model]\nsource = "{base_model_dir}"\ntorch_threads = 1\nmax_new_tokens = 8\n'
        "[council]\nheads = {}\nthreshold = 0.0\n"
    )
    return council_home


@pytest.fixture
def council_server(server_home: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port()
    log = (server_home / "server.log").open("w")
    env = {**os.environ, "PYTHONPATH": str(REPO), "COUNCIL_HOME": str(server_home)}
    proc = subprocess.Popen([sys.executable, "-m", "council.cli", "--home", str(server_home), "serve",
                             "--port", str(port)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: proc.poll() is not None or get_health(url), 240, "council serve to answer /health")
        assert proc.poll() is None, (server_home / "server.log").read_text()[-3000:]
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def test_deploy_rollback_and_server_death_against_real_server(
    make_settings, server_home, council_server, adapter_bank, one_case_canary, receiver, tmp_path  # noqa: F811
):
    url, proc = council_server
    settings = make_settings(**{"alerts.webhook_url": receiver.url(SLACK_PATH)})
    assert settings.server.api_key == "deploy-test-token"  # the deploy reloads with the server's token
    loras = settings.paths.loras
    install(adapter_bank, loras, "identity", V1)
    install(adapter_bank, loras, "identity", V2)
    assert get_health(url)["adapter"] is None
    probes = tmp_path / "probes.txt"
    probes.write_text("What is the capital of France?\n")

    # 1. deploy V1 through the stage's command-line entry; the server confirms it and probes fill the window
    args = [V1, "--server-url", url, "--canary-file", one_case_canary, "--window-seconds", "2",
            "--sample-seconds", "1", "--min-requests", "2", "--probe-file", str(probes), "--probe-max-tokens", "4",
            "--max-p95-latency-ms", "600000"]
    assert cli(args, settings) == OK, (settings.paths.logs / "deploy_summary.json").read_text()
    summary = json.loads((settings.paths.logs / "deploy_summary.json").read_text())
    assert summary["decision"] == "deployed"
    assert summary["server"]["confirmed"] is True and summary["server"]["adapter"] == V1
    assert summary["monitor"]["probes_sent"] >= 2 and summary["monitor"]["requests"] >= 2
    assert all(s["adapter"] == V1 for s in summary["monitor"]["samples"])
    assert get_health(url)["adapter"] == V1
    assert receiver.posts[-1][1]["text"].endswith(f"Deployed adapter {V1}")

    # 2. `council rollback` (the real command): back to the base model, confirmed by the server
    env = {**os.environ, "PYTHONPATH": str(REPO), "COUNCIL_HOME": str(server_home), "COUNCIL_WEBHOOK_URL": ""}
    done = subprocess.run([sys.executable, "-m", "council.cli", "--home", str(server_home), "rollback",
                           "--server-url", url, "--reason", "operator says so"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == OK, done.stderr[-2000:]
    rollback = json.loads((settings.paths.logs / "rollback_summary.json").read_text())
    assert rollback["server"]["confirmed"] is True and rollback["target"] is None
    assert get_health(url)["adapter"] is None
    state = Registry(loras).load()
    assert state.current is None and state.failed == [V1] and state.reasons[V1] == "operator says so"

    # 3. deploy V2 and kill the server during the window: rollback (to the base model) and an alert
    config = DeployConfig(settings, version=V2, server_url=url, canary_file=one_case_canary, window_seconds=120,
                          sample_seconds=0.5, down_after=2, confirm_seconds=60)
    result: dict[str, int] = {}
    worker = threading.Thread(target=lambda: result.update(code=main(config)))
    worker.start()
    wait_for(lambda: (get_health(url) or {}).get("adapter") == V2, 180, "the server to serve V2")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    worker.join(timeout=120)
    assert result["code"] == FAILURE
    summary = json.loads((settings.paths.logs / "deploy_summary.json").read_text())
    assert summary["decision"] == "rolled_back" and "stopped answering /health" in summary["reason"]
    assert summary["rollback"]["to"] is None and summary["rollback"]["server"]["reachable"] is False
    assert not (loras / "current").is_symlink()
    assert Registry(loras).load().failed == [V1, V2]
    assert receiver.posts[-1][1]["text"].endswith(f"Deploy of {V2} rolled back")
