"""``council deploy``'s settings: one dataclass, one flag per field (``council deploy --help``), validated on creation.

    config = DeployConfig(settings=load_settings(), min_probe_pass_rate=0.8)   # ValueError names what to fix
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from council.core.config import Settings
from council.server.validation import COUNCIL_MODEL
from deploy.monitor import LATENCY_FLOOR_MS
from deploy.registry import Registry
from deploy.rollback import DEFAULT_SERVER_URL


@dataclass
class DeployConfig:
    settings: Settings = field(metadata={"help": "Council settings (home, model, server token, alerts)."})
    version: str = field(default="", metadata={"help": "Adapter version; empty = newest never deployed."})
    canary_file: str = field(default="", metadata={"help": "Canary JSONL; empty = <prompts_dir>/canary.jsonl."})
    min_canary_pass_rate: float = field(default=1.0, metadata={"help": "Share of canary cases that must pass."})
    min_probe_pass_rate: float = field(default=0.8, metadata={
        "help": "Share of the night's held-out paraphrase probes (in-scope questions) the candidate must answer "
                "right, as served; see deploy/canary.py."})
    max_forgotten: float = field(default=0.05, metadata={
        "help": "Refuse a candidate that no longer answers more than this share of the earlier nights' held-out "
                "probes the adapter it replaces answered right (deploy/retention.py); 0.05 matches issue 28's "
                "target of night 1's facts >= 95% kept after night 20; 1 = off."})
    max_retention_probes: int = field(default=64, metadata={
        "help": "Earlier nights' held-out probes asked at most (one per question, newest nights first); "
                "0 = no retention gate."})
    loss_tolerance: float = field(default=0.05, metadata={
        "help": "Allowed relative validation-loss increase over the current adapter (0.05 = 5%)."})
    max_eval_examples: int = field(default=64, metadata={"help": "Validation examples scored at most."})
    server_url: str = field(default=DEFAULT_SERVER_URL, metadata={"help": "The running council server."})
    confirm_seconds: float = field(default=30.0, metadata={"help": "Wait for /health to report the version."})
    window_seconds: float = field(default=60.0, metadata={"help": "Length of the monitoring window."})
    sample_seconds: float = field(default=10.0, metadata={"help": "Interval between /health samples."})
    min_requests: int = field(default=5, metadata={"help": "Requests the candidate must answer before the window is "
                                                           "judged (and the fewest a pre-swap baseline needs)."})
    max_success_drop: float = field(default=0.15, metadata={
        "help": "Roll back when the success rate of the requests the candidate answered falls more than this "
                "below the pre-swap rate (absolute: 0.15 = 15 points, e.g. 0.90 -> under 0.75); 1 = off."})
    max_latency_ratio: float = field(default=3.0, metadata={
        "help": "Roll back when the p95 latency of the requests the candidate answered exceeds this many times "
                f"the pre-swap p95 plus {LATENCY_FLOOR_MS:.0f} ms (the floor keeps millisecond baselines from "
                "flaking; 3 allows for a LoRA's extra work and a busy CPU, not a hang); 0 = off."})
    min_success_rate: float = field(default=0.0, metadata={
        "help": "Absolute floor: roll back below this success rate of the candidate's answers; 0 = off."})
    max_p95_latency_ms: float = field(default=0.0, metadata={
        "help": "Absolute ceiling: roll back above this p95 latency (ms) of the candidate's answers; 0 = off "
                "(depends on the hardware; the relative max_latency_ratio works anywhere)."})
    down_after: int = field(default=2, metadata={"help": "Missed /health samples in a row that mean the "
                                                         "server died (rollback)."})
    probe_file: str = field(default="", metadata={"help": "Prompts (JSONL with 'prompt', or text lines) sent "
                                                          "when the pre-swap figures or the window lack traffic; "
                                                          "empty = none."})
    probe_model: str = field(default=COUNCIL_MODEL, metadata={"help": "Model name the probes ask for."})
    probe_max_tokens: int = field(default=16, metadata={"help": "max_tokens of a probe."})

    def __post_init__(self) -> None:
        if not self.canary_file:
            self.canary_file = str(self.settings.prompts_dir / "canary.jsonl")
        if self.version:
            Registry(self.settings.paths.loras).folder(self.version)  # ValueError for a malformed name
        for name in ("min_canary_pass_rate", "min_probe_pass_rate", "min_success_rate", "max_success_drop",
                     "max_forgotten"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within 0..1, got {getattr(self, name)}")
        if self.loss_tolerance < 0:
            raise ValueError("loss_tolerance must be >= 0 (0.05 allows a 5% higher validation loss)")
        if self.window_seconds < 0 or self.sample_seconds <= 0 or self.confirm_seconds < 0:
            raise ValueError("window_seconds and confirm_seconds must be >= 0 and sample_seconds > 0")
        if min(self.max_eval_examples, self.min_requests, self.down_after, self.probe_max_tokens) < 1:
            raise ValueError("max_eval_examples, min_requests, down_after and probe_max_tokens must be >= 1")
        if self.max_retention_probes < 0:
            raise ValueError("max_retention_probes must be >= 0 (0 turns the retention gate off)")
        if self.max_p95_latency_ms < 0:
            raise ValueError("max_p95_latency_ms must be >= 0 (0 = no absolute latency limit)")
        if self.max_latency_ratio != 0 and self.max_latency_ratio < 1:
            raise ValueError(f"max_latency_ratio must be 0 (off) or >= 1 (3 = three times the pre-swap p95), "
                             f"got {self.max_latency_ratio}")
        if not self.server_url.startswith(("http://", "https://")):
            raise ValueError(f"server_url must start with http:// or https://, got {self.server_url!r}")
        if self.probe_file:
            try:
                probes = read_probes(self.probe_file)
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ValueError(f"probe_file {self.probe_file} is unreadable ({exc}); fix it or leave it "
                                 "empty") from exc
            if not probes:
                raise ValueError(f"probe_file {self.probe_file} holds no prompts (text lines or JSONL with "
                                 "'prompt')")


def read_probes(path: str) -> list[str]:
    prompts = []
    for line in Path(path).read_text(encoding="utf-8").splitlines() if path else []:
        line = line.strip()
        if not line or line.startswith("//"):
            continue
        if line.startswith("{"):
            data = json.loads(line)
            line = data.get("prompt", "") if isinstance(data, dict) else ""
        if line:
            prompts.append(line)
    return prompts
