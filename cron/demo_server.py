"""The demo's moving parts: its questions, a real ``council serve`` child process, and the result table.

Used by ``cron.demo`` (``council demo``); nothing here is specific to one run.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

from council.core import http
from council.core.errors import CouncilError
from council.core.jsonl import json_objects
from council.core.processes import die_with_parent

log = logging.getLogger(__name__)
BUNDLED_QUESTIONS = "demo_data.jsonl"


@dataclass(frozen=True)
class Question:
    """One demo question: the fact the base model cannot know, and how to recognise it in an answer."""

    id: str
    question: str
    correction: str
    accept: tuple[str, ...]
    reworded: str = ""  # the same question in other words, asked only after the night and never corrected

    def is_right(self, answer: str) -> bool:
        """True when ``answer`` contains one of ``accept`` (case-insensitive)."""
        text = answer.lower()
        return any(word.lower() in text for word in self.accept)


def bundled_questions_path() -> Path:
    """``cron/demo_data.jsonl`` as installed with the package."""
    return Path(str(resources.files("cron").joinpath(BUNDLED_QUESTIONS)))


def load_questions(path: Path) -> list[Question]:
    """Parse a questions JSONL file (``id, question, correction, accept``); ValueError says what to fix."""
    questions: list[Question] = []
    for where, data in json_objects(path, ValueError, "give a questions JSONL file"):
        texts = [data.get(k) for k in ("id", "question", "correction")]
        accept = data.get("accept")
        if not all(isinstance(t, str) and t.strip() for t in texts):
            raise ValueError(f"{where}: 'id', 'question' and 'correction' must be non-empty strings")
        if not isinstance(accept, list) or not accept or not all(isinstance(a, str) and a.strip() for a in accept):
            raise ValueError(f"{where}: 'accept' must be a non-empty list of strings (words a right answer has)")
        reworded = data.get("reworded", "")
        if not isinstance(reworded, str):
            raise ValueError(f"{where}: 'reworded' must be a string (the question in other words) or left out")
        question = Question(texts[0], texts[1], texts[2], tuple(accept), reworded.strip())
        if not question.is_right(question.correction):
            raise ValueError(f"{where}: the correction contains none of 'accept' {accept}; fix one of them")
        questions.append(question)
    if not questions:
        raise ValueError(f"{path} holds no questions")
    return questions


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DemoServer:
    """``python -m council.cli serve`` as a child process on 127.0.0.1; a context manager that always stops it."""

    def __init__(self, home: Path, config_file: Path, port: int, start_seconds: float) -> None:
        self.home, self.config_file, self.port = home, config_file, port
        self.start_seconds = start_seconds
        self.url = f"http://127.0.0.1:{port}"
        self.log_file = home / "logs" / "demo_server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> DemoServer:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        # The child reads only the demo's council.toml: COUNCIL_* variables of this shell (another home,
        # a webhook, an API key) must not leak into the demo.
        env = {k: v for k, v in os.environ.items() if not k.startswith("COUNCIL")}
        env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        root = str(Path(__file__).resolve().parent.parent)  # so a source checkout runs without `pip install`
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        command = [sys.executable, "-m", "council.cli", "--home", str(self.home), "--config", str(self.config_file),
                   "--log-level", "WARNING", "serve", "--port", str(self.port)]
        with open(self.log_file, "ab") as handle:
            self.process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env,
                                            preexec_fn=die_with_parent)  # prctl only: nothing that takes a lock
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.start_seconds
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise CouncilError(f"the demo server exited with {self.process.returncode}: {self.log_tail()}")
            try:
                if self.health().get("status") in ("ok", "degraded"):
                    return
            except CouncilError:
                pass
            time.sleep(0.5)
        raise CouncilError(f"the demo server did not answer /health within {self.start_seconds:.0f} s; "
                           f"see {self.log_file}")

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            log.warning("the demo server (pid %d) ignored SIGTERM; killing it", process.pid)
            process.kill()
            process.wait(timeout=10)

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 10.0) -> Any:
        """The JSON reply of a 2xx answer; CouncilError for any other status, no answer, or a non-JSON body."""
        try:
            reply = http.request(method, self.url + path, body, headers={"Content-Type": "application/json"},
                                 timeout=timeout)
        except http.RequestFailed as exc:
            raise CouncilError(f"{method} {path} failed: {exc}") from exc
        if not reply.ok:
            raise CouncilError(f"{method} {path} answered HTTP {reply.status}: {reply.content[:300]!r}")
        try:
            return reply.json()
        except json.JSONDecodeError as exc:
            raise CouncilError(f"{method} {path} failed: {exc}") from exc

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/health")

    def ask(self, question: str, max_tokens: int, user: str | None = None, store: bool = True) -> dict[str, Any]:
        """One greedy chat completion through the full route, as ``user`` (None: anonymous); ``store=False``
        asks without recording (a measurement the loop must not learn from). Returns text, confidence,
        record_id, adapter."""
        body: dict[str, Any] = {"model": "council", "messages": [{"role": "user", "content": question}],
                                "max_tokens": max_tokens, "temperature": 0}
        if user is not None:
            body["user"] = user
        if not store:
            body["store"] = False
        reply = self._call("POST", "/v1/chat/completions", body, timeout=600.0)
        council = reply.get("council") or {}
        return {"text": reply["choices"][0]["message"]["content"] or "", "confidence": council.get("confidence"),
                "record_id": council.get("record_id"), "adapter": council.get("adapter")}

    def correct(self, record_id: str, correction: str) -> dict[str, Any]:
        return self._call("POST", "/v1/feedback", {"record_id": record_id, "thumbs": "down",
                                                   "correction": correction})

    def record_ids(self, user: str) -> list[str]:
        """Every record of ``user``, paged through ``GET /v1/records``."""
        ids: list[str] = []
        after = ""
        while True:
            page = self._call("GET", f"/v1/records?user={quote(user)}&limit=100" + (f"&after={after}" if after else ""))
            ids += [r["id"] for r in page["data"]]
            if not page.get("has_more") or not page["data"]:
                return ids
            after = page["last_id"]

    def erase(self, record_id: str) -> None:
        """``DELETE /v1/records/{id}``: the record out of memory, files, and the live adapter's scope."""
        self._call("DELETE", f"/v1/records/{record_id}", timeout=120.0)
