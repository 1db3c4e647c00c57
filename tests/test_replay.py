"""Bounded replay (training/replay.py) on real files: a continuing night replays at most replay_ratio x its own
lines, whole records, forgotten ones first, then those replayed longest ago; from the base model every line;
the state names records by id only, and erasing a record drops it from the state."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from council.core.paths import StatePaths
from council.memory import erasure
from council.memory.schema import ExchangeRecord
from training.replay import REPLAY_STATE, bounded, choose, forgotten_records, read_state, save_state


def lines(record: str, night: int) -> list[dict]:
    kinds = [None, "paraphrase", "statement"]
    return [{"record_id": record if kind is None else f"{record}#{kind}", "kind": kind, "night": night,
             "instruction": f"{record} {kind}", "output": f"answer of {record}"} for kind in kinds]


OLD = [line for n, r in enumerate(["rec_a", "rec_b", "rec_c", "rec_d", "rec_e"]) for line in lines(r, n)]


def records_of(chosen: list[dict]) -> list[str]:
    return [line["record_id"].split("#")[0] for line in chosen]


def test_forgotten_first_then_longest_ago_whole_records_correction_first():
    chosen = choose(OLD, 7, forgotten={"rec_d"}, last_replayed={"rec_a": 2, "rec_b": 1})
    # rec_d (forgotten), then never replayed rec_c, rec_e (oldest first); rec_b and rec_a wait
    assert records_of(chosen) == ["rec_d"] * 3 + ["rec_c"] * 3 + ["rec_e"]
    assert chosen[-1]["kind"] is None  # a record cut short keeps its correction line first
    assert all("_position" not in line for line in chosen)
    assert len(choose(OLD, 100, set(), {})) == len(OLD)


def test_bounded_rotates_through_every_record_and_keeps_state(tmp_path):
    data, logs = tmp_path / "training_data", tmp_path / "logs"
    data.mkdir()
    seen: list[list[str]] = []
    for _ in range(3):
        chosen, state = bounded(OLD, new_lines=10, ratio=0.6, paths_training_data=data, logs=logs, live=None,
                                continuing=True)
        assert len(chosen) == 6  # ceil(0.6 x 10): the budget, not the 15 old lines
        seen.append(sorted(set(records_of(chosen))))
        assert read_state(data)["night"] == len(seen) - 1  # written only once the version is published
        save_state(data, state, erased=set())
    assert seen[0] == ["rec_a", "rec_b"] and seen[1] == ["rec_c", "rec_d"] and seen[2] == ["rec_a", "rec_e"]
    state = json.loads((data / REPLAY_STATE).read_text())
    assert state["night"] == 3 and set(state["records"]) == {"rec_a", "rec_b", "rec_c", "rec_d", "rec_e"}
    assert "answer" not in (data / REPLAY_STATE).read_text()  # ids and nights only, never text
    everything, _ = bounded(OLD, 10, 0.6, data, logs, None, continuing=False)  # from the base model: all
    assert len(everything) == len(OLD)
    assert len(bounded(OLD, 10, 0.0, data, logs, None, continuing=True)[0]) == len(OLD)  # ratio 0: all
    _, state = bounded(OLD, 10, 0.6, data, logs, None, continuing=True)
    save_state(data, state, erased={"rec_b"})  # erased while the version trained: not written back
    assert "rec_b" not in read_state(data)["records"] and read_state(data)["night"] == 4
    (data / REPLAY_STATE).write_text('{"night": "x", "records": [1]}')
    assert read_state(data) == {"night": 0, "records": {}}  # malformed: an empty state, not a crash


def test_records_the_live_adapter_or_the_last_candidate_forgot_come_from_the_last_deploy(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    baseline = [{"record": "rec_b", "right": False, "adapter": "v2"}, {"record": "rec_c", "right": True, "adapter": "v2"},
                {"record": "rec_e", "right": False, "adapter": "v1"}]
    candidate = [{"record": "rec_d", "right": False, "adapter": "v3"}, {"record": "rec_c", "right": True, "adapter": "v3"}]
    (logs / "deploy_summary.json").write_text(json.dumps({"retention": {"baseline": {"cases": baseline},
                                                                        "candidate": {"cases": candidate}}}))
    assert forgotten_records(logs, "v2") == {"rec_b", "rec_d"}  # v1's miss is no adapter's of tonight
    assert forgotten_records(logs, None) == {"rec_d"}
    (logs / "deploy_summary.json").write_text("{broken")
    assert forgotten_records(logs, "v2") == set()


def test_erasing_a_record_drops_it_from_the_replay_state(tmp_path):
    paths = StatePaths(tmp_path)
    paths.training_data.mkdir(parents=True)
    save_state(paths.training_data, bounded(OLD, 10, 0.0, paths.training_data, paths.logs, None, True)[1], set())
    erased = ExchangeRecord(id="rec_c", query="rec_c question", answer="an answer", confidence=0.5, success=False,
                            model="local/smollm2", created_at=datetime.now(UTC))
    erasure.scrub_files(paths, [erased], lambda: None)
    state = (paths.training_data / REPLAY_STATE).read_text()
    assert "rec_c" not in state and "rec_a" in state
