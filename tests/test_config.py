"""Settings from defaults, TOML, environment and flags; the `council` command's own subcommands."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from council.cli import main
from council.core.config import load_settings
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


# --- typed settings: every layer is checked against the field's declared type -------------------------------

def _load(tmp_path, toml: str | None = None, env: dict[str, str] | None = None, overrides=None):
    config = None
    if toml is not None:
        config = tmp_path / "council.toml"
        config.write_text(toml)
    return load_settings(config, overrides=overrides, environ={"COUNCIL_HOME": str(tmp_path), **(env or {})})


@pytest.mark.parametrize("name", ["COUNCIL__SERVER__API_KEY", "COUNCIL_API_KEY"])
async def test_int_like_api_key_from_env_stays_a_string_and_authenticates(tmp_path, aiohttp_client, name):
    from aiohttp import web

    from council.server import keys
    from council.server.middleware import auth_middleware, errors_middleware

    settings = _load(tmp_path, env={name: "123456"})
    assert settings.server.api_key == "123456"
    app = web.Application(middlewares=[errors_middleware, auth_middleware])
    app[keys.SETTINGS] = settings
    app.router.add_get("/v1/models", lambda request: web.json_response({"data": []}))
    client = await aiohttp_client(app)
    assert (await client.get("/v1/models", headers={"Authorization": "Bearer 123456"})).status == 200
    wrong = await client.get("/v1/models", headers={"Authorization": "Bearer 654321"})
    assert wrong.status == 401 and (await wrong.json())["error"]["code"] == "invalid_api_key"


def test_env_values_are_parsed_by_the_field_type(tmp_path):
    settings = _load(tmp_path, env={
        "COUNCIL_PORT": "8080", "COUNCIL__SERVER__HOST": "0.0.0.0", "COUNCIL__COUNCIL__THRESHOLD": "1",
        "COUNCIL__COUNCIL__HEADS": '{ math = "ollama/m" }', "COUNCIL__COUNCIL__FALLBACKS": '{ "ollama/m" = ["a", "b"] }',
        "COUNCIL__ALERTS__WEBHOOK_URL": "12345", "COUNCIL__MODEL__SOURCE": "true",
        "COUNCIL__PROMPTS_DIR": str(tmp_path / "p")})
    assert settings.server.port == 8080 and settings.server.host == "0.0.0.0"
    assert settings.council.threshold == 1.0 and isinstance(settings.council.threshold, float)
    assert settings.council.heads == {"math": "ollama/m"} and settings.council.fallbacks == {"ollama/m": ["a", "b"]}
    assert settings.alerts.webhook_url == "12345" and settings.model.source == "true"
    assert settings.prompts_dir == (tmp_path / "p").resolve()


def test_toml_paths_are_strings_and_ints_are_fine_for_floats(tmp_path):
    settings = _load(tmp_path, f'prompts_dir = "{tmp_path / "p"}"\n[council]\nthreshold = 1\n')
    assert settings.prompts_dir == (tmp_path / "p").resolve() and settings.council.threshold == 1.0


@pytest.mark.parametrize("toml, env, overrides, setting, expected", [
    ("[server]\nport = true\n", {}, None, "server.port", "int"),
    ('[server]\nport = "80"\n', {}, None, "server.port", "int"),
    ("[server]\nport = 80.5\n", {}, None, "server.port", "int"),
    ('[council]\nthreshold = "high"\n', {}, None, "council.threshold", "float"),
    ("[council]\nthreshold = nan\n", {}, None, "council.threshold", "float"),
    ("[council]\nheads = { math = 1 }\n", {}, None, "council.heads['math']", "dict[str, str]"),
    ('[council]\nheads = ["m"]\n', {}, None, "council.heads", "dict[str, str]"),
    ('[council]\nfallbacks = { m = ["a", 2] }\n', {}, None, "council.fallbacks['m'][1]", "dict[str, list[str]]"),
    ('[council]\nfallbacks = { m = "a" }\n', {}, None, "council.fallbacks['m']", "dict[str, list[str]]"),
    ("prompts_dir = 5\n", {}, None, "prompts_dir", "Path"),
    ("[model]\nsource = 5\n", {}, None, "model.source", "str"),
    (None, {"COUNCIL_PORT": "abc"}, None, "server.port", "int"),
    (None, {"COUNCIL__SERVER__PORT": "true"}, None, "server.port", "int"),
    (None, {"COUNCIL__COUNCIL__MEMORY_K": "2.5"}, None, "council.memory_k", "int"),
    (None, {"COUNCIL__COUNCIL__HEADS": "[1]"}, None, "council.heads", "dict[str, str]"),
    (None, {}, {"server.port": "9100"}, "server.port", "int"),
    (None, {}, {"server.port": True}, "server.port", "int"),
    (None, {}, {"council.memory_k": 3.0}, "council.memory_k", "int"),
])
def test_wrong_types_name_the_setting_the_type_and_the_source(tmp_path, toml, env, overrides, setting, expected):
    with pytest.raises(ValueError) as caught:
        _load(tmp_path, toml, env, overrides)
    message = str(caught.value)
    assert setting in message and f"must be {expected} (" in message
    source = "config file" if toml else ("environment " + next(iter(env)) if env else "override")
    assert source in message and "\n" not in message


@pytest.mark.parametrize("toml, env, overrides", [
    ("[server]\napi_key = 987654321\n", {}, None),
    ('[alerts]\nwebhook_url = ["https://hooks.example/987654321"]\n', {}, None),
    (None, {}, {"server.api_key": 987654321}),
    (None, {"COUNCIL__ALERTS": '{ webhook_url = 987654321 }'}, None),
])
def test_type_errors_never_quote_secrets(tmp_path, toml, env, overrides):
    with pytest.raises(ValueError, match="must be str") as caught:
        _load(tmp_path, toml, env, overrides)
    assert "987654321" not in str(caught.value) and caught.value.__cause__ is None
    assert caught.value.__context__ is None  # the pydantic error, which quotes the input, is not attached


COUNCIL_BIN = Path(sys.executable).with_name("council")


@pytest.mark.parametrize("argv", [["serve"], ["serve", "--host", "127.0.0.1"], ["prompts", "check"], ["harvest"],
                                  ["train"], ["nightly"], ["adapters"]])
def test_cli_exits_2_with_one_line_before_loading_anything(tmp_path, argv):
    (tmp_path / "bad.toml").write_text("[server]\nport = true\n")
    command = [str(COUNCIL_BIN)] if COUNCIL_BIN.exists() else [sys.executable, "-m", "council.cli"]
    env = {**os.environ, "COUNCIL_HOME": str(tmp_path / "home")}
    run = subprocess.run([*command, *argv, "--config", str(tmp_path / "bad.toml")], capture_output=True, text=True,
                         cwd=REPO, env=env, timeout=120)
    assert run.returncode == 2, run.stderr
    assert run.stderr.splitlines() == [f"council: configuration error: server.port must be int (an integer), "
                                       f"got a boolean (from config file {tmp_path / 'bad.toml'})"]
    assert run.stdout == "" and not (tmp_path / "home").exists()  # no model converted, nothing written


def test_cli_env_type_error_exits_2(tmp_path):
    env = {**os.environ, "COUNCIL_HOME": str(tmp_path / "home"), "COUNCIL__SERVER__API_KEY": "123456",
           "COUNCIL__SERVER__MAX_BODY_BYTES": "lots"}
    command = [str(COUNCIL_BIN)] if COUNCIL_BIN.exists() else [sys.executable, "-m", "council.cli"]
    run = subprocess.run([*command, "serve"], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert run.returncode == 2 and len(run.stderr.splitlines()) == 1
    assert "server.max_body_bytes must be int" in run.stderr and "COUNCIL__SERVER__MAX_BODY_BYTES" in run.stderr


@pytest.mark.parametrize("name, value", [("server.request_timeout_seconds", 0), ("server.request_timeout_seconds", -1),
                                         ("alerts.timeout_seconds", 0), ("alerts.retries", 0)])
def test_out_of_range_settings_are_refused(make_settings, name, value):
    with pytest.raises(ValueError, match=name.split(".")[1]):
        make_settings(**{name: value})
