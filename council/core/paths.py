"""Where everything Council writes lives: one movable state directory (``--home``, ``$COUNCIL_HOME``).

    paths = StatePaths(Path("~/.council").expanduser()).ensure()
    paths.memory, paths.loras, paths.current_adapter, paths.training_data, paths.logs, paths.models
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StatePaths:
    """Where everything Council writes lives, under one movable folder."""

    home: Path

    @property
    def models(self) -> Path:
        return self.home / "models"

    @property
    def memory(self) -> Path:
        return self.home / "memory"

    @property
    def loras(self) -> Path:
        return self.home / "loras"

    @property
    def current_adapter(self) -> Path:
        return self.loras / "current"

    @property
    def training_data(self) -> Path:
        return self.home / "training_data"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    def ensure(self) -> StatePaths:
        for folder in (self.models, self.memory, self.loras, self.training_data, self.logs):
            folder.mkdir(parents=True, exist_ok=True)
        return self
