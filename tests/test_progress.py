"""Issue 13: the GGUF conversion's progress bars only on an interactive stderr (or DEBUG), log lines otherwise."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from council.engine import model_files

BAR_TEXT = ("\r", "it/s", "%|")  # what any tqdm frame carries: carriage return, rate, bar edge

CONVERT = textwrap.dedent("""
    import logging, sys
    from pathlib import Path
    from council.engine.model_files import _convert_gguf, embedded_gguf_path
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    _convert_gguf(embedded_gguf_path(), Path(sys.argv[1]))
""")


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def _bars(monkeypatch: pytest.MonkeyPatch, tty: bool) -> str:
    """What the conversion's three kinds of bar write to stderr inside ``conversion_progress_bars()``."""
    from transformers import modeling_gguf_pytorch_utils as gguf_loading
    from transformers.utils import logging as hf_logging

    stderr = _Stream(tty)
    monkeypatch.setattr(sys, "stderr", stderr)
    with model_files.conversion_progress_bars() as shown:
        assert shown is tty
        list(gguf_loading.tqdm(range(50), desc="Converting and de-quantizing GGUF tensors...", mininterval=0))
        list(hf_logging.tqdm(range(50), desc="Loading weights", mininterval=0))
    return stderr.getvalue()


def test_no_bars_on_a_pipe_and_switches_restored(monkeypatch, caplog):
    from transformers import modeling_gguf_pytorch_utils as gguf_loading
    from transformers.utils import logging as hf_logging

    caplog.set_level(logging.INFO)
    before = gguf_loading.tqdm, hf_logging.is_progress_bar_enabled()
    assert _bars(monkeypatch, tty=False) == ""
    assert (gguf_loading.tqdm, hf_logging.is_progress_bar_enabled()) == before


def test_bars_on_a_terminal_or_at_debug(monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    assert "GGUF tensors" in _bars(monkeypatch, tty=True) and "\r" in _bars(monkeypatch, tty=True)
    caplog.set_level(logging.DEBUG)
    with model_files.conversion_progress_bars() as shown:
        assert shown  # --log-level debug: libraries' bars are allowed, even into a file


@pytest.mark.slow
def test_real_conversion_into_a_pipe_logs_lines_not_bars(tmp_path: Path):
    target = tmp_path / "models" / model_files.EMBEDDED_FOLDER
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)  # only our switch may keep the bars out
    done = subprocess.run([sys.executable, "-c", CONVERT, str(target)], capture_output=True, text=True, env=env,
                          cwd=Path(__file__).resolve().parent.parent, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (target / model_files.IDENTITY_FILE).is_file() and (target / "model.safetensors").is_file()
    assert not [text for text in BAR_TEXT if text in done.stderr], done.stderr[-2000:]
    lines = done.stderr.splitlines()
    assert any("converting SmolLM2-135M-Instruct.Q4_1.gguf" in line for line in lines), done.stderr[-2000:]
    assert any("converted SmolLM2-135M-Instruct.Q4_1.gguf in" in line for line in lines), done.stderr[-2000:]
