"""`council nightly`: the whole loop on real stores, a real trainer and real deploy checks; the lock; alerts;
stages that raise; work an earlier night left pending.

Stand-in stages are small real callables passed to ``main(config, stages)``; the webhook is a real local HTTP
server.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field, replace
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from council.core import exitcodes
from council.memory.embedder import Embedder
from cron.config import NightlyConfig, deploy_config
from cron.nightly import BUSY, STAGES, Stage, cli, main, nightly_lock
from deploy.main import DeployConfig, pick_version
from deploy.registry import Registry, RegistryState
from tests.test_harvest_pipeline import DAY, add, council_answers, failure
from training.artifacts import mark_consumed
from training.data import pending_files, read_harvest

CLOSED_PORT_URL = "http://127.0.0.1:9"  # discard port: nothing answers, deploy runs unmonitored


@pytest.fixture
def webhook():
    """A real local HTTP server standing in for Slack; collects the JSON bodies it receives."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/services/T000/B000/XXXX", received
    server.shutdown()


def texts(received: list[dict]) -> str:
    return json.dumps(received)


def test_nothing_to_harvest_is_a_normal_night(make_settings, webhook):
    url, received = webhook
    settings = make_settings(**{"alerts.webhook_url": url})
    code = main(NightlyConfig(settings=settings, server_url=CLOSED_PORT_URL))
    assert code == exitcodes.OK
    summary = json.loads((settings.paths.logs / "nightly_summary.json").read_text())
    assert summary["result"] == "nothing_to_do" and summary["stages"] == {"harvest": exitcodes.NOTHING_TO_DO}
    assert any("Nightly loop: nothing_to_do" in texts([r]) for r in received)
    assert main(NightlyConfig(settings=settings, server_url=CLOSED_PORT_URL)) == exitcodes.OK
    history = [json.loads(line) for line in (settings.paths.logs / "nights.jsonl").read_text().splitlines()]
    assert [n["result"] for n in history] == ["nothing_to_do"] * 2  # one line a night, for /loop's plots
    assert history[0]["deployed"] is None and history[0]["seconds"]["total"] >= 0
    assert list(settings.paths.logs.glob("nightly-*/harvest.log"))


def test_second_run_is_refused_while_the_lock_is_held(make_settings, capsys):
    settings = make_settings()
    with nightly_lock(settings.home) as held:
        assert held
        assert cli([], settings) == BUSY
    assert "another nightly run is in progress" in capsys.readouterr().err
    with nightly_lock(settings.home) as held_again:
        assert held_again


def test_preflight_failure_alerts_and_exits_1(make_settings, webhook):
    url, received = webhook
    settings = make_settings(**{"alerts.webhook_url": url})
    code = main(NightlyConfig(settings=settings, server_url=CLOSED_PORT_URL, min_free_gb=1e9))
    assert code == exitcodes.FAILURE
    assert "pipeline_error" in texts(received) or "Nightly loop failed" in texts(received)
    assert url not in (settings.paths.logs / "nightly_summary.json").read_text()


@pytest.mark.slow
def test_full_night_harvests_trains_and_deploys(make_settings, base_model_dir, webhook):
    url, received = webhook
    settings = make_settings(**{"model.source": str(base_model_dir), "alerts.webhook_url": url})
    queries = ["What is the capital of France?", "What is the capital of Spain?", "What is 2+2?",
               "How do I reverse a list in Python?", "What is the capital of Italy?", "What is the capital of Peru?"]
    add(settings, Embedder(), *(failure(q, hours=i + 1, thumbs="down") for i, q in enumerate(queries)))
    council_answers()
    config = NightlyConfig(settings=settings, server_url=CLOSED_PORT_URL, since=DAY.isoformat(),
                           until=(DAY + timedelta(days=1)).isoformat(), harvest_models="scripted/m1,scripted/m2",
                           fresh=True, epochs=1, learning_rate=2e-4, min_examples=5)  # a light touch: this
    # night's data holds "What is 2+2?", in scope of the canary's "What is 2 + 2?", and the test is about the loop
    assert main(config) == exitcodes.OK
    summary = json.loads((settings.paths.logs / "nightly_summary.json").read_text())
    assert summary["result"] == "deployed_no_gain", summary  # thumbs-downs only: no corrections to probe
    assert "nothing measured" in summary["reason"] and "no held-out paraphrases" in summary["gates"]["probes"]["skipped"]
    assert summary["stages"] == {"harvest": 0, "train": 0, "deploy": 0}
    current = settings.paths.current_adapter.resolve()
    assert (current / "adapter_model.safetensors").is_file()
    metrics = json.loads((settings.paths.logs / "loop_metrics.json").read_text())
    assert metrics["training_completed_total"] == 1 and metrics["deployment_success_total"] == 1
    (night,) = [json.loads(line) for line in (settings.paths.logs / "nights.jsonl").read_text().splitlines()]
    assert night["deployed"] == current.name == night["trained"] and night["failures"] == len(queries)
    assert night["corrections"] == 0 and night["train_lines"]["train"] > 0 and night["seconds"]["train"] > 0
    assert queries[0] not in json.dumps(night)  # counts and versions only: nothing for erasure to scrub
    assert metrics["training_loss"] > 0 and 0 < metrics["agent0_rewrite_success_rate"] <= 1
    sent = texts(received)
    for event in ("training_done", "deploy_success", "Nightly loop: deployed_no_gain"):
        assert event in sent or event.replace("_", " ") in sent.lower(), event


HARVEST, TRAIN, DEPLOY = STAGES
V1 = "20250101-010101-aaaaaa"


@dataclass
class Returns:
    """A stage that returns a fixed exit code and counts its runs."""

    code: int
    runs: int = 0

    def __call__(self, config: NightlyConfig) -> int:
        self.runs += 1
        return self.code


@dataclass
class Raises:
    """A stage with a bug: it raises instead of returning an exit code."""

    error: Exception

    def __call__(self, config: NightlyConfig) -> int:
        raise self.error


@dataclass
class Trainer:
    """Stands in for `council train`: marks the pending harvest files trained on and publishes a version folder."""

    version: str = V1

    def __call__(self, config: NightlyConfig) -> int:
        paths = config.settings.paths
        mark_consumed(paths.training_data, read_harvest(pending_files(paths.training_data), 0.0).files)
        publish_version(paths.loras, self.version)
        return exitcodes.OK


@dataclass
class Deployer:
    """Stands in for `council deploy`: records the version deploy would pick as deployed in the registry."""

    deployed: list[str] = field(default_factory=list)

    def __call__(self, config: NightlyConfig) -> int:
        registry = Registry(config.settings.paths.loras)
        state = registry.load()
        version = pick_version(registry.versions(), state)
        if version is None:
            return exitcodes.NOTHING_TO_DO
        registry.save(RegistryState(deployed=[*state.deployed, version]))
        self.deployed.append(version)
        return exitcodes.OK


def publish_version(loras: Path, version: str) -> None:
    """A ``loras/<version>/`` with metadata but no weights: listed as a new version, refused by a real deploy."""
    (loras / version).mkdir(parents=True)
    (loras / version / "metadata.json").write_text(json.dumps({"version": version}))


def harvest_file(settings, day: str = "20250101") -> Path:
    """A harvest file an earlier night wrote and no training consumed."""
    folder = settings.paths.ensure().training_data
    line = {"instruction": "What is 2+2?", "input": "", "output": "4", "reasoning": "", "quality_score": 0.9,
            "record_id": "rec_1"}
    path = folder / f"harvest_{day}.jsonl"
    path.write_text(json.dumps(line) + "\n")
    return path


def summary_of(settings) -> dict:
    return json.loads((settings.paths.logs / "nightly_summary.json").read_text())


@pytest.mark.parametrize("crashing", ["harvest", "train", "deploy"])
def test_a_stage_that_raises_fails_the_night_with_summary_and_alert(make_settings, webhook, caplog, crashing):
    url, received = webhook
    settings = make_settings(**{"alerts.webhook_url": url})
    error = {"harvest": KeyError("record_id"), "train": OSError(28, "No space left on device"),
             "deploy": RuntimeError(f"bug near {url}")}[crashing]
    stages = [Stage(stage.name, Raises(error) if stage.name == crashing else Returns(exitcodes.OK))
              for stage in STAGES]
    code = main(NightlyConfig(settings=settings, server_url=CLOSED_PORT_URL), stages)

    assert code == exitcodes.FAILURE
    summary = summary_of(settings)
    order = [stage.name for stage in STAGES]
    assert summary["stages"] == {name: 0 for name in order[:order.index(crashing)]} | {crashing: 1}
    assert summary["result"] == "failed" and summary["exit_code"] == 1
    [record] = summary["errors"]
    assert record["stage"] == crashing and record["type"] == type(error).__name__
    assert record["message"] == str(error).replace(url, "<webhook>")
    assert "test_nightly.py" in record["where"] and record["log"].endswith(f"{crashing}.log")
    assert summary["reason"].startswith(f"{crashing} raised {type(error).__name__}")
    assert "cleanup" in summary and "metrics" in summary  # the night still cleans up
    assert url not in json.dumps(summary)
    stage_log = Path(record["log"]).read_text()
    assert stage_log.count("Traceback") == 1 and caplog.text.count("Traceback") == 1
    failed = [r for r in received if "Nightly loop failed" in texts([r])]
    assert len(failed) == 1 and f"{crashing} error" in texts(failed) and type(error).__name__ in texts(failed)
    assert url not in texts(received)


def test_a_broken_state_fails_deploy_and_cleanup_and_the_cli_exits_1(make_settings, webhook, capsys):
    """The real stages on a broken state: loras/current is a folder, not the link deploy manages.

    Harvest finds nothing; whether deploy has pending work cannot be told, so deploy runs and fails (exit 1);
    cleanup then raises on the same state, which the summary records too."""
    url, received = webhook
    settings = make_settings(**{"alerts.webhook_url": url})
    (settings.paths.ensure().loras / "current").mkdir()
    assert cli(["--server-url", CLOSED_PORT_URL], settings) == exitcodes.FAILURE
    assert capsys.readouterr().out.startswith("nightly: failed (deploy exited 1")
    summary = summary_of(settings)
    assert summary["stages"] == {"harvest": exitcodes.NOTHING_TO_DO, "deploy": exitcodes.FAILURE}
    assert summary["pending"]["deploy"].startswith("unknown (CouncilError")
    assert summary["reason"].startswith("deploy exited 1")
    assert [(e["stage"], e["type"]) for e in summary["errors"]] == [("cleanup", "CouncilError")]
    assert "not a symlink" in summary["errors"][0]["message"]
    assert "Nightly loop failed" in texts(received) and "cleanup error" in texts(received)


def test_harvest_with_nothing_new_still_trains_and_deploys_pending_work(make_settings, webhook):
    url, received = webhook
    settings = make_settings(**{"alerts.webhook_url": url})
    harvest_file(settings)
    deployer = Deployer()
    stages = [HARVEST, replace(TRAIN, run=Trainer()), replace(DEPLOY, run=deployer)]
    config = NightlyConfig(settings=settings, server_url=CLOSED_PORT_URL)

    assert main(config, stages) == exitcodes.OK  # the real harvest finds no failures
    summary = summary_of(settings)
    assert summary["stages"] == {"harvest": exitcodes.NOTHING_TO_DO, "train": exitcodes.OK, "deploy": exitcodes.OK}
    assert summary["pending"] == {"train": "1 harvest file(s) never trained on: harvest_20250101.jsonl"}
    assert summary["result"] == "deployed_no_gain" and "ran train on work an earlier night left pending" in summary["reason"]
    assert deployer.deployed == [V1]
    assert f"Trained adapter {V1}" in texts(received) and "Nightly loop: deployed_no_gain" in texts(received)

    assert main(config, stages) == exitcodes.OK  # the next night: nothing new, nothing pending
    summary = summary_of(settings)
    assert summary["stages"] == {"harvest": exitcodes.NOTHING_TO_DO} and summary["pending"] == {}
    assert summary["result"] == "nothing_to_do" and deployer.deployed == [V1]


def test_an_adapter_never_deployed_is_deployed_by_the_next_night(make_settings, webhook):
    """Real stages: an earlier night trained V1 but died before deploying it; tonight's deploy picks it up."""
    url, received = webhook
    settings = make_settings(**{"alerts.webhook_url": url})
    publish_version(settings.paths.ensure().loras, V1)
    config = NightlyConfig(settings=settings, server_url=CLOSED_PORT_URL)

    assert main(config) == exitcodes.FAILURE  # deploy ran on V1 and refused it: it has no weights
    summary = summary_of(settings)
    assert summary["stages"] == {"harvest": exitcodes.NOTHING_TO_DO, "deploy": exitcodes.FAILURE}
    assert summary["pending"] == {"deploy": f"adapter {V1} was trained but never deployed"}
    deploy_summary = json.loads((settings.paths.logs / "deploy_summary.json").read_text())
    assert deploy_summary["version"] == V1 and deploy_summary["decision"] == "refused"
    assert Registry(settings.paths.loras).load().failed == [V1]

    assert main(config) == exitcodes.OK  # a refused version is not pending any more
    assert summary_of(settings)["stages"] == {"harvest": exitcodes.NOTHING_TO_DO}


def test_train_with_nothing_new_still_deploys_an_earlier_adapter(make_settings):
    settings = make_settings()
    publish_version(settings.paths.ensure().loras, V1)
    deployer = Deployer()
    stages = [Stage("harvest", Returns(exitcodes.OK)), Stage("train", Returns(exitcodes.NOTHING_TO_DO)),
              replace(DEPLOY, run=deployer)]
    assert main(NightlyConfig(settings=settings, server_url=CLOSED_PORT_URL), stages) == exitcodes.OK
    summary = summary_of(settings)
    assert summary["stages"] == {"harvest": 0, "train": 3, "deploy": 0} and deployer.deployed == [V1]
    assert summary["result"] == "deployed_no_gain" and summary["reason"].startswith("train: nothing new; ran deploy")


def test_a_stage_after_a_productive_one_runs_without_asking_for_pending_work(make_settings):
    settings = make_settings()
    later = Returns(exitcodes.OK)
    stages = [Stage("harvest", Returns(exitcodes.OK)), Stage("train", later, pending=Raises(AssertionError()))]
    assert main(NightlyConfig(settings=settings, server_url=CLOSED_PORT_URL), stages) == exitcodes.OK
    assert later.runs == 1 and summary_of(settings)["result"] == "done"


def test_deploy_options_pass_through_with_the_deploy_defaults(make_settings, capsys):
    settings = make_settings()
    names = ("max_success_drop", "max_latency_ratio", "max_p95_latency_ms", "min_success_rate", "min_probe_pass_rate")
    night, deploy = NightlyConfig(settings=settings), DeployConfig(settings)
    assert [getattr(night, n) for n in names] == [getattr(deploy, n) for n in names] == [0.15, 3.0, 0.0, 0.0, 0.8]
    chosen = dict(zip(names, (0.3, 5.0, 2000.0, 0.6, 0.5), strict=True))
    forwarded = deploy_config(NightlyConfig(settings=settings, server_url=CLOSED_PORT_URL, **chosen))
    assert {n: getattr(forwarded, n) for n in names} == chosen and forwarded.server_url == CLOSED_PORT_URL
    for flag, value, message in (("--max-success-drop", "1.5", "max_success_drop must be within 0..1"),
                                 ("--min-probe-pass-rate", "-0.1", "min_probe_pass_rate must be within 0..1"),
                                 ("--max-latency-ratio", "0.5", "max_latency_ratio must be 0 (off) or >= 1")):
        assert cli(["--server-url", CLOSED_PORT_URL, flag, value], settings) == exitcodes.USAGE  # before any stage
        assert message in capsys.readouterr().err
