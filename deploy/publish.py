"""Publishing an adapter version to the serving engine's replicas before ``loras/current`` swaps.

With ``[engine] kind = "vllm"`` every replica (``engine.urls``, or the one ``council serve`` started on
``engine.port``) loads the version under its own immutable name (never a reload under an old name: vLLM
#42125 serves stale prefix-cache entries then) and is probed: the adapter must answer, and on a question it
was trained on it must answer differently from the base model (vLLM #18372: a load can return 200 for a
path it never read). Fewer than ``engine.quorum`` good replicas (0 = all) refuses the version, naming each
replica's problem, and unloads it where it loaded. With the in-process engine there is nothing to publish:
the server loads the folder itself::

    result = publish(settings, "v20261130-0200", folder, probe_question)   # {"ok": bool, "replicas": [...]}
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from council.core.config import Settings
from council.core.errors import CouncilError
from council.engine.vllm.client import VllmReplica
from council.routing.prompts import PromptStore, serving_system_prompt
from deploy.registry import AdapterInfo

log = logging.getLogger(__name__)
PROBE_TOKENS = 24


def probe_messages(settings: Settings, info: AdapterInfo) -> list[dict[str, str]] | None:
    """A question the adapter was trained on, asked as the server asks it (its system prompt); None when its
    metadata names none."""
    learned = [item["question"] for item in info.learned if item.get("question")]
    if not learned:
        return None
    system = serving_system_prompt(PromptStore(settings.prompts_dir))
    return [{"role": "system", "content": system}, {"role": "user", "content": learned[0]}]


def replica_urls(settings: Settings) -> list[str]:
    """The vLLM replicas a deploy must reach: engine.urls, else the one `council serve` starts."""
    return list(settings.engine.urls) or [f"http://127.0.0.1:{settings.engine.port}"]


def _publish_one(replica: VllmReplica, version: str, path: str, base: str,
                 messages: list[dict[str, str]] | None) -> dict[str, Any]:
    report: dict[str, Any] = {"url": replica.url, "loaded": False, "ok": False}
    try:
        replica.load_adapter(version, path)
        report["loaded"] = True
        adapter_answer = replica.answer(version, messages or [{"role": "user", "content": "Hello"}], PROBE_TOKENS)
        if messages:
            base_answer = replica.answer(base, messages, PROBE_TOKENS)
            report.update(adapter_answer=adapter_answer[:120], base_answer=base_answer[:120])
            if adapter_answer.strip() == base_answer.strip():
                report["problem"] = ("the adapter answers a question it was trained on exactly as the base model "
                                     "does: the load did nothing")
                return report
        report["ok"] = True
    except CouncilError as exc:
        report["problem"] = exc.message
    return report


def publish(settings: Settings, version: str, folder: Path, probe: list[dict[str, str]] | None) -> dict[str, Any]:
    """Load ``folder`` as ``version`` on every replica and probe it there (``probe``: the messages of a trained
    question; None = only check it answers). Returns {"ok", "replicas": [{"url", "loaded", "ok", "problem"?}],
    "reason"?}; where it is not ok the version is unloaded again."""
    if settings.engine.kind != "vllm":
        return {"ok": True, "replicas": []}
    engine = settings.engine
    replicas = [VllmReplica(url) for url in replica_urls(settings)]
    path = os.path.realpath(folder)
    with ThreadPoolExecutor(max_workers=len(replicas)) as pool:
        reports = list(pool.map(lambda r: _publish_one(r, version, path, engine.served_model_name, probe), replicas))
    good = sum(report["ok"] for report in reports)
    needed = engine.quorum or len(replicas)
    result: dict[str, Any] = {"ok": good >= needed, "replicas": reports, "needed": needed}
    if not result["ok"]:
        problems = "; ".join(f"{r['url']}: {r.get('problem', 'ok')}" for r in reports)
        result["reason"] = f"{good} of {len(replicas)} vLLM replica(s) serve {version} correctly, {needed} needed ({problems})"
        unpublish(settings, version, [r["url"] for r in reports if r["loaded"]])
    for report in reports:
        log.info("vLLM replica %s: %s", report["url"], "serves " + version if report["ok"] else report.get("problem"))
    return result


def unpublish(settings: Settings, version: str, urls: list[str] | None = None) -> None:
    """Unload a refused ``version`` from the replicas (``urls``; default all); failures are only logged."""
    for url in replica_urls(settings) if urls is None else urls:
        try:
            VllmReplica(url).unload_adapter(version)
        except CouncilError as exc:
            log.warning("could not unload refused %s from %s: %s", version, url, exc.message)
