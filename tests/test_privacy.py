"""Privacy and erasure on a real server with a scripted model that records every prompt it receives: what one
user's request recalls of another's (memory.share), PII redaction for remote models, DELETE /v1/records/{id}
and `council forget --user`."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from council.cli import main as council_main
from council.memory.schema import ExchangeRecord
from council.routing.prompts import PromptStore
from council.routing.router import Router
from council.server.app import create_app
from tests.conftest import REPO
from tests.fakes import Script, install_scripted

SUCCESS_Q = "What colour is the Zorblax 3000 in the quokka edition?"
SUCCESS_A = "Alice was told ultramarine-quokka; ask alice.w@example.com"
FIX_Q = "How long does the Zorblax 3000 wombat battery last?"
FIX_A = "About seven years, probably."
FIX = "41 hours (wombat-certified), per alice.w@example.com"


def _answers(extra: dict[str, str] | None = None):
    answers = {SUCCESS_Q: SUCCESS_A, FIX_Q: FIX_A, **(extra or {})}

    def respond(model: str, messages: list[dict]) -> Script:
        return Script(answers.get(messages[-1]["content"], "I cannot say."), 0.95)  # sure, right or not

    return respond


async def _ask(client, question: str, user: str | None = None, header: bool = False) -> dict:
    body = {"messages": [{"role": "user", "content": question}]}
    headers = {}
    if user is not None and header:
        headers["x-council-user"] = user
    elif user is not None:
        body["user"] = user
    resp = await client.post("/v1/chat/completions", json=body, headers=headers)
    assert resp.status == 200, await resp.text()
    return (await resp.json())["council"]


async def _alice_teaches(client) -> tuple[str, str]:
    """alice: one confident exchange, one confident wrong answer she corrects. Returns their record ids."""
    ok = await _ask(client, SUCCESS_Q, "alice")
    fixed = await _ask(client, FIX_Q, "alice", header=True)
    resp = await client.post("/v1/feedback", json={"record_id": fixed["record_id"], "thumbs": "down",
                                                   "correction": FIX})
    assert resp.status == 200
    return ok["record_id"], fixed["record_id"]


@pytest.mark.parametrize("share", ["corrections", "none", "all"])
async def test_what_bob_recalls_of_alice_and_it_is_redacted(aiohttp_client, make_settings, share):
    provider = install_scripted(respond=_answers())
    settings = make_settings(**{"council.agent0": "scripted/agent0", "council.heads": {}, "memory.share": share})
    client = await aiohttp_client(create_app(settings))
    ok_id, fixed_id = await _alice_teaches(client)

    def prompt_of_last_call() -> str:
        return provider.calls[-1][1][0]["content"]

    bob_success = await _ask(client, SUCCESS_Q, "bob")
    bob_success_prompt = prompt_of_last_call()
    bob_fix = await _ask(client, FIX_Q, "bob", header=True)
    bob_fix_prompt = prompt_of_last_call()
    anonymous = await _ask(client, SUCCESS_Q)
    anonymous_prompt = prompt_of_last_call()
    alice_again = await _ask(client, SUCCESS_Q, "alice")
    alice_prompt = prompt_of_last_call()

    for prompt in (bob_success_prompt, bob_fix_prompt, anonymous_prompt, alice_prompt):
        assert "alice.w@example.com" not in prompt  # a scripted/* model is remote: memories are redacted
    shared_success = share == "all"
    assert ("ultramarine-quokka" in bob_success_prompt) is shared_success
    assert (ok_id in bob_success["context_ids"]) is shared_success
    assert ("ultramarine-quokka" in anonymous_prompt) is shared_success
    assert "ultramarine-quokka; ask [EMAIL]" in alice_prompt and ok_id in alice_again["context_ids"]  # her own
    shared_fix = share in ("corrections", "all")
    assert ("The answer is 41 hours (wombat-certified), per [EMAIL]." in bob_fix_prompt) is shared_fix
    assert (fixed_id in bob_fix["context_ids"]) is shared_fix
    assert FIX_A not in bob_fix_prompt and FIX_A not in alice_prompt  # a corrected answer is never recalled
    assert anonymous["record_id"] and bob_success["record_id"]


def test_only_memories_for_local_models_keep_their_pii(make_settings):
    settings = make_settings(**{"council.fallbacks": {"local/backup": ["openai/gpt-4o-mini"]}})
    router = Router(settings, PromptStore(REPO / "prompts"))
    record = ExchangeRecord(query="Mail bob@corp.example about 10.1.2.3?", answer="Done, card 4111 1111 1111 1111",
                            confidence=0.9, success=True, model="local/smollm2")
    context = [(record, 0.9)]
    local = router.system_prompt("system.j2", context, "", "local/smollm2")
    assert "bob@corp.example" in local and "4111 1111 1111 1111" in local
    for model in ("openai/gpt-4o-mini", "local/backup", None):  # remote, a local one falling back to remote, unknown
        prompt = router.system_prompt("head_knowledge.j2", context, "", model)
        assert "Mail [EMAIL] about [IP]?" in prompt and "card [CARD]" in prompt and "bob@corp" not in prompt


def _all_bytes(home: Path) -> bytes:
    return b"\n".join(path.read_bytes() for path in sorted(home.rglob("*")) if path.is_file())


async def test_delete_record_erases_it_from_recall_and_the_database_file(aiohttp_client, make_settings):
    provider = install_scripted(respond=_answers({"Where do DELETE-ME cassowaries nest?": "In CASSOWARY-NEST-42."}))
    settings = make_settings(**{"council.agent0": "scripted/agent0", "council.heads": {},
                                "server.api_key": "k3y"})
    client = await aiohttp_client(create_app(settings), headers={"Authorization": "Bearer k3y"})
    doomed = (await _ask(client, "Where do DELETE-ME cassowaries nest?", "carol"))["record_id"]
    kept = (await _ask(client, SUCCESS_Q, "carol"))["record_id"]
    await client.post("/v1/feedback", json={"record_id": doomed, "rating": 4})  # the row is rewritten once
    memory = settings.paths.memory
    assert b"CASSOWARY-NEST-42" in _all_bytes(memory)

    unauthorised = await client.delete(f"/v1/records/{doomed}", headers={"Authorization": "Bearer wrong"})
    assert unauthorised.status == 401 and (await unauthorised.json())["error"]["type"] == "authentication_error"
    resp = await client.delete(f"/v1/records/{doomed}")
    assert resp.status == 200
    assert await resp.json() == {"id": doomed, "object": "record.deleted", "deleted": True}
    assert b"CASSOWARY-NEST-42" not in _all_bytes(memory) and b"DELETE-ME" not in _all_bytes(memory)
    for method in (client.get, client.delete):
        gone = await method(f"/v1/records/{doomed}")
        assert gone.status == 404 and (await gone.json())["error"]["code"] == "record_not_found"
    again = await _ask(client, "Where do cassowaries nest?", "carol")
    assert doomed not in again["context_ids"] and "CASSOWARY-NEST" not in provider.calls[-1][1][0]["content"]
    assert (await client.get(f"/v1/records/{kept}")).status == 200
    health = await (await client.get("/health")).json()
    assert health["memory"]["records"] == 2


def _lines(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


async def test_forget_user_removes_every_copy_and_keeps_the_others(aiohttp_client, make_settings, capsys):
    bob_q, bob_a, bob_fix_q = "What is the Zorblax platypus mode?", "PLATYPUS-MODE-BOB is a dive mode.", "Who tunes emus?"
    provider = install_scripted(respond=_answers({bob_q: bob_a, bob_fix_q: "Nobody."}))
    settings = make_settings(**{"council.agent0": "scripted/agent0", "council.heads": {}, "memory.share": "all"})
    home = settings.home
    client = await aiohttp_client(create_app(settings))
    ok_id, fixed_id = await _alice_teaches(client)
    bob_ok = (await _ask(client, bob_q, "bob"))["record_id"]
    bob_fixed = (await _ask(client, bob_fix_q, "bob"))["record_id"]
    await client.post("/v1/feedback", json={"record_id": bob_fixed, "correction": "EMU-TUNER-BOB tunes emus."})
    similar = "How long does a Zorblax 3000 battery last?"
    await _ask(client, similar, "bob")
    assert "wombat-certified" in provider.calls[-1][1][0]["content"]  # share "all": bob saw alice's correction

    # what the nightly loop would have copied of both users
    data, loras, logs = settings.paths.training_data, settings.paths.loras, settings.paths.logs
    alice_row = {"instruction": FIX_Q, "input": "", "output": FIX, "record_id": fixed_id, "quality_score": 0.9}
    bob_row = {"instruction": bob_fix_q, "input": "", "output": "EMU-TUNER-BOB tunes emus.", "record_id": bob_fixed,
               "quality_score": 0.9}
    harvest = data / "harvest_20260101.jsonl"
    _lines(harvest, [alice_row, {**alice_row, "record_id": f"{fixed_id}#p1"},
                     {**alice_row, "record_id": "rec_paraphrase", "source_record_id": ok_id}, bob_row])
    (data / "consumed.json").write_text(json.dumps({harvest.name: hashlib.sha256(harvest.read_bytes()).hexdigest(),
                                                    "harvest_20251231.jsonl": "0" * 64}))
    _lines(data / "dpo_20260101.jsonl", [{"prompt": FIX_Q, "chosen": FIX, "rejected": FIX_A, "record_id": fixed_id},
                                         {"prompt": bob_fix_q, "chosen": "x", "rejected": "y", "record_id": bob_fixed}])
    _lines(loras / "v1" / "validation.jsonl", [alice_row, bob_row])
    (loras / "v1" / "metadata.json").write_text(json.dumps({"base_model": "m", "learned": [
        {"question": FIX_Q, "answer": FIX}, {"question": "other", "answer": "x", "record_id": ok_id},
        {"question": bob_fix_q, "answer": "EMU-TUNER-BOB tunes emus."}]}))
    (logs / "deploy_summary.json").write_text(json.dumps({"canary": [
        {"prompt": SUCCESS_Q, "text": SUCCESS_A}, {"prompt": bob_q, "text": bob_a}], "note": f"from {fixed_id}"}))
    (logs / "nightly-1" / "harvest.log").parent.mkdir()
    (logs / "nightly-1" / "harvest.log").write_text(f"rewrote {FIX_Q!r}\nrewrote {bob_fix_q!r}\n")

    assert council_main(["--home", str(home), "forget", "--user", "alice"]) == 0
    out = capsys.readouterr().out
    assert "2 record(s)" in out and "8 line(s)" in out and "3 log string(s)" in out

    after = await _ask(client, similar, "bob")  # the running server masks what another process erased
    prompt = provider.calls[-1][1][0]["content"]
    assert fixed_id not in after["context_ids"] and "wombat-certified" not in prompt
    bob_again = await _ask(client, bob_fix_q, "bob")
    assert bob_fixed in bob_again["context_ids"] and "EMU-TUNER-BOB" in provider.calls[-1][1][0]["content"]
    await client.close()

    everything = _all_bytes(home)
    for secret in (SUCCESS_Q, SUCCESS_A, FIX_Q, FIX, FIX_A, "wombat-certified", "ultramarine-quokka",
                   "alice.w@example.com", "quokka edition"):
        assert secret.encode() not in everything, secret
    for kept in ("PLATYPUS-MODE-BOB", "EMU-TUNER-BOB", bob_fix_q):
        assert kept.encode() in everything, kept
    assert [json.loads(line)["record_id"] for line in harvest.read_text().splitlines()] == [bob_fixed]
    consumed = json.loads((data / "consumed.json").read_text())
    assert consumed[harvest.name] == hashlib.sha256(harvest.read_bytes()).hexdigest()  # not taken for new data
    learned = json.loads((loras / "v1" / "metadata.json").read_text())["learned"]
    assert [e["question"] for e in learned] == [bob_fix_q]
    summary = json.loads((logs / "deploy_summary.json").read_text())
    assert summary["canary"][1] == {"prompt": bob_q, "text": bob_a} and summary["note"] == "[erased]"
    assert bob_ok

    assert council_main(["--home", str(home), "forget", "--user", "alice"]) == 3  # nothing left to forget
    with pytest.raises(SystemExit) as done:
        council_main(["forget", "--help"])
    assert done.value.code == 0 and "--user" in capsys.readouterr().out
