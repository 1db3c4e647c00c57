"""HTTP handlers: models, feedback, records, health, metrics, admin reload (chat: ``council/server/openai/chat.py``)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from council.core.errors import (
    InvalidRequestError,
)
from council.memory.schema import THUMBS
from council.server import keys
from council.server.validation import check_text

log = logging.getLogger(__name__)
def _model_object(model: str, created: int) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": created, "owned_by": "council"}


async def list_models(request: web.Request) -> web.Response:
    service = request.app[keys.SERVICE]
    data = [_model_object(m, service.started) for m in service.models()]
    return web.json_response({"object": "list", "data": data})


async def get_model(request: web.Request) -> web.Response:
    """``GET /v1/models/{id}``; ids may hold slashes (``local/smollm2``)."""
    model = request.match_info["model_id"]
    service = request.app[keys.SERVICE]
    service.check_model(model)
    return web.json_response(_model_object(model, service.started))


def health_body(app: web.Application) -> dict[str, Any]:
    engine = app.get(keys.LOCAL)
    base = engine.base if engine is not None else None
    engine_health = engine.health() if engine is not None else None
    stats = app[keys.STATS]
    adapter = note_adapter(app)  # swapped in before the watcher noted it: the adapter and its window agree
    return {
        "status": "ok",
        "adapter": adapter,
        "adapter_error": engine.adapter_error if engine else None,
        "adapter_changed_at": engine.adapter_changed_at if engine else None,
        "base_model": {"id": base.model_id, "fingerprint": base.fingerprint} if base else None,
        "queue": engine_health.get("queue") if engine_health else None,
        "engine": engine_health,
        "window": stats.window.to_dict(),
        "memory": {"records": app[keys.MEMORY].count()},  # kept in memory: no query on the event loop
        "prompt_errors": app[keys.PROMPTS].errors,
    }


async def health(request: web.Request) -> web.Response:
    """``status``: "starting" (503) while the models load, "failed" (503) if they could not, else "ok" or
    "degraded" (a prompt or adapter was refused; the server still answers)."""
    startup = request.app[keys.STARTUP]
    if not startup.ready:
        return web.json_response({"status": startup.state(), "error": startup.error,
                                  "starting_since": startup.started}, status=503)
    body = health_body(request.app)
    body["status"] = "degraded" if body["prompt_errors"] or body["adapter_error"] else "ok"
    body["ready_seconds"] = startup.ready_seconds
    return web.json_response(body)


async def livez(request: web.Request) -> web.Response:
    """Liveness: the process serves HTTP (Kubernetes ``livenessProbe``)."""
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: 200 once the server can answer chats, 503 before (Kubernetes ``readinessProbe``)."""
    startup = request.app[keys.STARTUP]
    return web.json_response({"status": startup.state(), "error": startup.error},
                             status=200 if startup.ready else 503)


async def admin_reload(request: web.Request) -> web.Response:
    """Re-read ``loras/current`` now instead of waiting for the next poll."""
    provider = request.app.get(keys.LOCAL)
    if provider is not None:
        await provider.sync_adapter()
        note_adapter(request.app)
    return await health(request)


def note_adapter(app: web.Application) -> str | None:
    """Start a new stats window when the local model's live adapter differs from the window's; returns it."""
    live = live_adapter(app)
    if app[keys.STATS].window.adapter != live:
        app[keys.STATS].adapter_live(live)
    return live


def live_adapter(app: web.Application) -> str | None:
    engine = app.get(keys.LOCAL)
    return engine.adapter_version if engine is not None else None


async def feedback(request: web.Request) -> web.Response:
    try:
        body = json.loads(await request.read())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"request body is not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise InvalidRequestError("request body must be a JSON object", code="invalid_json")
    check_text(body, "")
    if not isinstance(body.get("record_id"), str):
        raise InvalidRequestError("'record_id' (string) is required", param="record_id", code="missing_field")
    thumbs, rating, correction = body.get("thumbs"), body.get("rating"), body.get("correction")
    if thumbs is not None and thumbs not in THUMBS:
        raise InvalidRequestError("'thumbs' must be 'up' or 'down'", param="thumbs", code="invalid_value")
    if rating is not None and (isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 5):
        raise InvalidRequestError("'rating' must be an integer from 1 to 5", param="rating", code="invalid_value")
    if correction is not None and (not isinstance(correction, str) or not correction.strip()):
        raise InvalidRequestError("'correction' must be a non-empty string", param="correction", code="invalid_value")
    if thumbs is None and rating is None and correction is None:
        raise InvalidRequestError("send at least one of 'thumbs', 'rating', 'correction'", code="missing_field")
    record = await request.app[keys.SERVICE].feedback(body["record_id"], thumbs, rating, correction)
    return web.json_response({"record_id": record.id, "success": record.success,
                              "feedback": record.feedback.to_dict() if record.feedback else None})


async def list_records(request: web.Request) -> web.Response:
    """``GET /v1/records?failed=true&since=2026-11-30&user=alice&limit=20&after=rec_…``: newest first, in
    OpenAI's list shape (``data``, ``has_more``, ``last_id`` to pass as ``after`` for the next page)."""
    query = request.query
    check_text(dict(query), "")
    unknown = sorted(set(query) - {"failed", "since", "user", "limit", "after"})
    if unknown:
        raise InvalidRequestError(f"unknown query parameter {unknown[0]!r}; use failed, since, user, limit, after",
                                  param=unknown[0], code="unknown_parameter")
    failed = query.get("failed")
    if failed not in (None, "true", "false"):
        raise InvalidRequestError("'failed' must be true or false", param="failed", code="invalid_value")
    limit = query.get("limit", "20")
    if not limit.isdigit() or not 1 <= int(limit) <= 100:
        raise InvalidRequestError("'limit' must be an integer from 1 to 100", param="limit", code="invalid_value")
    since = None
    if "since" in query:
        try:
            since = datetime.fromisoformat(query["since"])
        except ValueError as exc:
            raise InvalidRequestError("'since' must be an ISO date or date-time, e.g. 2026-11-30",
                                      param="since", code="invalid_value") from exc
        since = since.replace(tzinfo=UTC) if since.tzinfo is None else since
    records, more = await request.app[keys.SERVICE].records(
        int(limit), query.get("after"), None if failed is None else failed == "false", since, query.get("user"))
    data = [record.to_dict() for record in records]
    return web.json_response({"object": "list", "data": data, "has_more": more,
                              "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None})


async def get_record(request: web.Request) -> web.Response:
    record = await request.app[keys.SERVICE].record(request.match_info["record_id"])
    return web.json_response(record.to_dict())


async def delete_record(request: web.Request) -> web.Response:
    """``DELETE /v1/records/{id}``: the record is erased from the memory, from recall and from every file that
    copied it (``council/memory/erasure.py``); answered like OpenAI's deletions. An unknown id is a 404."""
    record_id = request.match_info["record_id"]
    await request.app[keys.SERVICE].delete(record_id)
    return web.json_response({"id": record_id, "object": "record.deleted", "deleted": True})


async def metrics(request: web.Request) -> web.Response:
    stats = request.app[keys.STATS]
    stats.memory_size.set(request.app[keys.MEMORY].count())
    stats.refresh_loop_metrics()
    return web.Response(body=generate_latest(stats.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})
