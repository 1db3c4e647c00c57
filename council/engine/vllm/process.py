"""One vLLM server as a child process of ``council serve`` (``[engine] kind = "vllm"`` with no ``urls``).

    server = VllmProcess(settings.engine, base_model_path, log_path)
    server.start()
    await server.wait_ready()     # ModelUnavailableError with the log's last lines when it dies or times out
    ...
    server.stop()                 # SIGTERM, then SIGKILL after 20 s

It runs ``<engine.vllm_python> -m vllm.entrypoints.openai.api_server`` (the ``vllm`` console script of the
CPU build fails on its package name) with runtime LoRA loading on, bound to 127.0.0.1:``engine.port``, and the
``guidance`` structured-outputs backend that Council's tool and JSON grammars need (``council.engine.vllm.tools``)
unless ``engine.extra_args`` sets ``--structured-outputs-config`` itself.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

from council.core.engine_settings import EngineSettings
from council.core.errors import ModelUnavailableError
from council.core.processes import die_with_parent
from council.engine.vllm.client import VllmReplica
from council.engine.vllm.tools import GUIDANCE_ARGS

DEFAULT_VENV_PYTHON = Path(".vllm-venv") / "bin" / "python"


def vllm_python(settings: EngineSettings) -> str:
    """The python that runs vLLM; ValueError naming the setting when it is missing."""
    python = Path(settings.vllm_python or DEFAULT_VENV_PYTHON).expanduser()
    if not python.is_file():
        raise ValueError(f"engine.vllm_python {python} does not exist; install vLLM with `python -m "
                         "council.engine.vllm.install` and set engine.vllm_python to the python it prints, or set "
                         "engine.urls to running vLLM servers")
    return str(python.absolute())


class VllmProcess:
    """The child vLLM server; ``url`` is where it answers."""

    def __init__(self, settings: EngineSettings, model_path: str, log_path: Path) -> None:
        self.settings, self.model_path, self.log_path = settings, model_path, log_path
        self.url = f"http://127.0.0.1:{settings.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        s = self.settings
        extra = list(s.extra_args)
        dtype = [] if "--dtype" in extra else ["--dtype", s.dtype]
        backend = [] if any(a.startswith("--structured-outputs-config") for a in extra) else GUIDANCE_ARGS
        return [vllm_python(s), "-m", "vllm.entrypoints.openai.api_server", "--model", self.model_path,
                "--served-model-name", s.served_model_name, "--host", "127.0.0.1", "--port", str(s.port),
                "--enable-lora", "--max-lora-rank", str(s.max_lora_rank), "--max-loras", str(s.max_loras),
                "--max-model-len", "2048", "--gpu-memory-utilization", str(s.memory_fraction), *dtype, *backend,
                *extra]

    def start(self) -> None:
        """Start the server (returns at once). Raises ValueError when engine.vllm_python is missing."""
        command = self.command()
        env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True, preexec_fn=die_with_parent)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def tail(self) -> str:
        """Why it failed: the log's first error line (vLLM's root cause comes before its tracebacks' ends)."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        causes = [line for line in lines if "Error: " in line and "initialization failed" not in line]
        return (causes[0] if causes else "\n".join(lines[-5:])).strip()

    async def wait_ready(self) -> None:
        """Until ``GET /v1/models`` answers; ModelUnavailableError when the process exits or time runs out."""
        replica, deadline = VllmReplica(self.url), time.monotonic() + self.settings.start_timeout_seconds
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise ModelUnavailableError(f"the vLLM server exited while starting (log {self.log_path}):\n"
                                            f"{self.tail()}")
            try:
                await asyncio.to_thread(replica.models)
                return
            except ModelUnavailableError:
                await asyncio.sleep(1.0)
        raise ModelUnavailableError(f"the vLLM server did not answer within engine.start_timeout_seconds="
                                    f"{self.settings.start_timeout_seconds:.0f} (log {self.log_path})")

    def stop(self) -> None:
        """Stop the server and wait for it (SIGTERM, SIGKILL after 20 s)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
