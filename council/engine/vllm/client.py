"""Talking to one vLLM replica: its models, runtime LoRA loading, one greedy answer. Blocking calls (run them
in a thread from an event loop)::

    replica = VllmReplica("http://127.0.0.1:8100")
    replica.models()                              # {"smollm2": None, "v20261130-0200": "smollm2"}: name -> parent
    replica.load_adapter("v20261130-0200", "/srv/council/loras/v20261130-0200")   # AdapterError: vLLM's reason
    replica.answer("v20261130-0200", [{"role": "user", "content": "Hi"}], max_tokens=16)

vLLM's pitfalls, handled by callers (vLLM issue tracker: #42125 stale prefix cache after a same-name reload,
#18372 a load that returns 200 for a path it never read, per-process load state): every adapter version is
loaded under its own immutable name, answered once after loading, and loaded again on a replica that lost it.
Needs ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`` on the replica (else the load routes answer 404).
"""

from __future__ import annotations

import json

from council.core.errors import AdapterError, ModelUnavailableError
from council.core.http import RequestFailed, request


class VllmReplica:
    """One vLLM OpenAI-compatible server at ``url`` (``http://host:port``, no ``/v1``)."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: object = None, timeout: float | None = None) -> tuple[int, str]:
        try:
            reply = request(method, f"{self.url}{path}", body, timeout=timeout or self.timeout)
        except RequestFailed as exc:
            raise ModelUnavailableError(f"vLLM replica {self.url} does not answer ({exc})") from exc
        return reply.status, reply.content.decode("utf-8", "replace")

    def models(self) -> dict[str, str | None]:
        """Every model the replica serves: name -> parent (None for the base model, its name for an adapter).
        Raises ModelUnavailableError when the replica does not answer or answers with an error."""
        status, text = self._call("GET", "/v1/models", timeout=5.0)
        if status != 200:
            raise ModelUnavailableError(f"vLLM replica {self.url} answered GET /v1/models with HTTP {status}")
        return {card["id"]: card.get("parent") for card in json.loads(text).get("data", [])}

    def load_adapter(self, name: str, path: str) -> None:
        """Load the PEFT folder ``path`` as model ``name``; AdapterError with vLLM's reason when it refuses
        (rank above --max-lora-rank, another base model, modules it cannot serve, runtime loading off)."""
        status, text = self._call("POST", "/v1/load_lora_adapter", {"lora_name": name, "lora_path": path},
                                  timeout=max(self.timeout, 120.0))
        if status == 404:
            raise AdapterError(f"vLLM replica {self.url} has no runtime LoRA loading: start it with --enable-lora "
                               "and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True")
        if status != 200 and "already been loaded" not in text:
            raise AdapterError(f"vLLM replica {self.url} refused adapter {name}: {_reason(text)}")

    def unload_adapter(self, name: str) -> None:
        """Unload model ``name``; an adapter the replica does not hold is no error."""
        status, text = self._call("POST", "/v1/unload_lora_adapter", {"lora_name": name})
        if status not in (200, 404) and "not found" not in text.lower():
            raise AdapterError(f"vLLM replica {self.url} could not unload {name}: {_reason(text)}")

    def answer(self, model: str, messages: list[dict[str, str]], max_tokens: int = 32) -> str:
        """The greedy answer of ``model`` (base name or adapter version). Raises ModelUnavailableError."""
        body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0.0}
        status, text = self._call("POST", "/v1/chat/completions", body, timeout=max(self.timeout, 120.0))
        if status != 200:
            raise ModelUnavailableError(f"vLLM replica {self.url} could not answer with {model}: {_reason(text)}")
        return json.loads(text)["choices"][0]["message"]["content"] or ""


def _reason(text: str) -> str:
    """vLLM's error message out of its JSON error body (or the body's start)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return text.strip()[:300]
    error = data.get("error", data) if isinstance(data, dict) else data
    message = error.get("message") if isinstance(error, dict) else None
    return str(message or data)[:300]
