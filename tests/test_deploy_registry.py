"""The adapter registry and the atomic ``loras/current`` swap, on real folders and real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from council.core.exitcodes import NOTHING_TO_DO, OK, USAGE
from council.engine.adapter_files import check_adapter_folder
from deploy.registry import Registry, RegistryState, cli_list
from deploy.rollback import RollbackConfig
from deploy.rollback import main as rollback_main
from deploy.swap import TEMP_PREFIX, deploy_lock, point_current, sweep_temp_links
from tests.conftest import REPO

V1, V2, V3 = "20250101-010101-aaaaaa", "20250102-010101-bbbbbb", "20250103-010101-cccccc"


def write_adapter(loras: Path, version: str, parent: str | None = None, losses=(1.5, 1.2), weights=True) -> Path:
    """A structurally complete adapter folder (small real safetensors) with contract metadata."""
    folder = loras / version
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    if weights:
        save_file({"lora_A.weight": torch.zeros(4, 8), "lora_B.weight": torch.zeros(8, 4)},
                  str(folder / "adapter_model.safetensors"))
    meta = {"version": version, "base_model_id": "test", "base_model_fingerprint": "fp", "parent": parent,
            "created_at": f"{version[:4]}-{version[4:6]}-{version[6:8]}T01:01:01+00:00",
            "loss": {"train": [2.0, losses[0]], "validation": [2.1, losses[1]]},
            "examples": {"train": 2, "rehearsal": 0, "validation": 0},
            "learned": [{"question": f"What is {version[-6:]}?", "answer": "Paris."},
                        {"question": "Capital of Peru?", "answer": "Lima."}]}
    (folder / "metadata.json").write_text(json.dumps(meta))
    return folder


def test_listing_shows_states_from_real_folders(make_settings, capsys):
    settings = make_settings()
    loras = settings.paths.ensure().loras
    for version, parent in ((V1, None), (V2, V1), (V3, V2)):
        write_adapter(loras, version, parent)
    write_adapter(loras, "20250104-010101-dddddd", weights=False)  # incomplete
    (loras / ".tmp-20250105-010101-eeeeee").mkdir()  # training in progress: not a version
    os.symlink(V1, loras / f"{TEMP_PREFIX}999-deadbeef")  # stray link of a killed swap: ignored
    point_current(loras, V2)
    registry = Registry(loras)
    registry.save(RegistryState(current=V2, previous=V1, failed=[V3], deployed=[V1, V2]))

    states = {info.version: info.state for info in registry.versions()}
    assert states == {V1: "previous", V2: "current", V3: "failed", "20250104-010101-dddddd": "new"}

    assert cli_list([], settings) == OK
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["VERSION", "CREATED", "PARENT", "EXAMPLES", "TRAIN", "LOSS", "VAL", "LOSS", "STATE"]
    row_v2 = next(line for line in lines if line.startswith(V2))
    assert row_v2.split()[1:] == ["2025-01-02T01:01:01", V1, "2", "1.5000", "1.2000", "current"]
    learned = lines[lines.index(f"{V2} learned:") + 1:lines.index(f"{V2} learned:") + 3]
    assert learned == [f"  'What is {V2[-6:]}?' -> 'Paris.'", "  'Capital of Peru?' -> 'Lima.'"]
    assert "incomplete" in next(line for line in lines if line.startswith("20250104"))
    assert f"serving: {V2}" in out
    assert ".tmp-" not in out and TEMP_PREFIX not in out

    assert cli_list(["--json"], settings) == OK
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["version"] for r in rows][:3] == [V1, V2, V3]
    assert rows[1]["val_loss"] == 1.2 and rows[1]["parent"] == V1
    assert rows[1]["examples"] == 2 and rows[1]["learned"][1] == {"question": "Capital of Peru?", "answer": "Lima."}


def test_registry_trusts_the_link_when_a_crash_left_them_apart(make_settings):
    loras = make_settings().paths.ensure().loras
    write_adapter(loras, V1)
    write_adapter(loras, V2)
    registry = Registry(loras)
    registry.save(RegistryState(current=V1, deployed=[V1]))
    point_current(loras, V2)  # the process died before it wrote registry.json
    state = registry.load()
    assert (state.current, state.previous) == (V2, V1)
    assert state.deployed == [V1, V2]


def test_point_current_refuses_incomplete_target_and_keeps_old_link(make_settings):
    loras = make_settings().paths.ensure().loras
    write_adapter(loras, V1)
    write_adapter(loras, V2, weights=False)
    point_current(loras, V1)
    with pytest.raises(Exception, match="no adapter weights"):
        point_current(loras, V2)
    assert os.readlink(loras / "current") == V1
    point_current(loras, None)  # the bare base model
    assert not (loras / "current").is_symlink()


def test_deploy_lock_is_exclusive(make_settings):
    loras = make_settings().paths.ensure().loras
    with deploy_lock(loras):
        child = subprocess.run(
            [sys.executable, "-c", "import sys; from pathlib import Path; from deploy.swap import deploy_lock\n"
             "try:\n with deploy_lock(Path(sys.argv[1])): sys.exit(0)\nexcept Exception as e:\n"
             " print(e); sys.exit(5)", str(loras)],
            cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    assert child.returncode == 5, child.stderr
    assert "another deploy or rollback" in child.stdout


SWAPPER = """
import sys
from pathlib import Path
from deploy.swap import point_current
loras = Path(sys.argv[1])
(loras / "started").touch()
i = 0
while True:
    point_current(loras, sys.argv[2 + i % 2])
    i += 1
"""


def test_swap_survives_sigkill_and_readers_never_see_a_gap(make_settings):
    loras = make_settings().paths.ensure().loras
    for version in (V1, V2):
        write_adapter(loras, version)
    point_current(loras, V1)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for round_number in range(4):
        (loras / "started").unlink(missing_ok=True)
        proc = subprocess.Popen([sys.executable, "-c", SWAPPER, str(loras), V1, V2], cwd=REPO, env=env)
        try:
            deadline = time.monotonic() + 60
            while not (loras / "started").exists():
                assert time.monotonic() < deadline, "swapper did not start"
                time.sleep(0.05)
            seen = set()
            for _ in range(300 + 50 * round_number):  # read while the child swaps as fast as it can
                target = os.readlink(loras / "current")
                check_adapter_folder((loras / target).resolve())
                seen.add(target)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert proc.returncode == -signal.SIGKILL
        link = loras / "current"
        assert link.is_symlink() and os.readlink(link) in (V1, V2)
        check_adapter_folder(link.resolve())
        assert seen <= {V1, V2}
        # a stray temporary link (if the kill hit between symlink and rename) never shows up as a version
        assert [i.version for i in Registry(loras).versions()] == [V1, V2]
        sweep_temp_links(loras)
        assert not list(loras.glob(f"{TEMP_PREFIX}*"))


def test_rollback_cli_paths_without_a_server(make_settings):
    settings = make_settings()
    loras = settings.paths.ensure().loras
    for version in (V1, V2, V3):
        write_adapter(loras, version)
    registry = Registry(loras)
    point_current(loras, V3)
    registry.save(RegistryState(current=V3, previous=V2, deployed=[V1, V2, V3]))
    dead = "http://127.0.0.1:9"  # nothing listens on the discard port

    assert rollback_main(RollbackConfig(settings, server_url=dead, confirm_seconds=0)) == OK
    state = registry.load()
    assert (state.current, state.previous, state.failed) == (V2, V1, [V3])
    assert (loras / V3).is_dir()  # the failed adapter is kept
    summary = json.loads((settings.paths.logs / "rollback_summary.json").read_text())
    assert summary["decision"] == "rolled_back" and summary["server"]["reachable"] is False

    assert rollback_main(RollbackConfig(settings, to="base", server_url=dead, confirm_seconds=0)) == OK
    assert not (loras / "current").is_symlink()
    assert registry.load().failed == [V3, V2]
    assert rollback_main(RollbackConfig(settings, server_url=dead, confirm_seconds=0)) == OK  # base -> V1
    assert os.readlink(loras / "current") == V1
    assert rollback_main(RollbackConfig(settings, to=V1, server_url=dead)) == NOTHING_TO_DO
    assert rollback_main(RollbackConfig(settings, to="20990101-000000-ffffff", server_url=dead)) == USAGE
    with pytest.raises(ValueError, match="not an adapter version"):
        RollbackConfig(settings, to="../etc")
