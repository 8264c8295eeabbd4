"""Issue 24, the server side: no download inside a request. ``POST /v1/models/{id}/pull`` downloads
in the background (SSE progress to 100 %), ``/v1/models`` and ``/health`` show it, a request for the
model meanwhile gets a 503 naming the progress, every other model answers as usual, and
``download.on_first_use`` makes a request wait (a stream with its keep-alive comments) instead."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from host.app import create_app
from host.contract.spec import Task
from host.testing.fakehub import FakeHub
from host.testing.fakes import FakePlugin, fake_spec
from host.testing.http import CHAT, EMBED, RERANK, assert_error, sse_events
from host.testing.pytest_plugin import CPU_ONLY, make_config

REPO_ROOT = Path(__file__).resolve().parents[1]
PLUGINS = REPO_ROOT / "plugins"
MODEL = "Qwen3-Embedding-0.6B"
REPO = "Qwen/Qwen3-Embedding-0.6B"

pytestmark = pytest.mark.slow


def app_for(hub: FakeHub, tmp_path: Path, plugins: list[object] = (), **download: Any) -> Any:  # type: ignore[assignment]
    config = make_config(
        {
            "plugins": {"paths": [str(PLUGINS)], "disable": ["chat_qwen_awq", "rerank_qwen3"]},
            "demo": False,
            "server": {"stream_keepalive_s": 0.2},
            "download": {"dir": str(tmp_path / "models"), "endpoints": hub.endpoints, **download},
        }
    )
    return create_app(config, plugins=plugins, budgets=CPU_ONLY)


def wait_for(client: TestClient, check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check(client)
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_missing_model_gets_503_with_retry_after_naming_the_command(hub: FakeHub, tmp_path: Path) -> None:
    with TestClient(app_for(hub, tmp_path)) as client:
        response = client.post(EMBED, json={"model": MODEL, "input": "x"})
        error = assert_error(response, 503, code="model_not_downloaded")
        assert MODEL in error["message"] and f"plughost pull {MODEL}" in error["message"]
        assert f"POST /v1/models/{MODEL}/pull" in error["message"]
        assert int(response.headers["Retry-After"]) > 0
        card = client.get(f"/v1/models/{MODEL}").json()
        assert card["weights"] == {"state": "absent", "repo": REPO}
        assert hub.file_requests() == []  # the request downloaded nothing


def test_the_sse_pull_stream_reaches_100_percent_and_the_model_serves(hub: FakeHub, tmp_path: Path) -> None:
    hub.bytes_per_s = hub.total_bytes(REPO) / 1.5  # a few progress events
    with TestClient(app_for(hub, tmp_path)) as client:
        response = client.post(f"/v1/models/{MODEL}/pull?stream=true")
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(e) for e in sse_events(response)]
        assert events[-1]["state"] == "done" and events[-1]["percent"] == 100.0
        assert events[-1]["done_bytes"] == events[-1]["total_bytes"] == hub.total_bytes(REPO)
        assert any(e["state"] == "downloading" and 0 < e["percent"] < 100 for e in events)
        percents = [e["percent"] for e in events]
        assert percents == sorted(percents)
        assert client.post(EMBED, json={"model": MODEL, "input": "x"}).status_code == 200
        # Pulling again: already there, one event.
        again = [json.loads(e) for e in sse_events(client.post(f"/v1/models/{MODEL}/pull?stream=true"))]
        assert [(e["state"], e["percent"]) for e in again] == [("done", 100.0)]
        metrics = client.get("/metrics").text
        line = f'plughost_download_bytes_total{{model="{MODEL}",source="huggingface"}} {float(hub.total_bytes(REPO))}'
        assert line in metrics


def test_while_one_model_downloads_it_gets_503_and_the_others_answer(hub: FakeHub, tmp_path: Path) -> None:
    hub.bytes_per_s = hub.total_bytes(REPO) / 4
    others = FakePlugin([fake_spec("fake-rerank", Task.RERANK)])
    with TestClient(app_for(hub, tmp_path, plugins=[others])) as client:
        started = client.post(f"/v1/models/{MODEL}/pull")
        assert started.status_code == 202 and started.json()["weights"]["state"] == "downloading"

        def downloading(c: TestClient) -> dict[str, Any] | None:
            weights = c.get(f"/v1/models/{MODEL}").json()["weights"]
            return weights if weights["state"] == "downloading" and weights["percent"] > 0 else None

        weights = wait_for(client, downloading)
        assert 0 < weights["done_bytes"] < weights["total_bytes"] == hub.total_bytes(REPO)
        health = client.get("/health").json()
        assert [d["id"] for d in health["downloading"]] == [MODEL] and health["downloading"][0]["percent"] > 0
        response = client.post(EMBED, json={"model": MODEL, "input": "x"})
        error = assert_error(response, 503, code="model_downloading")
        assert "downloading" in error["message"] and "%" in error["message"] and MODEL in error["message"]
        assert int(response.headers["Retry-After"]) >= 5
        answered = client.post(RERANK, json={"model": "fake-rerank", "query": "q", "documents": ["a", "b"]})
        assert answered.status_code == 200, answered.text
        assert client.post(f"/v1/models/{MODEL}/pull").status_code == 202  # the same pull, not a second one
        wait_for(client, lambda c: not c.get("/health").json()["downloading"])
        assert client.get(f"/v1/models/{MODEL}").json()["weights"]["state"] == "on_disk"
        assert client.post(EMBED, json={"model": MODEL, "input": "x"}).status_code == 200
    weights_requests = [r for r in hub.file_requests() if r[1].endswith("model.safetensors")]
    assert len(weights_requests) == 1


def test_on_first_use_a_stream_waits_for_the_download_with_keepalives(hub: FakeHub, tmp_path: Path) -> None:
    """A fake chat model whose weights are a hub repo: the wait is in the scheduler, so the chat
    stream's existing keep-alive comments cover it."""
    folder = tmp_path / "fake-chat-weights"
    folder.mkdir()
    (folder / "config.json").write_text("{}", encoding="utf-8")
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 400)
    with FakeHub({"org/fake-chat": folder}) as chat_hub:
        chat_hub.bytes_per_s = 102400 / 1.5
        chat = FakePlugin([fake_spec("fake-chat", Task.CHAT, weights="org/fake-chat")])
        with TestClient(app_for(chat_hub, tmp_path, plugins=[chat], on_first_use=True)) as client:
            body = {"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}], "stream": True}
            response = client.post(CHAT, json=body)
            assert response.status_code == 200
            assert ": waiting for model" in response.text
            assert sse_events(response)[-1] == "[DONE]" and '"error"' not in response.text
            assert client.get("/v1/models/fake-chat").json()["weights"]["state"] == "on_disk"
            chat_hub.corrupt.add("config.json")  # unused now: the model is on disk and stays served
            assert client.post(CHAT, json={**body, "stream": False}).status_code == 200


def test_pull_of_a_local_folder_model_is_a_clear_400(hub: FakeHub, tmp_path: Path) -> None:
    local = FakePlugin([fake_spec("local-model", Task.EMBEDDING, weights=str(tmp_path))])
    with TestClient(app_for(hub, tmp_path, plugins=[local])) as client:
        assert_error(client.post("/v1/models/local-model/pull"), 400, code="nothing_to_pull")
        assert_error(client.post(f"/v1/models/{MODEL}/fetch"), 404, code="not_found")
        assert_error(client.post("/v1/models/no-such-model/pull"), 404, code="model_not_found")
