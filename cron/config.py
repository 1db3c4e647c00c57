"""The options of ``council nightly`` (``NightlyConfig``) and the deploy stage's options derived from them.

The lowest module of the loop: ``cron.stages`` and ``cron.nightly`` import it, it imports neither::

    config = NightlyConfig(settings=settings, since="2026-11-21", fresh=True)  # ValueError for a bad option
    deploy_config(config)                                                      # deploy.main.DeployConfig
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from council.core.config import Settings
from deploy.monitor import LATENCY_FLOOR_MS, default_server_url

if TYPE_CHECKING:
    from deploy.config import DeployConfig


@dataclass
class NightlyConfig:
    """The options of one ``council nightly`` run; each field is a ``--flag`` of its CLI.

    ``__post_init__`` fills ``server_url`` from the settings when empty and raises ValueError, saying how to
    fix it, for a bad option (the deploy options included), before any stage runs.
    """

    settings: Settings = field(metadata={"help": "Council settings (home, model, alerts, server)."})
    server_url: str = field(default="", metadata={"help": "Running server to deploy into; empty = from settings."})
    since: str = field(default="", metadata={"help": "Harvest window start (ISO, UTC); empty = the first unharvested failure."})
    until: str = field(default="", metadata={"help": "Harvest window end (ISO, UTC, exclusive); empty = now."})
    max_records: int = field(default=50, metadata={"help": "Most failures rewritten in one night."})
    agents: int = field(default=3, metadata={"help": "Agent-0 council members."})
    harvest_models: str = field(default="", metadata={"help": "Comma-separated litellm models for the council "
                                                              "members; empty = harvest's default."})
    fresh: bool = field(default=False, metadata={"help": "Train from the base model instead of the current adapter."})
    epochs: int = field(default=0, metadata={"help": "Training epochs; 0 = the trainer's default."})
    learning_rate: float = field(default=0.0, metadata={"help": "Training learning rate; 0 = the trainer's default."})
    min_examples: int = field(default=5, metadata={"help": "Fewest harvested examples worth a training run."})
    replay_ratio: float = field(default=-1.0, metadata={"help": "Earlier nights' lines replayed, as a share of the "
                                                                "night's own (0 = all); -1 = the trainer's default."})
    train_threads: int = field(default=0, metadata={"help": "torch threads while training; 0 = one per core (the "
                                                            "night's server is mostly idle; 1 leaves it a core)."})
    window_seconds: float = field(default=60.0, metadata={"help": "Deploy monitoring window."})
    sample_seconds: float = field(default=10.0, metadata={"help": "Deploy monitoring sample interval."})
    max_success_drop: float = field(default=0.15, metadata={"help": "Deploy rolls back when the new adapter's "
                                                                    "success rate is this far below the pre-swap one."})
    max_latency_ratio: float = field(default=3.0, metadata={"help": "Deploy rolls back when the new adapter's p95 is over "
                                                                    f"this times the pre-swap p95 + {LATENCY_FLOOR_MS:.0f} ms; 0 = off."})
    max_p95_latency_ms: float = field(default=0.0, metadata={"help": "Absolute deploy p95 limit (ms); 0 = off."})
    min_success_rate: float = field(default=0.0, metadata={"help": "Absolute deploy success-rate floor; 0 = off."})
    min_probe_pass_rate: float = field(default=0.8, metadata={"help": "Share of held-out probes deploy must see right."})
    max_forgotten: float = field(default=0.05, metadata={"help": "Share of earlier nights' probes the live adapter "
                                                                 "answers right that a candidate may lose; 1 = off."})
    max_retention_probes: int = field(default=64, metadata={"help": "Earlier nights' probes asked, one of each night in turn; 0 = off."})
    probe_file: str = field(default="", metadata={"help": "Probe prompts for a deploy baseline or window without traffic."})
    min_free_gb: float = field(default=2.0, metadata={"help": "Free disk the state directory needs to start."})
    keep_adapters: int = field(default=5, metadata={"help": "Adapter versions kept (current and previous always)."})
    log_days: int = field(default=14, metadata={"help": "Days of nightly logs kept."})

    def __post_init__(self) -> None:
        if not self.server_url:
            self.server_url = default_server_url(self.settings)
        deploy_config(self)  # a bad deploy option fails now, not after harvest and training
        if self.keep_adapters < 2:
            raise ValueError("keep_adapters must be >= 2 so the current and previous adapters survive cleanup")
        if self.train_threads < 0:
            raise ValueError("train_threads must be >= 0 (0 = one per core)")
        if self.min_free_gb < 0 or self.log_days < 1:
            raise ValueError("min_free_gb must be >= 0 and log_days >= 1")


def deploy_config(config: NightlyConfig) -> DeployConfig:
    """The deploy stage's options from the night's (ValueError, saying how to fix it, for a bad one)."""
    from deploy.config import DeployConfig

    return DeployConfig(settings=config.settings, server_url=config.server_url,
                        window_seconds=config.window_seconds, sample_seconds=config.sample_seconds,
                        max_success_drop=config.max_success_drop, max_latency_ratio=config.max_latency_ratio,
                        max_p95_latency_ms=config.max_p95_latency_ms, min_success_rate=config.min_success_rate,
                        min_probe_pass_rate=config.min_probe_pass_rate, probe_file=config.probe_file,
                        max_forgotten=config.max_forgotten, max_retention_probes=config.max_retention_probes)
