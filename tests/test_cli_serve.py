"""``council serve`` as a newcomer runs it: a busy port or a missing model is one line and exit 2 before any
model loads; the port answers at once (``/livez``; ``/health`` says "starting"); one "ready on URL" line
when it can answer; a quiet console with one access-log line per request."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from bench.common import REPO, free_port

pytestmark = pytest.mark.slow


def _council(home: Path, *args: str, **popen) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), COUNCIL_HOME=str(home))
    return subprocess.Popen([sys.executable, "-m", "council.cli", *args], env=env, cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_busy_port_is_one_line_and_exit_2_before_any_model_loads(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.perf_counter()
        proc = _council(tmp_path / "home", "serve", "--port", str(port))
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert time.perf_counter() - started < 5.0  # no model was loaded
    assert err.strip().count("\n") == 0 and f"cannot listen on 127.0.0.1:{port}" in err


def test_missing_model_folder_is_one_line_and_exit_2(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "council.toml").write_text('[model]\nsource = "/no/such/model"\n')
    proc = _council(home, "serve", "--port", str(free_port()))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and err.strip().count("\n") == 0 and "/no/such/model" in err


def test_vllm_engine_without_vllm_installed_is_one_line_naming_the_setting(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "council.toml").write_text('[engine]\nvllm_python = "/no/such/venv/bin/python"\n')
    proc = _council(home, "serve", "--engine", "vllm", "--port", str(free_port()))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert "engine.vllm_python" in err and "council.engine.vllm.install" in err


def test_serve_answers_at_once_says_ready_once_and_keeps_a_quiet_console(tmp_path, base_model_dir):
    home, port = tmp_path / "home", free_port()
    home.mkdir()
    (home / "council.toml").write_text(f'[model]\nsource = "{base_model_dir}"\n[council]\nheads = {{}}\n')
    proc = _council(home, "serve", "--port", str(port))
    url = f"http://127.0.0.1:{port}"
    try:
        states = []
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                live, _ = _get(f"{url}/livez")
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.05)
                continue
            assert live == 200
            status, health = _get(f"{url}/health")
            ready, _ = _get(f"{url}/readyz")
            states.append((status, health["status"], ready))
            if health["status"] == "ok":
                break
            assert (status, health["status"], ready) == (503, "starting", 503)
            time.sleep(0.05)
        assert states and states[-1] == (200, "ok", 200)
        body = json.dumps({"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4}).encode()
        request = urllib.request.Request(f"{url}/v1/chat/completions", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as resp:
            record_id = resp.headers["x-council-record-id"]
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=60)
    lines = err.splitlines()
    ready_lines = [line for line in lines if f"ready on {url}" in line]
    assert len(ready_lines) == 1
    assert any("POST /v1/chat/completions 200" in line and record_id in line for line in lines)
    for noise in ("Warning", "Traceback", "Loading weights", "AVX2", "it/s]"):
        assert not any(noise in line for line in lines), (noise, err[-2000:])
