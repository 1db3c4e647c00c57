"""`council harvest` end to end on a real MemoryStore, with the autogen council on the scripted provider."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from council.core import exitcodes
from council.memory.embedder import Embedder
from council.memory.schema import ExchangeRecord, Feedback
from council.memory.store import MemoryStore
from harvest.config import HarvestConfig
from harvest.main import cli, harvest
from harvest.output import append_jsonl
from tests.fakes import Script, install_scripted

DAY = datetime(2026, 11, 21, tzinfo=UTC)
MODELS = ["scripted/m1", "scripted/m2", "scripted/m3"]
HARVEST_FIELDS = {"instruction", "input", "output", "reasoning", "quality_score", "record_id", "votes", "models",
                  "source", "created_at"}
ANSWERS = {"France": "Paris", "Spain": "Madrid", "2+2": "4", "reverse": "Use reversed(items) or items[::-1].",
           "Italy": "Rome", "Peru": "Lima"}


@pytest.fixture(scope="module")
def embedder():
    return Embedder()


def failure(query: str, answer: str = "I am not sure.", confidence: float = 0.3, hours: float = 12,
            **feedback) -> ExchangeRecord:
    return ExchangeRecord(query, answer, confidence, False, "local/smollm2", created_at=DAY + timedelta(hours=hours),
                          feedback=Feedback(**feedback) if feedback else None)


def add(settings, embedder, *records: ExchangeRecord) -> None:
    store = MemoryStore.open(settings.paths.memory)
    try:
        store.add_many([(r, embedder.embed([r.query])[0]) for r in records])
    finally:
        store.close()


def stored(settings, record_id):
    store = MemoryStore.open(settings.paths.memory)
    try:
        return store.get(record_id)
    finally:
        store.close()


def config(settings, **kwargs) -> HarvestConfig:
    return HarvestConfig(settings=settings, **{"since": DAY, "until": DAY + timedelta(days=1), "models": MODELS,
                                               **kwargs})


def council_answers(fail_on: str | None = None, malformed: bool = False):
    """Every member proposes the right answer for the question (from ANSWERS) and votes for candidate 1."""

    def respond(model, messages):
        prompt = messages[-1]["content"]
        if fail_on and fail_on in prompt:
            return Script(error="upstream 503")
        if "judged correct" in messages[0]["content"]:  # asked to word a user's correction: it cannot
            return Script("I am not sure.")
        if "member" not in messages[0]["content"]:  # augmentation (paraphrases, statements): none usable
            return Script("I am not sure.")
        if "VOTE:" in prompt:
            return Script("VOTE: 1")
        if malformed:
            return Script("I think the answer is probably fine.")
        question = prompt.split("BAD ANSWER")[0]
        answer = next((a for key, a in ANSWERS.items() if key in question), "A careful, corrected answer.")
        member = re.search(r"member (\d+) of", messages[0]["content"]).group(1)
        return Script(f"REASONING: Member {member} checked the question against known facts step by step and "
                      f"found the earlier answer wrong. ANSWER: {answer}")

    return install_scripted(respond=respond)


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_window_priority_limit_and_marks(make_settings, embedder):
    settings = make_settings()
    fixed = failure("Capital of France?", "Lyon", 0.9, correction="Paris")
    thumbs = failure("Capital of Spain?", "Barcelona", 0.8, thumbs="down")
    rated = failure("Capital of Peru?", "Cusco", 0.85, rating=1)
    lowest = failure("Capital of Italy?", "Milan", 0.1)
    low = failure("What is 2+2?", "5", 0.5)
    outside = failure("Capital of Italy, again?", "Milan", 0.1, hours=-2)  # the day before
    ok = ExchangeRecord("Hi", "Hello!", 0.95, True, "local/smollm2", created_at=DAY + timedelta(hours=1))
    done = failure("Capital of Germany?", "Munich", 0.1, hours=3)
    add(settings, embedder, fixed, thumbs, rated, lowest, low, outside, ok, done)
    store = MemoryStore.open(settings.paths.memory)
    store.mark_harvested([done.id], DAY)
    store.close()
    council_answers()

    report = await harvest(config(settings, max_records=4))

    assert report.exit_code == exitcodes.OK
    assert (report.found, report.selected, report.deferred, report.kept) == (5, 4, 1, 4)
    rows = lines(settings.paths.training_data / "harvest_20261121.jsonl")
    # the four of highest priority were taken (lines are written as records finish, 8 deliberated at once)
    sources = {r["record_id"]: r["source"] for r in rows}
    assert sources == {fixed.id: "correction", thumbs.id: "thumbs_down", rated.id: "thumbs_down",
                       lowest.id: "low_confidence"}
    for rid in (fixed.id, thumbs.id, rated.id, lowest.id):
        assert stored(settings, rid).harvested_at is not None
    for rid in (low.id, outside.id, ok.id):
        assert stored(settings, rid).harvested_at is None
    assert stored(settings, done.id).harvested_at == DAY  # untouched

    again = await harvest(config(settings, max_records=4))  # the deferred one, and nothing twice
    assert (again.found, again.kept) == (1, 1)
    assert [r["record_id"] for r in lines(settings.paths.training_data / "harvest_20261121.jsonl")][-1] == low.id
    assert (await harvest(config(settings))).exit_code == exitcodes.NOTHING_TO_DO


async def test_near_duplicates_collapse_into_one_rewrite(make_settings, embedder):
    settings = make_settings()
    first = failure("How do I reverse a list in Python?", "Use list.sort().", 0.2)
    second = failure("how do i reverse a list in python", "sorted()", 0.4, hours=13)
    other = failure("What is 2+2?", "5", 0.3)
    add(settings, embedder, first, second, other)
    council_answers()

    report = await harvest(config(settings))

    assert (report.found, report.collapsed, report.rewritten, report.kept) == (3, 1, 2, 2)
    rows = lines(settings.paths.training_data / "harvest_20261121.jsonl")
    assert {r["record_id"] for r in rows} == {first.id, other.id}  # the lower-confidence duplicate leads
    assert stored(settings, second.id).harvested_at is not None  # marked with its lead
    strict = await harvest(config(settings, dedupe_similarity=1.0))
    assert strict.found == 0


async def test_jsonl_fields_pii_and_dpo(make_settings, embedder):
    settings = make_settings()
    record = failure("Capital of France? reply to jo.doe+x@mail.example.com or +44 20 7946 0958", "Lyon, see 10.0.0.7",
                     correction="Paris")
    add(settings, embedder, record)
    provider = council_answers()

    report = await harvest(config(settings))

    [row] = lines(settings.paths.training_data / "harvest_20261121.jsonl")
    assert set(row) == HARVEST_FIELDS | {"correction"} and row["correction"] == "Paris"
    assert row["instruction"] == "Capital of France? reply to [EMAIL] or [PHONE]"
    assert (row["input"], row["output"], row["source"], row["models"]) == ("", "Paris", "correction", MODELS)
    assert row["reasoning"].startswith("Member 1 checked")
    assert row["votes"] == {"for": 3, "cast": 3, "ballots": [1, 1, 1]}
    assert 0.7 <= row["quality_score"] <= 1.0 and row["record_id"] == record.id
    assert datetime.fromisoformat(row["created_at"]).tzinfo is not None
    [dpo] = lines(settings.paths.training_data / "dpo_20261121.jsonl")
    assert dpo == {"prompt": row["instruction"], "chosen": "Paris", "rejected": "Lyon, see [IP]", "record_id": record.id}
    sent = json.dumps([messages for _, messages in provider.calls])
    assert "jo.doe" not in sent and "7946" not in sent and "10.0.0.7" not in sent
    assert report.redactions == {"EMAIL": 1, "PHONE": 1, "IP": 1}
    summary = json.loads((settings.paths.logs / "harvest_last.json").read_text())
    assert summary["kept"] == 1 and summary["attempted"] == 1 and summary["rewrite_success_rate"] == 1.0
    assert summary["exit_code"] == 0 and summary["files"] == ["harvest_20261121.jsonl"]


async def test_second_run_same_day_adds_only_new_records(make_settings, embedder):
    settings = make_settings()
    first = failure("Capital of France?", "Lyon")
    add(settings, embedder, first)
    council_answers()
    assert (await harvest(config(settings))).kept == 1
    path = settings.paths.training_data / "harvest_20261121.jsonl"
    before = path.read_text()

    second = failure("Capital of Italy?", "Milan", hours=20)
    add(settings, embedder, second)
    report = await harvest(config(settings))

    assert (report.found, report.kept) == (1, 1)
    assert path.read_text().startswith(before)
    assert [r["record_id"] for r in lines(path)] == [first.id, second.id]
    assert len(lines(settings.paths.training_data / "dpo_20261121.jsonl")) == 2


async def test_written_but_unmarked_record_is_only_marked(make_settings, embedder):
    """A run that died between writing the JSONL and marking: the next run marks, rewrites nothing."""
    settings = make_settings()
    record = failure("Capital of France?", "Lyon")
    add(settings, embedder, record)
    append_jsonl(settings.paths.training_data / "harvest_20261121.jsonl", [{"record_id": record.id, "output": "Paris"}])
    provider = council_answers()

    report = await harvest(config(settings))

    assert (report.recovered, report.attempted, len(provider.calls)) == (1, 0, 0)
    assert stored(settings, record.id).harvested_at is not None
    assert len(lines(settings.paths.training_data / "harvest_20261121.jsonl")) == 1


async def test_provider_error_skips_record_until_next_run(make_settings, embedder):
    settings = make_settings()
    good, bad = failure("Capital of France?", "Lyon"), failure("Capital of Spain?", "Barcelona", 0.1)
    add(settings, embedder, good, bad)
    council_answers(fail_on="Spain")

    report = await harvest(config(settings))

    assert (report.errors, report.kept, report.exit_code) == (1, 1, exitcodes.OK)
    assert stored(settings, bad.id).harvested_at is None
    council_answers()
    retry = await harvest(config(settings))
    assert (retry.found, retry.kept) == (1, 1)
    assert stored(settings, bad.id).harvested_at is not None


async def test_every_record_failing_at_the_provider_exits_1(make_settings, embedder):
    settings = make_settings()
    add(settings, embedder, failure("Capital of Spain?", "Barcelona"))
    council_answers(fail_on="Spain")
    report = await harvest(config(settings))
    assert (report.errors, report.exit_code) == (1, exitcodes.FAILURE)


async def test_all_malformed_leaves_record_unharvested(make_settings, embedder):
    settings = make_settings()
    record = failure("Capital of France?", "Lyon")
    add(settings, embedder, record)
    council_answers(malformed=True)

    report = await harvest(config(settings))

    assert (report.dropped_malformed, report.no_candidate, report.kept) == (3, 1, 0)
    assert report.exit_code == exitcodes.NOTHING_TO_DO
    assert stored(settings, record.id).harvested_at is None
    assert not (settings.paths.training_data / "harvest_20261121.jsonl").exists()


async def test_low_quality_is_rejected_but_marked(make_settings, embedder):
    settings = make_settings()
    record = failure("Capital of France?", "Lyon")
    add(settings, embedder, record)
    council_answers()
    report = await harvest(config(settings, min_quality=0.99))
    assert (report.rewritten, report.rejected_low_quality, report.kept) == (1, 1, 0)
    assert report.exit_code == exitcodes.NOTHING_TO_DO
    assert stored(settings, record.id).harvested_at is not None


def test_failed_write_keeps_old_file_intact(tmp_path):
    path = tmp_path / "harvest_20261121.jsonl"
    append_jsonl(path, [{"record_id": "a", "output": "one"}])
    before = path.read_bytes()
    with pytest.raises(TypeError):  # the second row cannot be serialised halfway through the write
        append_jsonl(path, [{"record_id": "b", "output": "two"}, {"record_id": "c", "output": object()}])
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind
    assert append_jsonl(path, [{"record_id": "a", "output": "dup"}]) == 0


async def test_unwritable_output_fails_the_run_without_marking(make_settings, embedder):
    settings = make_settings()
    record = failure("Capital of France?", "Lyon")
    add(settings, embedder, record)
    (settings.paths.training_data / "dpo_20261121.jsonl").mkdir(parents=True)  # cannot be replaced by a file
    council_answers()

    report = await harvest(config(settings))

    assert report.exit_code == exitcodes.FAILURE and "StorageError" in report.failure
    assert stored(settings, record.id).harvested_at is None
    assert json.loads((settings.paths.logs / "harvest_last.json").read_text())["exit_code"] == 1


def test_cli_summary_line_exit_codes_and_usage(make_settings, embedder, capsys):
    settings = make_settings()
    add(settings, embedder, failure("Capital of France?", "Lyon"))
    council_answers()
    argv = ["--since", "2026-11-21", "--until", "2026-11-22T00:00:00Z", "--models", ",".join(MODELS),
            "--max-records", "5", "--min-quality", "0.5", "--dedupe-similarity", "0.9"]
    assert cli(argv, settings) == exitcodes.OK
    out = capsys.readouterr().out.strip()
    assert re.fullmatch(r"harvest: found=1 collapsed=0 rewritten=1 kept=1 corrections=0 paraphrases=0 statements=0 "
                        r"reverse=0 held_out=0 dropped_malformed=0 errors=0 mean_quality=\d\.\d{3} "
                        r"seconds=\d+\.\d augment_seconds=\d+\.\d", out), out
    assert cli(argv, settings) == exitcodes.NOTHING_TO_DO
    assert cli(["--since", "2026-11-22", "--until", "2026-11-21"], settings) == exitcodes.USAGE
    assert cli(["--since", "yesterday"], settings) == exitcodes.USAGE
    assert cli(["--agents", "2", "--models", "a/x,b/y,c/z"], settings) == exitcodes.USAGE
    assert "must be before" in capsys.readouterr().err


def test_config_defaults_and_validation():
    cfg = HarvestConfig(since="2026-11-21")
    assert cfg.since == DAY and cfg.until > cfg.since
    default = HarvestConfig()  # every failure not harvested yet, up to now
    assert default.since.year == 1970 and abs((datetime.now(UTC) - default.until).total_seconds()) < 60
    assert HarvestConfig(agents=5, models=["a/x", "b/y"]).member_models == ["a/x", "b/y", "a/x", "b/y", "a/x"]
    for bad in ({"max_records": 0}, {"min_quality": 1.5}, {"dedupe_similarity": 0}, {"models": [" "]},
                {"until": "2026-01-01T00:00:00+05:00", "since": "2026-01-01"}):
        with pytest.raises(ValueError):
            HarvestConfig(**bad)


async def test_an_empty_window_says_how_many_failures_lie_outside_it(make_settings, embedder, caplog):
    settings = make_settings()
    add(settings, embedder, failure("Capital of France?", "Lyon", hours=30))  # the day after the window
    report = await harvest(config(settings))
    assert report.exit_code == exitcodes.NOTHING_TO_DO and report.found == 0 and report.outside_window == 1
    assert "outside_window=1" in report.summary_line()
    assert any("1 lie outside it" in r.getMessage() and "--since" in r.getMessage() for r in caplog.records)
    council_answers()
    everything = await harvest(HarvestConfig(settings=settings, models=MODELS))  # the default window
    assert everything.found == 1 and everything.kept == 1
