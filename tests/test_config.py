"""Settings from defaults, TOML, environment and flags; the `council` command's own subcommands."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from council.cli import main
from council.config import load_settings
from tests.conftest import REPO


def test_layers_toml_env_and_overrides(tmp_path):
    config = tmp_path / "council.toml"
    config.write_text('[server]\nport = 9001\napi_key = "from-file"\n[council]\nthreshold = 0.5\n'
                      'heads = { math = "ollama/qwen2.5-math" }\n')
    env = {"COUNCIL_HOME": str(tmp_path / "h"), "COUNCIL_API_KEY": "from-env",
           "COUNCIL__COUNCIL__MEMORY_K": "5", "COUNCIL__MODEL__SOURCE": "my/model"}
    settings = load_settings(config, overrides={"server.port": 9100}, environ=env)
    assert settings.server.port == 9100 and settings.server.api_key == "from-env"
    assert settings.council.threshold == 0.5 and settings.council.memory_k == 5
    assert settings.council.heads == {"math": "ollama/qwen2.5-math"} and settings.model.source == "my/model"
    assert settings.home == (tmp_path / "h").resolve() and settings.paths.current_adapter.name == "current"


@pytest.mark.parametrize("text, fragment", [
    ("[council]\nthreshold = 3\n", "council.threshold"),
    ("[server]\nport = 0\n", "server.port"),
    ("[server]\nprot = 1\n", "unknown setting"),
    ("not toml at all [", "not valid TOML"),
])
def test_bad_config_is_a_value_error_that_says_what_to_fix(tmp_path, text, fragment):
    config = tmp_path / "council.toml"
    config.write_text(text)
    with pytest.raises(ValueError, match=fragment):
        load_settings(config, environ={"COUNCIL_HOME": str(tmp_path)})


def test_cli_reports_config_errors_with_usage_code(tmp_path, capsys):
    (tmp_path / "bad.toml").write_text("[council]\nthreshold = 3\n")
    assert main(["--config", str(tmp_path / "bad.toml"), "prompts", "check"]) == 2
    assert "council.threshold" in capsys.readouterr().err


def test_prompts_check_names_the_bad_file_and_line(tmp_path):
    prompts = tmp_path / "prompts"
    shutil.copytree(REPO / "prompts", prompts)
    (tmp_path / "council.toml").write_text(f'prompts_dir = "{prompts}"\n')
    run = [sys.executable, "-m", "council.cli", "--home", str(tmp_path), "prompts", "check"]
    ok = subprocess.run(run, capture_output=True, text=True, cwd=REPO)
    assert ok.returncode == 0 and "templates OK" in ok.stdout
    (prompts / "head_math.j2").write_text("line one\nline two {{ broken(\n")
    bad = subprocess.run(run, capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 1 and "head_math.j2:2" in bad.stderr
