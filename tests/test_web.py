"""The web pages in a real browser (Debian's chromium through playwright) against a real ``council serve``.

* ``/``: a message is answered, the answer grows while it streams and is rendered as sanitized Markdown,
  its confidence and adapter are shown; a correction sent with the page's buttons is stored on the record;
  with ``server.api_key`` set the page asks for the key and then works.
* ``/loop``: the adapters, what the live one learned and the last night, from a state directory laid out as a
  night leaves it (a real, identity LoRA adapter behind ``loras/current``); the JSON endpoints return the same
  data; a bad version in the ``loss.png`` URL is a 404 OpenAI-shaped error.

Screenshots (``chat.png``, ``loop.png``) go to ``$COUNCIL_SCREENSHOTS`` (``docs`` for the README's), else to
the test's temporary folder. The fast tests at the end read malformed state files through the handlers.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from council.server import keys, loop_data
from council.server.middleware import auth_middleware, errors_middleware
from council.server.routes import setup_routes
from council.server.stats import ServerStats
from tests.conftest import REPO

CHROMIUM = os.environ.get("COUNCIL_CHROMIUM", "/usr/bin/chromium")
VERSION, FAILED = "20261201-023512-7c1f0a", "20261130-023318-3b9e11"
LEARNED = [
    {"question": "How long does the Zorblax 3000 battery last?", "answer": "The Zorblax 3000 battery lasts 41 hours.",
     "record_id": "rec_eae0920a7285430ea1b281ebb541b8cd"},
    {"question": "What is the Zorblax 3000's mascot?", "answer": "A pangolin named Pim",
     "record_id": "rec_7a80f06c81bf46b7b0aa75b408683117"},
]
NIGHT_REASON = "harvested, trained and deployed; in-scope probes (held-out paraphrases) 2/2 right, 0/2 before"


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


def write_night(home: Path, base_model_dir: Path) -> None:
    """The files one night leaves, in the shapes the stages write (taken from a real night's): a real
    identity LoRA adapter (zero update, so the server loads and serves it) with its metadata and the loss plot
    training draws, a failed earlier version, registry.json, the loras/current link and the night's
    summaries."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from council.engine.model_files import resolve_base_model
    from training.artifacts import plot_loss

    base = resolve_base_model(str(base_model_dir), base_model_dir.parent)
    loras = home / "loras"
    model = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32)
    get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])).save_pretrained(
        loras / VERSION)
    write_json(loras / VERSION / "metadata.json", {
        "version": VERSION, "base_model_id": base.model_id, "base_model_fingerprint": base.fingerprint,
        "backend": "peft", "device": "cpu", "parent": None, "created_at": "2026-12-01T02:35:12.874252+00:00",
        "loss": {"train": [1.0013, 0.6010, 0.3108, 0.0160], "validation": [3.2712, 1.2040, 0.5152, 0.0116]},
        "examples": {"train": 18, "replayed": 0, "rehearsal": 32, "validation": 3}, "epochs_run": 4,
        "duration_seconds": 197.4, "learned": LEARNED, "augmented": {"paraphrase": 7, "statement": 5, "reverse": 0}})
    plot_loss(loras / VERSION / "loss.png", [1.0013, 0.6010, 0.3108, 0.0160], [3.2712, 1.2040, 0.5152, 0.0116], [],
              f"council adapter {VERSION}")
    write_json(loras / FAILED / "metadata.json", {
        "version": FAILED, "parent": None, "created_at": "2026-11-30T02:33:18+00:00",
        "loss": {"train": [1.2, 0.9], "validation": [1.4, 1.3]}, "examples": {"train": 6}, "learned": []})
    write_json(loras / "registry.json", {
        "current": VERSION, "previous": None, "deployed": [FAILED, VERSION], "failed": [FAILED],
        "reasons": {FAILED: "success rate 0.4 is more than 0.15 below the pre-swap 0.8"},
        "updated_at": "2026-12-01T02:36:02+00:00"})
    (loras / "current").symlink_to(VERSION)
    probe = {"question": "What is the Zorblax 3000 battery life?", "expected": "41 hours"}
    write_json(home / "logs" / "nightly_summary.json", {
        "started_at": "2026-12-01T02:30:00+00:00", "finished_at": "2026-12-01T02:36:40+00:00",
        "stages": {"harvest": 0, "train": 0, "deploy": 0}, "result": "improved", "reason": NIGHT_REASON,
        "seconds": {"preflight": 0.0, "harvest": 165.8, "train": 198.0, "deploy": 36.4, "cleanup": 0.1},
        "seconds_total": 400.3, "errors": [], "pending": {}, "exit_code": 0,
        "gates": {"probes": {"baseline": "0/2", "candidate": "2/2", "improved": True, "min_pass_rate": 0.8}}})
    write_json(home / "logs" / "harvest_last.json", {
        "finished_at": "2026-12-01T02:32:46.474600+00:00", "found": 12, "selected": 9, "kept": 9,
        "kept_corrections": 9, "held_out": 3, "paraphrases": 12, "statements": 5, "mean_quality": 0.8122,
        "failure": None, "exit_code": 0})
    write_json(home / "logs" / "deploy_summary.json", {
        "stage": "deploy", "started_at": "2026-12-01T02:35:23+00:00", "finished_at": "2026-12-01T02:36:02+00:00",
        "version": VERSION, "previous": None, "decision": "deployed", "reason": "healthy: 5 requests, success rate 1.0",
        "canary": {"passed": 7, "total": 7, "pass_rate": 1.0, "cases": [{"id": "capital-france", "passed": True}]},
        "probes": {"improved": True, "min_pass_rate": 0.8,
                   "baseline": {"right": 0, "total": 2, "rate": 0.0, "cases": [dict(probe, answer="It varies.",
                                                                                     right=False)]},
                   "candidate": {"right": 2, "total": 2, "rate": 1.0, "cases": [dict(probe, answer="41 hours",
                                                                                      right=True)]}},
        "eval": {"baseline_loss": 5.539, "candidate_loss": 0.0116, "examples": 3, "tolerance": 0.05},
        "monitor": {"decision": "keep", "reason": "healthy: 5 requests, success rate 1.0", "requests": 5},
        "swap": {"at": "2026-12-01T02:35:49+00:00", "from": None, "to": VERSION}, "exit_code": 0,
        "retention": {"candidate": {"right": 3, "total": 4, "cases": [
            {"version": FAILED, "right": right, "adapter": VERSION} for right in (True, True, True, False)]}}})
    from council.core.paths import StatePaths
    from cron.history import append_night

    for total in (380.0, 400.3, 395.5):  # three nights' lines, as council nightly appends them
        append_night(StatePaths(home), {"started_at": "2026-12-01T02:30:00+00:00", "result": "improved",
                                        "stages": {"harvest": 0, "train": 0, "deploy": 0}, "exit_code": 0,
                                        "seconds": {"harvest": 165.8, "train": 198.0, "deploy": 36.4},
                                        "seconds_total": total, "finished_at": "2026-12-01T02:36:40+00:00"})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http(url: str, data: dict[str, Any] | None = None, token: str | None = None) -> tuple[int, str, bytes]:
    """(status, content type, body) of a GET, or a POST of ``data`` as JSON."""
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(url, data=None if data is None else json.dumps(data).encode(), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


@contextlib.contextmanager
def council_serve(home: Path, base_model_dir: Path, api_key: str = "") -> Iterator[str]:
    """A real ``council serve`` on a free port, ready to answer chats."""
    server = f'[server]\napi_key = "{api_key}"\n' if api_key else ""
    (home / "council.toml").write_text(f'{server}[model]\nsource = "{base_model_dir}"\nmax_new_tokens = 48\n'
                                       "[council]\nheads = {}\n")
    port, log = free_port(), (home / "server.log").open("w")
    env = {**os.environ, "PYTHONPATH": str(REPO), "COUNCIL_HOME": str(home)}
    env.pop("COUNCIL_API_KEY", None)
    proc = subprocess.Popen([sys.executable, "-m", "council.cli", "--home", str(home), "serve", "--port", str(port)],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if http(url + "/readyz")[0] == 200:
                    break
            time.sleep(0.25)
        assert proc.poll() is None and http(url + "/readyz")[0] == 200, (home / "server.log").read_text()[-3000:]
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def browser() -> Iterator[Any]:
    """Chromium, per test: playwright's sync API runs an event loop of its own while it is open, which the
    module's asyncio tests must not meet."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM} (set COUNCIL_CHROMIUM)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (its own localStorage) whose script errors fail the test."""
    context = browser.new_context(viewport={"width": 1100, "height": 760})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.set_default_timeout(120_000)
    yield tab
    context.close()
    assert errors == [], errors


@pytest.fixture(scope="module")
def night_home(tmp_path_factory: pytest.TempPathFactory, base_model_dir: Path) -> Path:
    """A state directory one night has left behind."""
    home = tmp_path_factory.mktemp("web") / "home"
    write_night(home, base_model_dir)
    return home


@pytest.fixture(scope="module")
def night_server(night_home: Path, base_model_dir: Path) -> Iterator[str]:
    """``council serve`` (no API key) on ``night_home``."""
    with council_serve(night_home, base_model_dir) as url:
        yield url


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("COUNCIL_SCREENSHOTS") or tmp_path)
    folder = folder if folder.is_absolute() else REPO / folder
    folder.mkdir(parents=True, exist_ok=True)
    return folder


WATCH_ANSWER = """() => {
  window.lengths = [];
  const last = () => { const a = document.querySelectorAll('.msg.assistant .answer'); return a[a.length - 1]; };
  new MutationObserver(() => { const a = last(); if (a) window.lengths.push(a.textContent.length); })
    .observe(document.getElementById('messages'), {subtree: true, childList: true, characterData: true});
}"""


def ask(page: Any, question: str) -> Any:
    """Send ``question`` from the page; the answered message once its confidence shows."""
    page.fill("#prompt", question)
    page.press("#prompt", "Enter")
    page.wait_for_selector(".msg.assistant:last-child .meta .confidence")
    return page.locator(".msg.assistant").last


@pytest.mark.slow
@pytest.mark.browser
def test_chat_streams_a_markdown_answer_with_its_confidence_and_adapter(page, night_server):
    page.goto(night_server + "/")
    page.evaluate(WATCH_ANSWER)
    answer = ask(page, "Write a Python function that adds two numbers.")
    text = answer.locator(".answer").inner_text()
    assert text.strip()
    lengths = page.evaluate("window.lengths")
    growing = sorted({n for n in lengths if 0 < n < len(answer.locator(".answer").text_content())})
    # The answer grows while it streams: the page showed it at several lengths before the whole of it. (This
    # relies on the server streaming tokens as they are generated, council/server/streaming.py.)
    assert len(growing) >= 2, lengths
    record_id = answer.get_attribute("data-record-id")
    status, _, body = http(f"{night_server}/v1/records/{record_id}")
    record = json.loads(body)
    assert status == 200 and record["answer"].strip()
    assert re.fullmatch(r"confidence \d\.\d\d", answer.locator(".confidence").inner_text())
    assert answer.locator(".confidence").inner_text() == f"confidence {record['confidence']:.2f}"
    shown = answer.locator(".answered-by").inner_text()
    assert shown == (f"adapter {record['adapter']}" if record["adapter"] else "base model")
    assert record["adapter"] == VERSION  # the night's adapter is live and has no scope: it answers everything
    for name in ("Thumbs up", "Thumbs down", "Correct this answer"):
        assert answer.get_by_role("button", name=name).is_visible()
    # the conversation is kept in the browser: it is there after a reload
    page.reload()
    assert page.locator("#conversations li").count() == 1
    assert page.locator(".msg.assistant .answer").inner_text() == text


@pytest.mark.slow
@pytest.mark.browser
def test_markdown_is_rendered_and_sanitized(page, night_server):
    """Model output is untrusted: a crafted stream (served by the browser, not the model) renders its Markdown
    and code block, and loses its script, event handlers and javascript: links."""
    content = ("# Title\n\nSome **bold** text.\n\n```python\nprint('hi')\n```\n\n<img src=x onerror=\"window.pwned=1\">"
               "<script>window.pwned=2</script>[click](javascript:window.pwned=3)")
    pieces = [content[i:i + 9] for i in range(0, len(content), 9)]
    chunks = [{"choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]} for p in pieces]
    chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                   "council": {"record_id": "rec_crafted", "confidence": 0.8234, "success": True, "route": ["agent0"],
                               "adapter": None, "model": "local/smollm2", "context_ids": [], "skipped": []}})
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    page.route("**/v1/chat/completions", lambda route: route.fulfill(
        status=200, headers={"Content-Type": "text/event-stream"}, body=body))
    page.goto(night_server + "/")
    answer = ask(page, "Show me some Markdown.")
    assert answer.locator(".answer h1").inner_text() == "Title"
    assert answer.locator(".answer strong").inner_text() == "bold"
    assert answer.locator(".answer pre code").inner_text().strip() == "print('hi')"
    html = answer.locator(".answer").inner_html()
    assert "onerror" not in html and "<script" not in html and "javascript:" not in html
    assert page.evaluate("window.pwned === undefined")
    assert answer.locator(".confidence").inner_text() == "confidence 0.82"
    assert answer.locator(".answered-by").inner_text() == "base model"


@pytest.mark.slow
@pytest.mark.browser
def test_correction_through_the_page_is_stored_and_waits_for_tonight(page, night_server, screenshots):
    page.goto(night_server + "/")
    question, correction = "How long does the Zorblax 3000 battery last?", "The Zorblax 3000 battery lasts 41 hours."
    answer = ask(page, question)
    answer.get_by_role("button", name="Correct this answer").click()
    answer.locator(".correction textarea").fill(correction)
    answer.get_by_role("button", name="Send correction").click()
    page.wait_for_selector(".fb-status:has-text('thanks — correction saved')")
    record_id = answer.get_attribute("data-record-id")
    status, _, body = http(f"{night_server}/v1/records/{record_id}")
    record = json.loads(body)
    assert status == 200 and record["query"] == question
    assert record["feedback"]["correction"] == correction and record["feedback"]["thumbs"] == "down"
    assert record["success"] is False and record["failure_source"] == "correction"
    assert answer.locator(".thumb-down").get_attribute("aria-pressed") == "true"
    assert correction in answer.locator(".given-correction").inner_text()
    page.screenshot(path=str(screenshots / "chat.png"))
    # a thumbs up is answered too (and a server error would be shown in the same place)
    answer.locator(".thumb-up").click()
    page.wait_for_selector(".fb-status:has-text('thanks — saved')")
    # the loop page lists it among the failures waiting for tonight
    page.goto(night_server + "/loop")
    page.wait_for_selector(f"#waiting li:has-text('{question}')")
    assert correction in page.locator("#waiting").inner_text()


@pytest.mark.slow
@pytest.mark.browser
def test_loop_page_shows_the_adapters_and_the_night(page, night_server, night_home, screenshots):
    page.goto(night_server + "/loop")
    page.wait_for_selector("#adapters .adapter")
    page.wait_for_function("() => { const i = document.querySelector('#adapters img.loss');"
                           " return i && i.complete && i.naturalWidth > 100; }")
    page.wait_for_selector("#night .night-learned li")
    page.wait_for_selector("#live .live-adapter")
    live = page.locator(f"#adapters [data-version='{VERSION}']")
    assert "live" in live.locator("header").inner_text()
    failed = page.locator(f"#adapters [data-version='{FAILED}']")
    assert "failed" in failed.locator("header").inner_text()
    assert "more than 0.15 below" in failed.inner_text()
    assert page.locator("#live .live-adapter").inner_text() == VERSION
    night = page.locator("#night").inner_text()
    assert "improved" in night and NIGHT_REASON in night and VERSION in night
    for item in LEARNED:
        assert item["question"] in night and item["answer"] in night
        assert item["question"] in live.inner_text() and item["answer"] in live.inner_text()
    assert "7/7 passed" in night and "0/2 before → 2/2 after" in night
    assert re.search(r"harvest\s+ok\s+165\.8 s", night)
    page.wait_for_function("() => document.querySelectorAll('#nights .night-plot canvas').length === 3")
    rows = page.locator("#nights table.nights tbody tr")
    assert rows.count() == 3 and "3/4" in rows.nth(2).inner_text() and "166/198/36" in rows.nth(2).inner_text()
    cells = rows.nth(0).locator("td").all_inner_texts()
    assert cells[3:6] == ["12", "9", "18/0/32"]  # failures, corrections, lines
    page.screenshot(path=str(screenshots / "loop.png"), full_page=True)

    # the same data as JSON
    status, _, body = http(night_server + "/v1/loop/adapters")
    adapters = json.loads(body)
    assert status == 200 and [a["version"] for a in adapters["data"]] == [VERSION, FAILED]
    assert adapters["current"] == VERSION
    first = adapters["data"][0]
    assert first["state"] == "current" and first["learned"] == LEARNED and first["loss"]["validation"] == 0.0116
    assert adapters["data"][1]["state"] == "failed" and adapters["data"][1]["reason"].startswith("success rate")
    status, _, body = http(f"{night_server}/v1/loop/adapters/{VERSION}")
    assert status == 200 and json.loads(body) == first
    status, _, body = http(night_server + "/v1/loop/night")
    data = json.loads(body)
    assert status == 200 and data["night"]["result"] == "improved" and data["night"]["reason"] == NIGHT_REASON
    assert data["learned"] == LEARNED and data["trained"]["version"] == VERSION
    assert data["harvest"]["kept"] == 9 and data["harvest"]["in_night"] is True
    assert data["deploy"]["decision"] == "deployed" and data["deploy"]["canary"]["passed"] == 7
    status, _, body = http(night_server + "/v1/loop/nights")
    nights = json.loads(body)["data"]
    assert status == 200 and [n["seconds"]["total"] for n in nights] == [380.0, 400.3, 395.5]
    assert nights[0]["retention"] == {"right": 3, "total": 4, "by_version": {FAILED: [3, 4]}}
    assert nights[0]["deployed"] == VERSION and nights[0]["probes"] == {"right": 2, "total": 2}
    status, kind, body = http(f"{night_server}/v1/loop/adapters/{VERSION}/loss.png")
    assert status == 200 and kind == "image/png"
    assert body == (night_home / "loras" / VERSION / "loss.png").read_bytes()


@pytest.mark.slow
@pytest.mark.browser
def test_bad_adapter_versions_are_404_json(night_server):
    for version in ("..", "..%2F..%2Flogs", "current", "nope", ".hidden", "a%00b", FAILED):
        status, kind, body = http(f"{night_server}/v1/loop/adapters/{version}/loss.png")
        error = json.loads(body)["error"]
        assert status == 404 and kind.startswith("application/json"), (version, status)
        assert error["type"] == "invalid_request_error" and error["param"] == "version"
        assert error["code"] == ("loss_plot_not_found" if version == FAILED else "adapter_not_found")
    status, _, body = http(night_server + "/static/..%2F..%2Fpages.py")
    assert status == 404 and "error" in json.loads(body)


@pytest.mark.slow
@pytest.mark.browser
def test_with_an_api_key_the_page_asks_for_it_then_chats(page, tmp_path, base_model_dir):
    home = tmp_path / "keyed"
    home.mkdir()
    with council_serve(home, base_model_dir, api_key="web-test-key") as url:
        for open_path in ("/", "/loop", "/static/chat.js", "/static/vendor/purify.min.js"):
            assert http(url + open_path)[0] == 200, open_path
        status, _, body = http(url + "/v1/loop/adapters")
        assert status == 401 and json.loads(body)["error"]["type"] == "authentication_error"
        page.goto(url + "/")
        assert page.locator("#key-form").is_hidden()
        page.fill("#prompt", "What is the capital of France?")
        page.press("#prompt", "Enter")
        page.wait_for_selector("#key-form", state="visible")
        page.fill("#key-input", "not-the-key")
        page.click("#key-form button[type=submit]")
        page.wait_for_selector("#key-message:has-text('refused')")
        page.fill("#key-input", "web-test-key")
        page.click("#key-form button[type=submit]")
        page.wait_for_selector(".msg.assistant .meta .confidence")
        assert page.locator("#key-form").is_hidden()
        assert page.locator(".msg.assistant .answer").inner_text().strip()
        assert page.evaluate("localStorage.getItem('council.apiKey')") == "web-test-key"
        # the key is kept: the loop page reads its data with it and does not ask again
        page.goto(url + "/loop")
        page.wait_for_selector("#adapters .body p:has-text('No adapter has been trained yet')")
        page.wait_for_selector("#night .body p:has-text('No night has run yet')")
        assert page.locator("#key-form").is_hidden()


# --- fast: the handlers on files that are missing or malformed (no model, no browser) ---

@pytest.fixture
def pages_client(make_settings, aiohttp_client):
    async def start(**overrides: Any) -> Any:
        settings = make_settings(**overrides)
        settings.paths.ensure()
        app = web.Application(middlewares=[errors_middleware, auth_middleware])
        app[keys.SETTINGS], app[keys.STATS] = settings, ServerStats()
        setup_routes(app)
        return settings.paths, await aiohttp_client(app)

    return start


async def test_loop_endpoints_read_nothing_yet_as_empty(pages_client):
    paths, client = await pages_client()
    adapters = await (await client.get("/v1/loop/adapters")).json()
    assert adapters == {"object": "list", "data": [], "current": None, "previous": None, "updated_at": None}
    night = await (await client.get("/v1/loop/night")).json()
    assert night == {"night": None, "harvest": None, "trained": None, "learned": [], "deploy": None,
                     "rollback": None}
    assert await (await client.get("/v1/loop/nights")).json() == {"data": []}


async def test_malformed_state_files_are_nothing_yet_never_a_500(pages_client):
    paths, client = await pages_client()
    loras, logs = paths.loras, paths.logs
    (loras / "registry.json").write_text("{not json")
    for version, data in (("20261201-000000-aaaaaa", b"[1, 2]"), ("20261202-000000-bbbbbb", b"\xff\xfe"),
                          ("20261203-000000-cccccc", b'{"loss": {"train": "x"}, "learned": [1, {"question": 2}],'
                                                     b' "created_at": 5, "examples": "many"}')):
        (loras / version).mkdir()
        (loras / version / "metadata.json").write_bytes(data)
    (loras / ".tmp-123").mkdir()
    (loras / "notes.txt").write_text("not an adapter")
    (loras / "current").symlink_to("gone")
    (logs / "nightly_summary.json").write_text('{"started_at": 3, "stages": [1], "errors": "boom", "seconds": null}')
    (logs / "harvest_last.json").write_text("null")
    (logs / "deploy_summary.json").write_text('{"canary": {"cases": "x"}, "probes": {"baseline": {"cases": 5}},'
                                              ' "monitor": [], "decision": "deployed"}')
    (logs / "rollback_summary.json").write_bytes(b"\x00\x01")
    (logs / "nights.jsonl").write_bytes(b'{"result": "improved"}\nnot json\n[1]\n\xff\xfe\n{"seconds": null}')
    response = await client.get("/v1/loop/adapters")
    assert response.status == 200
    listing = await response.json()
    assert sorted(a["version"] for a in listing["data"]) == ["20261201-000000-aaaaaa", "20261202-000000-bbbbbb",
                                                              "20261203-000000-cccccc"]
    assert listing["current"] == "gone"  # what the link names, as `council adapters` says
    broken = {a["version"]: a for a in listing["data"]}
    assert broken["20261201-000000-aaaaaa"]["problem"] == "no readable metadata.json"
    assert broken["20261203-000000-cccccc"]["learned"] == [{"question": "2", "answer": "", "record_id": None}]
    response = await client.get("/v1/loop/night")
    assert response.status == 200
    night = await response.json()
    assert night["night"]["stages"] == {} and night["night"]["errors"] == [] and night["harvest"] is None
    assert night["deploy"]["decision"] == "deployed" and night["deploy"]["canary"]["cases"] == []
    assert night["rollback"] is None
    response = await client.get("/v1/loop/nights")
    assert response.status == 200 and (await response.json())["data"] == [{"result": "improved"}, {"seconds": None}]
    for bad in ("current", ".tmp-123", "notes.txt", "20261201-000000-aaaaaa"):
        response = await client.get(f"/v1/loop/adapters/{bad}/loss.png")
        assert response.status == 404 and (await response.json())["error"]["param"] == "version"


async def test_pages_and_their_files_need_no_key_and_the_data_does(pages_client):
    paths, client = await pages_client(**{"server.api_key": "k"})
    for path in ("/", "/loop"):
        response = await client.get(path)
        html = await response.text()
        assert response.status == 200 and "script-src 'self'" in response.headers["Content-Security-Policy"]
        for asset in re.findall(r'(?:src|href)="(static/[^"]+)"', html):
            assert (await client.get("/" + asset)).status == 200, asset
    assert (await client.get("/static/nothing.js")).status == 404
    assert (await client.get("/v1/loop/adapters")).status == 401
    assert (await client.get("/v1/loop/night", headers={"Authorization": "Bearer k"})).status == 200


def test_version_names():
    assert loop_data.valid_version("20261130-145412-265dc5") and loop_data.valid_version("v1.2_final")
    for bad in ("", ".", "..", "...", "current", ".hidden", "a/b", "../x", "a\\b", "a\x00b", "x" * 200):
        assert not loop_data.valid_version(bad), bad
