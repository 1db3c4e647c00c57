"""``HarvestConfig``: every option of ``council harvest``, with its help text and its checks.

``harvest.main`` turns its fields into command-line flags (``council.core.cliargs.add_config_arguments``),
so each field takes what a flag gives it too: ``since``/``until`` an ISO string (empty = the default window),
``models`` a comma-separated string. Build one with ``HarvestConfig(settings=settings, max_records=20, ...)``;
a bad value raises ValueError saying how to fix it. Nothing heavy is imported here (``--help`` stays fast).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from council.core.config import LOCAL_MODEL, Settings
from harvest.selection import EPOCH, default_window, parse_when

if TYPE_CHECKING:
    from harvest.augment import AugmentSettings

DEFAULT_AGENTS = 3


@dataclass
class HarvestConfig:
    settings: Settings | None = field(default=None, metadata={
        "help": "Council settings (state directory, prompts, local model); None = load_settings()."})
    since: datetime | str | None = field(default="", metadata={
        "help": "Window start (ISO date or date-time, UTC, inclusive); empty = the first failure not harvested "
                "yet."})
    until: datetime | str | None = field(default="", metadata={
        "help": "Window end (ISO date or date-time, UTC, exclusive); empty = now."})
    max_records: int = field(default=50, metadata={
        "help": "Most records (after collapsing duplicates) rewritten per run."})
    agents: int = field(default=0, metadata={
        "help": f"Council members; member i uses prompts/harvest_rewriter_<i>.j2 (cycling); 0 = {DEFAULT_AGENTS}, "
                "or one per --models entry if more."})
    models: list[str] | str = field(default=LOCAL_MODEL, metadata={
        "help": "litellm model strings, comma-separated, one per member (cycled when fewer than --agents)."})
    min_quality: float = field(default=0.7, metadata={"help": "Quality score (0-1) a rewrite needs to be kept."})
    dedupe_similarity: float = field(default=0.95, metadata={
        "help": "Query-embedding cosine similarity at which failures are collapsed into one."})
    max_tokens: int = field(default=256, metadata={"help": "Token limit of one proposal."})
    vote_max_tokens: int = field(default=16, metadata={"help": "Token limit of one ballot."})
    temperature: float = field(default=0.0, metadata={"help": "Sampling temperature of every council call."})
    concurrency: int = field(default=8, metadata={
        "help": "Records deliberated at once; their members' calls to a local model are decoded in shared "
                "batches (model.max_batch)."})
    timeout_seconds: float = field(default=120.0, metadata={
        "help": "Time limit of one model call; a timeout counts as a provider error."})
    paraphrases: int = field(default=6, metadata={
        "help": "Paraphrased questions written per kept correction (some held out as the deploy's probes); "
                "0 = none."})
    statements: int = field(default=2, metadata={
        "help": "Declarative statements of the fact written per kept correction; 0 = none."})
    reverse: bool = field(default=True, metadata={
        "help": "Write the reverse question of each kept correction where it has one."})

    def __post_init__(self) -> None:
        if isinstance(self.since, str):
            self.since = parse_when(self.since) if self.since else None
        if isinstance(self.until, str):
            self.until = parse_when(self.until) if self.until else None
        if self.since is None and self.until is None:
            self.since, self.until = default_window(datetime.now(UTC))
        elif self.until is None:
            self.until = datetime.now(UTC)
        elif self.since is None:
            self.since = EPOCH
        if self.since >= self.until:
            raise ValueError(f"--since ({self.since.isoformat()}) must be before --until ({self.until.isoformat()})")
        if self.max_records < 1:
            raise ValueError("--max-records must be >= 1")
        if self.concurrency < 1:
            raise ValueError("--concurrency must be >= 1 (records deliberated at once)")
        if isinstance(self.models, str):
            self.models = self.models.split(",")
        self.models = [m.strip() for m in self.models if m and m.strip()]
        if not self.agents:
            self.agents = max(DEFAULT_AGENTS, len(self.models))
        if self.agents < 1:
            raise ValueError(f"--agents must be >= 1 ({DEFAULT_AGENTS} is the default council)")
        if not self.models:
            raise ValueError("--models needs at least one litellm model string, e.g. local/smollm2")
        if len(self.models) > self.agents:
            raise ValueError(f"{len(self.models)} models for {self.agents} agents; raise --agents or drop models")
        if not 0.0 <= self.min_quality <= 1.0:
            raise ValueError("--min-quality must be within 0..1 (default 0.7)")
        if not 0.0 < self.dedupe_similarity <= 1.0:
            raise ValueError("--dedupe-similarity must be within (0, 1] (default 0.95)")
        if self.max_tokens < 8 or self.vote_max_tokens < 2:
            raise ValueError("max_tokens must be >= 8 and vote_max_tokens >= 2")
        if self.temperature < 0 or self.timeout_seconds <= 0:
            raise ValueError("temperature must be >= 0 and timeout_seconds > 0")
        if self.paraphrases < 0 or self.statements < 0:
            raise ValueError("--paraphrases and --statements must be >= 0 (0 = none; defaults 6 and 2)")

    @property
    def augment(self) -> AugmentSettings:
        from harvest.augment import AugmentSettings  # autogen loads here, not for --help

        return AugmentSettings(paraphrases=self.paraphrases, statements=self.statements, reverse=self.reverse)

    @property
    def member_models(self) -> list[str]:
        return [self.models[i % len(self.models)] for i in range(self.agents)]
