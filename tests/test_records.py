"""Seeing what happened: ``GET /v1/records`` and ``council records`` list exchanges newest first, with the
failed / since / user filters and cursor paging, on a real server and a real memory store."""

from __future__ import annotations

import json

import pytest

from council.memory.records import cli
from council.server.app import create_app
from tests.fakes import Script, install_scripted


@pytest.fixture
async def client(aiohttp_client, make_settings):
    install_scripted({"*": Script("fine answer", 0.95)})
    settings = make_settings(**{"council.agent0": "scripted/a", "council.heads": {}})
    return await aiohttp_client(create_app(settings)), settings


async def _chat(client, text: str, user: str) -> str:
    resp = await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": text}],
                                                           "user": user})
    assert resp.status == 200
    return (await resp.json())["council"]["record_id"]


async def test_records_list_filters_and_pages(client, capsys):
    client, settings = client
    ids = [await _chat(client, f"question {i}", "alice" if i % 2 else "bob") for i in range(5)]
    resp = await client.post("/v1/feedback", json={"record_id": ids[1], "thumbs": "down", "correction": "No."})
    assert resp.status == 200

    page = await (await client.get("/v1/records?limit=2")).json()
    assert [r["id"] for r in page["data"]] == [ids[4], ids[3]] and page["has_more"] is True
    rest = await (await client.get(f"/v1/records?limit=10&after={page['last_id']}")).json()
    assert [r["id"] for r in rest["data"]] == [ids[2], ids[1], ids[0]] and rest["has_more"] is False
    failed = await (await client.get("/v1/records?failed=true")).json()
    assert [r["id"] for r in failed["data"]] == [ids[1]]
    assert failed["data"][0]["feedback"]["correction"] == "No."
    alice = await (await client.get("/v1/records?user=alice")).json()
    assert [r["id"] for r in alice["data"]] == [ids[3], ids[1]]
    assert (await (await client.get("/v1/records?since=2999-01-01")).json())["data"] == []

    for bad, param in (("failed=maybe", "failed"), ("limit=0", "limit"), ("since=yesterday", "since"),
                       ("colour=red", "colour"), ("after=rec_nope", "after")):
        resp = await client.get(f"/v1/records?{bad}")
        assert resp.status in (400, 404) and (await resp.json())["error"]["param"] == param, bad

    assert cli(["--failed"], settings) == 0
    out = capsys.readouterr().out
    assert ids[1] in out and "FAIL" in out and "corrected: No." in out and ids[0] not in out
    assert cli(["--limit", "2", "--json"], settings) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in rows] == [ids[4], ids[3]]
    assert cli(["--limit", "2"], settings) == 0
    assert f"council records --after {ids[3]}" in capsys.readouterr().out
    assert cli(["--limit", "500"], settings) == 2
