"""``council rollback [--to VERSION|base]``: go back to the previous good adapter.

Without ``--to`` the target is the registry's previous version (else the newest earlier deployed version
that has not failed, else the bare base model, which removes ``loras/current``). The version being left is
kept on disk and marked failed in ``loras/registry.json``; the running server is asked to reload
(``POST /admin/reload``) and its ``GET /health`` must report the target. The outcome goes to
``<home>/logs/rollback_summary.json`` and to the alert webhook.

Exit codes: 0 rolled back as requested; 1 failed (or the server did not switch); 2 bad arguments;
3 nothing to roll back (already serving the target).
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field
from typing import Any

from council.core.atomic import atomic_write_json
from council.core.config import Settings
from council.core.errors import CouncilError
from council.core.exitcodes import FAILURE, NOTHING_TO_DO, OK, USAGE
from deploy.alerts import ROLLBACK, Alerter
from deploy.monitor import ServerClient, confirm_adapter, default_server_url
from deploy.registry import Registry, RegistryState, read_adapter, utc_now
from deploy.swap import deploy_lock, point_current

log = logging.getLogger(__name__)

DEFAULT_SERVER_URL = "http://127.0.0.1:8000"
BASE = "base"


@dataclass
class RollbackConfig:
    settings: Settings = field(metadata={"help": "Council settings (home, server token, alerts)."})
    to: str = field(default="", metadata={"help": "Version to go back to; 'base' = the bare base model; "
                                                   "empty = the previous good version."})
    reason: str = field(default="manual rollback", metadata={"help": "Why; stored with the failed version."})
    server_url: str = field(default=DEFAULT_SERVER_URL, metadata={"help": "The running council server."})
    confirm_seconds: float = field(default=30.0, metadata={"help": "How long to wait for /health to "
                                                                   "report the target."})

    def __post_init__(self) -> None:
        if not self.server_url.startswith(("http://", "https://")):
            raise ValueError(f"server_url must start with http:// or https://, got {self.server_url!r}")
        if self.confirm_seconds < 0:
            raise ValueError("confirm_seconds must be >= 0")
        if self.to and self.to != BASE:
            Registry(self.settings.paths.loras).folder(self.to)  # ValueError for a malformed name


def switch_to(registry: Registry, state: RegistryState, target: str | None, failed: str | None,
              reason: str) -> None:
    """Point the link at ``target`` and record ``failed`` (kept on disk) as failed with ``reason``."""
    point_current(registry.loras, target)
    if failed is not None and failed != target:
        if failed not in state.failed:
            state.failed.append(failed)
        state.reasons[failed] = reason
    if target is not None:
        if target in state.failed:
            state.failed.remove(target)
        if target not in state.deployed:
            state.deployed.append(target)
    state.current = target
    state.previous = registry.last_good(state, exclude={v for v in (target, failed) if v})
    registry.save(state)
    log.info("loras/current -> %s (left %s: %s)", target or "(base model)", failed or "(base model)", reason)


def confirm_on_server(settings: Settings, server_url: str, version: str | None,
                      timeout: float) -> dict[str, Any]:
    """Make the server reload and report what it serves; {} fields say whether anyone answered."""
    client = ServerClient(server_url, settings.server.api_key)
    reachable, confirmed, health = confirm_adapter(client, version, timeout)
    if not reachable:
        log.warning("no server answers at %s (%s); it will serve %s when it starts", server_url,
                    client.last_error, version or "the base model")
    report = {"url": server_url, "reachable": reachable, "confirmed": confirmed}
    if health is not None:
        report.update(adapter=health.get("adapter"), adapter_error=health.get("adapter_error"))
    return report


def pick_target(registry: Registry, state: RegistryState, current: str | None) -> str | None:
    previous = state.previous
    if previous and previous != current and previous not in state.failed and read_adapter(
        registry.loras / previous
    ).complete:
        return previous
    return registry.last_good(state, exclude={current} if current else set())


def _rollback(config: RollbackConfig, summary: dict[str, Any]) -> int:
    registry = Registry(config.settings.paths.loras)
    state = registry.load()
    current = state.current
    if config.to == BASE:
        target = None
    elif config.to:
        info = read_adapter(registry.folder(config.to))
        if not info.path.is_dir():
            summary.update(decision="refused", reason=f"no adapter version {config.to} in {registry.loras}")
            return USAGE
        if info.problem:
            summary.update(decision="refused", reason=f"{config.to} is incomplete: {info.problem}")
            return FAILURE
        target = config.to
    else:
        target = pick_target(registry, state, current)
    summary.update(version=current, target=target)
    if target == current:
        summary.update(decision="nothing_to_do", reason=f"already serving {current or 'the base model'}")
        return NOTHING_TO_DO
    switch_to(registry, state, target, current, config.reason)
    server = confirm_on_server(config.settings, config.server_url, target, config.confirm_seconds)
    summary.update(decision="rolled_back", reason=config.reason, server=server, registry=state.to_dict())
    if server["reachable"] and not server["confirmed"]:
        summary["reason"] += f"; but the server still serves {server.get('adapter')!r}"
        return FAILURE
    return OK


def main(config: RollbackConfig) -> int:
    """Roll back, write logs/rollback_summary.json, alert; returns the exit code."""
    paths = config.settings.paths.ensure()
    summary: dict[str, Any] = {"stage": "rollback", "started_at": utc_now(), "requested_to": config.to or None}
    try:
        with deploy_lock(paths.loras):
            code = _rollback(config, summary)
    except (CouncilError, OSError) as exc:
        reason = exc.message if isinstance(exc, CouncilError) else f"{type(exc).__name__}: {exc}"
        summary.update(decision="failed", reason=reason)
        code = FAILURE
    summary.update(exit_code=code, finished_at=utc_now())
    atomic_write_json(paths.logs / "rollback_summary.json", summary)
    if summary["decision"] in ("rolled_back", "failed"):
        title = (f"Rolled back {summary.get('version') or 'base'} -> {summary.get('target') or 'base model'}"
                 if summary["decision"] == "rolled_back" else "Rollback failed")
        Alerter(config.settings.alerts).send(ROLLBACK, title, {"reason": summary["reason"], "exit_code": code})
    log.info("rollback: %s (%s)", summary["decision"], summary["reason"])
    return code


def cli(argv: list[str], settings: Settings) -> int:
    """``council rollback [--to VERSION|base] [--reason TEXT] [--server-url URL]``."""
    parser = argparse.ArgumentParser(prog="council rollback", description=__doc__.split("\n\n")[0])
    parser.add_argument("--to", default="", help="version to go back to, or 'base' for the bare base model")
    parser.add_argument("--reason", default="manual rollback", help="stored with the version being left")
    parser.add_argument("--server-url", default=default_server_url(settings),
                        help="the running server (default: server.host/port from the settings)")
    parser.add_argument("--confirm-seconds", type=float, default=30.0,
                        help="how long to wait for /health to report the target (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        config = RollbackConfig(settings, args.to, args.reason, args.server_url, args.confirm_seconds)
    except ValueError as exc:
        sys.stderr.write(f"council rollback: {exc}\n")
        return USAGE
    code = main(config)
    summary = settings.paths.logs / "rollback_summary.json"
    sys.stdout.write(f"rollback exit {code}; summary in {summary}\n")
    return code

