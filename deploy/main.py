"""``council deploy [VERSION]``: check a trained adapter, swap it in atomically, watch it, roll back if bad.

Steps (figures and the decision go to ``<home>/logs/deploy_summary.json`` and the alert webhook):

1. pick VERSION, by default the newest ``loras/<version>/`` newer than the current one that was never
   deployed or refused;
2. validate: files complete, weights readable and finite, ``metadata.json`` base-model fingerprint equal
   to the served base model's, and the adapter loads in-process (``LocalModel.use_adapter``);
3. canary: ``prompts/canary.jsonl`` cases run greedily on the candidate (``--min-canary-pass-rate``,
   1.0 by default), then the validation split's loss must not exceed the current adapter's (or the base
   model's) by more than ``--loss-tolerance`` (relative);
4. read the server's pre-swap figures from ``GET /health`` (every request since its last change, topped up
   with ``--probe-file`` probes below ``--min-requests``): the baseline, ``summary["monitor"]["baseline"]``;
5. swap ``loras/current`` atomically (``deploy.swap``) and record it in ``loras/registry.json``;
6. ask the server to reload and confirm through ``GET /health`` (no server answering is allowed: the
   summary says ``"confirmed": false`` and the window is skipped);
7. watch the server's post-swap window (``deploy.monitor``), judging only the requests the candidate
   answered against the baseline, and roll back when their success rate drops more than
   ``--max-success-drop`` or their p95 grows past ``--max-latency-ratio`` times the baseline's, when they
   cross an absolute limit set with ``--min-success-rate`` / ``--max-p95-latency-ms`` (off by default),
   or when the server stops answering or serves another adapter.

A refused candidate is marked failed in the registry and ``loras/current`` is left untouched.

Exit codes: 0 deployed; 1 refused, failed, or rolled back after a regression; 2 bad arguments;
3 nothing to deploy (no new version, or VERSION is already current).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import sys
from dataclasses import asdict
from typing import Any

from council.core.atomic import atomic_write_json
from council.core.cliargs import add_config_arguments
from council.core.config import Settings
from council.core.errors import AdapterError, CouncilError
from council.core.exitcodes import FAILURE, NOTHING_TO_DO, OK, USAGE
from deploy.alerts import DEPLOY_FAILURE, DEPLOY_SUCCESS, ROLLBACK, Alerter
from deploy.canary import check_candidate
from deploy.config import DeployConfig, read_probes
from deploy.monitor import (
    ServerClient,
    Thresholds,
    confirm_adapter,
    default_server_url,
    measure_baseline,
    watch,
)
from deploy.publish import probe_messages, publish, unpublish
from deploy.registry import AdapterInfo, Registry, RegistryState, read_adapter, utc_now
from deploy.rollback import confirm_on_server, switch_to
from deploy.swap import deploy_lock, point_current

log = logging.getLogger(__name__)


def pick_version(infos: list[AdapterInfo], state: RegistryState) -> str | None:
    """The newest version newer than the current one that was never deployed nor refused."""
    fresh = [i.version for i in infos if i.state == "new" and (state.current is None or i.version > state.current)]
    return max(fresh, default=None)


def _roll_back(config: DeployConfig, registry: Registry, state: RegistryState, version: str,
               previous: str | None, reason: str, summary: dict[str, Any]) -> int:
    if previous is not None and not read_adapter(registry.folder(previous)).complete:
        log.warning("previous adapter %s is no longer complete; rolling back to the base model", previous)
        previous = None
    log.warning("rolling back %s -> %s: %s", version, previous or "(base model)", reason)
    switch_to(registry, state, previous, version, reason)
    server = confirm_on_server(config.settings, config.server_url, previous, config.confirm_seconds)
    summary.update(decision="rolled_back", reason=reason, rollback={"to": previous, "server": server})
    return FAILURE


def _deploy(config: DeployConfig, summary: dict[str, Any]) -> int:
    settings = config.settings
    registry = Registry(settings.paths.loras)
    state = registry.load()
    version = config.version or pick_version(registry.versions(), state)
    summary.update(version=version, previous=state.current)
    if version is None or version == state.current:
        why = "no new adapter version" if version is None else f"{version} is already current"
        summary.update(decision="nothing_to_deploy", reason=why)
        return NOTHING_TO_DO
    info = read_adapter(registry.folder(version))
    if not info.path.is_dir():
        summary.update(decision="usage_error", reason=f"no adapter version {version} in {registry.loras}; "
                                                      "list them with `council adapters`")
        return USAGE
    reason, served_on = info.problem, None
    if not reason and settings.engine.kind == "vllm":  # loaded and probed on every replica before the checks
        summary["engine"] = publish(settings, version, info.path, probe_messages(settings, info))
        reason = summary["engine"].get("reason")
        served_on = next((r["url"] for r in summary["engine"]["replicas"] if r["ok"]), None)
    try:
        reason = reason or check_candidate(config, info, registry, state, summary, served_on)
    except AdapterError as exc:
        reason = exc.message
    if reason and served_on:
        unpublish(settings, version)
    if reason:
        state.failed = [*[v for v in state.failed if v != version], version]
        state.reasons[version] = reason
        registry.save(state)
        summary.update(decision="refused", reason=reason)
        return FAILURE
    gc.collect()
    client = ServerClient(config.server_url, settings.server.api_key)
    probes = read_probes(config.probe_file)
    baseline = measure_baseline(client, config.min_requests, probes, config.probe_model, config.probe_max_tokens)
    summary["monitor"] = {"baseline": asdict(baseline)}
    log.info("pre-swap baseline: %s", summary["monitor"]["baseline"])
    previous = state.current
    point_current(registry.loras, version)
    state.current, state.previous = version, previous
    state.deployed = [*[v for v in state.deployed if v != version], version]
    state.failed = [v for v in state.failed if v != version]
    registry.save(state)
    summary["swap"] = {"at": utc_now(), "from": previous, "to": version}
    log.info("swapped loras/current: %s -> %s", previous or "(base model)", version)

    reachable, confirmed, health = confirm_adapter(client, version, config.confirm_seconds)
    summary["server"] = {"url": config.server_url, "reachable": reachable, "confirmed": confirmed,
                         "adapter": (health or {}).get("adapter"),
                         "adapter_error": (health or {}).get("adapter_error")}
    if not reachable:
        log.warning("no server answers at %s (%s); deployed without confirmation or monitoring",
                    config.server_url, client.last_error)
        summary.update(decision="deployed", reason=f"deployed; no server answered at {config.server_url}, so "
                                                   "nothing was confirmed or monitored")
        return OK
    if not confirmed:
        why = (f"the server did not switch to {version} within {config.confirm_seconds:.0f} s (it serves "
               f"{summary['server']['adapter']!r}; adapter_error: {summary['server']['adapter_error']})")
        return _roll_back(config, registry, state, version, previous, why, summary)
    limits = Thresholds(config.min_requests, config.min_success_rate, config.max_p95_latency_ms,
                        config.max_success_drop, config.max_latency_ratio)
    result = watch(client, version, config.window_seconds, config.sample_seconds, limits, probes,
                   config.probe_model, config.probe_max_tokens, config.down_after, baseline=baseline)
    summary["monitor"].update(result.to_dict())
    if result.decision == "rollback":
        return _roll_back(config, registry, state, version, previous, result.reason, summary)
    summary.update(decision="deployed", reason=result.reason)
    return OK


def _alert(config: DeployConfig, summary: dict[str, Any]) -> None:
    decision, version = summary.get("decision"), summary.get("version")
    fields = {"version": version, "reason": summary.get("reason"), "previous": summary.get("previous")}
    canary = summary.get("canary")
    if canary:
        fields["canary"] = f"{canary['passed']}/{canary['total']}"
    evaluation = summary.get("eval") or {}
    if "candidate_loss" in evaluation:
        fields["val loss"] = f"{evaluation['candidate_loss']:.4f} vs {evaluation['baseline_loss']:.4f}"
    alerter = Alerter(config.settings.alerts)
    if decision == "deployed":
        alerter.send(DEPLOY_SUCCESS, f"Deployed adapter {version}", fields)
    elif decision == "rolled_back":
        alerter.send(ROLLBACK, f"Deploy of {version} rolled back", fields)
    elif decision in ("refused", "failed"):
        alerter.send(DEPLOY_FAILURE, f"Deploy of {version or 'adapter'} {decision}", fields)


def main(config: DeployConfig) -> int:
    """Run the deploy; write logs/deploy_summary.json and alert; returns the exit code."""
    paths = config.settings.paths.ensure()
    summary: dict[str, Any] = {"stage": "deploy", "started_at": utc_now(), "requested": config.version or None}
    try:
        with deploy_lock(paths.loras):
            code = _deploy(config, summary)
    except (CouncilError, OSError) as exc:
        reason = exc.message if isinstance(exc, CouncilError) else f"{type(exc).__name__}: {exc}"
        summary.update(decision="failed", reason=reason)
        code = FAILURE
    summary.update(exit_code=code, finished_at=utc_now())
    atomic_write_json(paths.logs / "deploy_summary.json", summary)
    _alert(config, summary)
    log.info("deploy: %s (%s)", summary.get("decision"), summary.get("reason"))
    return code


def cli(argv: list[str], settings: Settings) -> int:
    """``council deploy [VERSION] [--option value ...]``; options mirror DeployConfig's fields."""
    parser = argparse.ArgumentParser(prog="council deploy", description=__doc__.split("\n\n")[0])
    parser.add_argument("version", nargs="?", default="", help="adapter version (default: newest new one)")
    add_config_arguments(parser, DeployConfig, skip=("settings", "version"),
                         defaults={"server_url": default_server_url(settings)})
    args = vars(parser.parse_args(argv))
    try:
        config = DeployConfig(settings=settings, **args)
    except ValueError as exc:
        sys.stderr.write(f"council deploy: {exc}\n")
        return USAGE
    code = main(config)
    summary = json.loads((settings.paths.logs / "deploy_summary.json").read_text(encoding="utf-8"))
    sys.stdout.write(f"{summary.get('decision')}: {summary.get('reason')} (exit {code})\n")
    return code
