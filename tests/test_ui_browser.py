"""The dashboard in a real browser: headless Chromium (Debian's ``chromium`` package) driven by
Playwright, against a real server on the three demo models with an API key.

One server and one browser for the module; the tests run in order on one page (load, then the
playground, then the request log and the console of everything before). Screenshots go to
``$PLUGHOST_SCREENSHOTS`` (default ``build/screenshots``); ``PLUGHOST_UPDATE_SCREENSHOTS=1`` also
writes the README's ``docs/img/dashboard.png``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from host.app import create_app
from host.testing.pytest_plugin import make_config
from host.testing.server import serve_in_thread

ROOT = Path(__file__).resolve().parents[1]
CHAT, EMBED, RERANK = "Qwen2.5-7B-Instruct-AWQ", "Qwen3-Embedding-0.6B", "Qwen3-Reranker-0.6B"
KEY = "ui-test-key"
TIMEOUT_MS = 120_000  # the first use of a demo model builds it (cached in ~/.cache/plughost/demo)

pytestmark = pytest.mark.slow
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed (pip: playwright)")


def chromium() -> str | None:
    """The browser to drive: ``$PLUGHOST_CHROMIUM`` or Debian's ``chromium`` on the PATH."""
    return os.environ.get("PLUGHOST_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def shots() -> Path:
    folder = Path(os.environ.get("PLUGHOST_SCREENSHOTS", ROOT / "build" / "screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium()
    if executable is None:
        pytest.skip("no Chromium to drive: install Debian's chromium package (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    config = make_config(
        {
            "demo": True,
            "plugins": {"paths": [str(ROOT / "plugins")]},
            # A small host budget, so that one demo model's bytes make a visible bar.
            "budgets": {"gpus": [], "host": "1GiB", "host_reserve": 0},
            "scheduler": {"min_residency_s": 0},
            "server": {"api_keys": [KEY]},
        }
    )
    with serve_in_thread(create_app(config)) as url:
        yield url


class Recorder:
    """What the page asked for and what its console said."""

    def __init__(self, page: Any) -> None:
        self.requests: list[str] = []
        self.errors: list[str] = []
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))


@pytest.fixture(scope="module")
def session(browser: Any, server: str) -> Iterator[tuple[Any, Recorder]]:
    """One page of the dashboard, in English, past the key prompt."""
    context = browser.new_context(locale="en-US", viewport={"width": 1360, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    recorder = Recorder(page)
    page.goto(f"{server}/ui")
    page.fill("#key-input", KEY)
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("tr.model >> nth=2")  # the three demo models at least
    yield page, recorder
    context.close()


def row(page: Any, model: str) -> Any:
    return page.locator(f'tr.model[data-model="{model}"]')


def test_without_a_key_the_page_asks_for_one_and_shows_no_data(browser: Any, server: str) -> None:
    context = browser.new_context(locale="zh-CN")
    page = context.new_page()
    recorder = Recorder(page)
    page.goto(f"{server}/ui")
    page.wait_for_selector("#key-prompt:not([hidden])")
    assert page.inner_text("#key-prompt h1") == "此服务器需要 API 密钥"  # the browser's language
    assert page.locator("#dashboard").is_hidden() and page.locator("tr.model").count() == 0
    assert CHAT not in page.content()
    page.screenshot(path=shots() / "key-prompt.png")
    assert not [u for u in recorder.requests if "/v1/" in u or "/ui/api/" in u]  # nothing asked without the key
    assert recorder.errors == []
    context.close()


def test_lists_the_demo_models(session: tuple[Any, Recorder], server: str) -> None:
    page, _ = session
    declared = [
        m["id"] for m in httpx.get(f"{server}/v1/models", headers={"authorization": f"Bearer {KEY}"}).json()["data"]
    ]
    assert {CHAT, EMBED, RERANK} <= set(declared)  # the three of the seed, and any chat model added since
    assert [r.get_attribute("data-model") for r in page.locator("tr.model").all()] == declared
    for model in declared:
        assert row(page, model).locator("[data-state]").get_attribute("data-state") == "available"
    assert "DEMO" in page.inner_text("#demo-banner")
    assert page.inner_text("#server-status") == "ready"


def test_load_makes_a_model_resident_and_its_memory_bar_grows(session: tuple[Any, Recorder]) -> None:
    page, _ = session
    segment = page.locator(f'#devices [data-device="cpu"] .seg[data-model="{EMBED}"]')
    assert segment.count() == 0
    row(page, EMBED).locator("button[data-action=load]").click()
    page.wait_for_selector(f'tr.model[data-model="{EMBED}"] [data-state="resident"]')
    segment.wait_for()
    host = page.locator('#devices [data-device="cpu"] .bar').bounding_box()
    grown = segment.bounding_box()
    assert host is not None and grown is not None
    assert 0.15 < grown["width"] / host["width"] < 0.5  # ~281 MiB of the 1 GiB budget
    assert row(page, EMBED).locator(".minibar .fill").bounding_box()["width"] > 10
    assert "MiB" in row(page, EMBED).inner_text()
    page.screenshot(path=shots() / "loaded.png", full_page=True)


def test_chat_streams_into_the_playground(session: tuple[Any, Recorder]) -> None:
    page, _ = session
    page.click("[aria-controls=tab-chat]")
    # Count the text pieces the answer receives: a streamed answer arrives in several.
    page.evaluate(
        """() => {
        window.__deltas = 0;
        new MutationObserver((records) => {
            for (const r of records) for (const n of r.addedNodes)
                if (n.nodeType === 3 && n.parentElement?.matches('.msg.assistant .content')) window.__deltas += 1;
        }).observe(document.querySelector('#chat-log'), {childList: true, subtree: true});
    }"""
    )
    page.fill("#chat-form [name=max_tokens]", "48")
    page.fill("#chat-form textarea", "你好，请介绍一下你自己")
    page.press("#chat-form textarea", "Enter")
    page.wait_for_selector("#chat-form:not(.running) .msg.assistant .stats:not(:empty)")
    answer = page.inner_text(".msg.assistant .content")
    assert answer and page.evaluate("window.__deltas") > 1, answer
    assert "tokens" in page.inner_text(".msg.assistant .stats")
    page.wait_for_selector(f'tr.model[data-model="{CHAT}"] [data-state="resident"]')  # the next poll
    page.locator("#playground").screenshot(path=shots() / "chat.png")


def test_reasoning_deltas_are_shown_apart_from_the_answer(session: tuple[Any, Recorder]) -> None:
    """A thinking model's stream (``reasoning_content`` deltas, then content), answered by the browser
    itself: the demo chat model does not think."""
    page, _ = session
    chunks = [
        {"reasoning_content": "Let me think. "},
        {"reasoning": "Two plus two."},
        {"content": "It is "},
        {"content": "4."},
    ]
    events = [{"choices": [{"index": 0, "delta": delta}]} for delta in chunks]
    body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    page.route(
        "**/v1/chat/completions",
        lambda route: route.fulfill(status=200, headers={"content-type": "text/event-stream"}, body=body),
        times=1,
    )
    page.click("[aria-controls=tab-chat]")
    page.fill("#chat-form textarea", "2+2?")
    page.press("#chat-form textarea", "Enter")
    reply = page.locator(".msg.assistant").last
    reply.locator(".stats:not(:empty)").wait_for()
    assert reply.locator(".thinking").is_visible()  # folded once the answer is there; the text stays
    assert reply.locator(".thinking .reasoning").text_content() == "Let me think. Two plus two."
    assert reply.locator(".content").inner_text() == "It is 4."


def test_embeddings_show_a_similarity_matrix(session: tuple[Any, Recorder]) -> None:
    page, _ = session
    page.click("[aria-controls=tab-embed]")
    page.click("#embed-form button[type=submit]")
    page.wait_for_selector("table.matrix")
    cells = page.locator("table.matrix td.sim")
    assert cells.count() == 16  # four texts
    assert [cells.nth(i * 5).inner_text() for i in range(4)] == ["1.00"] * 4  # each text with itself
    page.locator("#playground").screenshot(path=shots() / "embeddings.png")


def test_rerank_shows_ranked_documents(session: tuple[Any, Recorder]) -> None:
    page, _ = session
    page.click("[aria-controls=tab-rerank]")
    page.click("#rerank-form button[type=submit]")
    page.wait_for_selector("ol.ranking li")
    items = page.locator("ol.ranking li")
    assert items.count() == 4
    scores = [float(items.nth(i).locator(".score").inner_text()) for i in range(4)]
    assert scores == sorted(scores, reverse=True)
    assert sorted(int(items.nth(i).get_attribute("data-index")) for i in range(4)) == [0, 1, 2, 3]
    page.locator("#playground").screenshot(path=shots() / "rerank.png")


def test_live_figures_pin_and_the_page_used_nothing_else(session: tuple[Any, Recorder], server: str) -> None:
    page, recorder = session
    # The requests above reach the live card within a sampling interval or two.
    page.wait_for_function("() => document.querySelector('[data-chart=requests] .line') !== null", timeout=15_000)
    row(page, RERANK).locator("button[data-action=pin]").click()
    page.wait_for_selector(f'tr.model[data-model="{RERANK}"] .tag.pinned')
    # Unloading a busy model asks first (the model list is made to say it serves two requests).
    unloads: list[str] = []
    page.on("request", lambda r: unloads.append(r.url) if r.url.endswith("/unload") else None)

    # Downloads as a server that pulls weights reports them (the model card's ``weights``): the chat
    # model's in progress, the reranker's absent (offered a pull), the embedder's not reported (none).
    weights = {
        CHAT: {"state": "downloading", "repo": "Qwen/x", "percent": 42.5, "done_bytes": 425, "total_bytes": 1000},
        RERANK: {"state": "absent", "repo": "Qwen/y"},
    }

    def busy(route: Any) -> None:
        listing = route.fetch().json()
        for model in listing["data"]:
            model["status"]["in_flight"] = 2
            model.pop("weights", None)
            if model["id"] in weights:
                model["weights"] = weights[model["id"]]
        route.fulfill(json=listing)

    page.route("**/v1/models", busy)
    page.wait_for_selector(f'tr.model[data-model="{EMBED}"] .busy')
    downloading = row(page, CHAT).locator("[data-state]")
    assert downloading.get_attribute("data-state") == "downloading" and "43%" in downloading.inner_text()
    assert row(page, RERANK).locator("button[data-action=pull]").count() == 1
    assert row(page, EMBED).locator("button[data-action=pull]").count() == 0
    row(page, EMBED).locator("button[data-action=unload]").click()
    page.wait_for_selector("dialog#confirm[open]")
    assert EMBED in page.inner_text("dialog#confirm")
    page.screenshot(path=shots() / "confirm-unload.png")
    page.click("dialog#confirm button[value=cancel]")
    page.unroute("**/v1/models", busy)
    assert page.locator("dialog#confirm[open]").count() == 0 and unloads == []
    page.click("[aria-controls=tab-chat]")
    page.wait_for_timeout(2500)  # one more poll: the charts show the last requests
    page.screenshot(path=shots() / "dashboard.png", full_page=True)
    if os.environ.get("PLUGHOST_UPDATE_SCREENSHOTS"):
        page.screenshot(path=ROOT / "docs" / "img" / "dashboard.png", full_page=True)
    origin = urlsplit(server)
    foreign = [u for u in recorder.requests if urlsplit(u).netloc != origin.netloc and not u.startswith("data:")]
    assert foreign == []
    assert recorder.errors == []
