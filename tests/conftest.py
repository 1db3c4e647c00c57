"""Shared fixtures: a movable state directory per test and the embedded model converted once per run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from council.core.config import Settings, load_settings  # noqa: E402
from council.engine.model_files import resolve_base_model  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TEST_CACHE = Path(os.environ.get("COUNCIL_TEST_CACHE", REPO / ".council" / "test-cache"))
os.environ.setdefault("XDG_CACHE_HOME", str(TEST_CACHE / "xdg"))  # the embedder's ONNX export, made once per machine


@pytest.fixture(autouse=True)
def council_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own state directory; nothing touches ~/.council."""
    home = tmp_path / "home"
    monkeypatch.setenv("COUNCIL_HOME", str(home))
    for name in ("COUNCIL_CONFIG", "COUNCIL_API_KEY", "COUNCIL_WEBHOOK_URL", "COUNCIL_PORT", "COUNCIL_HOST"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture(scope="session")
def base_model_dir() -> Path:
    """The embedded SmolLM2 converted to safetensors once (reused across runs from .council/test-cache)."""
    return Path(resolve_base_model("", TEST_CACHE / "models").path)


@pytest.fixture
def make_settings(council_home: Path):
    """Settings on the test's home; pass dotted overrides, e.g. make_settings(**{"council.threshold": 0.5})."""

    def build(**overrides: object) -> Settings:
        return load_settings(overrides={"home": str(council_home), **overrides})

    return build
