"""``/v1/models`` (list, one, load/unload) and ``/health``."""

from __future__ import annotations

from typing import Any

import httpx
from litestar.testing import TestClient

from host.contract.spec import Task
from host.testing.fakes import FakePlugin, fake_spec
from host.testing.http import CHAT, EMBED, assert_error

USER = [{"role": "user", "content": "hi there"}]


def chat(client: TestClient, **body: Any) -> httpx.Response:
    return client.post(CHAT, json={"model": "fake-chat", "messages": USER, **body})


def embed(client: TestClient, input: Any, **body: Any) -> httpx.Response:
    return client.post(EMBED, json={"model": "fake-embed", "input": input, **body})


# -- models, load/unload, health ----------------------------------------------------------------------------


def test_list_models(client: TestClient) -> None:
    r = client.get("/v1/models")
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list"
    cards = {m["id"]: m for m in body["data"]}
    assert set(cards) == {"fake-chat", "fake-embed", "fake-rerank", "bad-stream", "crash-stream"}
    for card in cards.values():
        assert card["object"] == "model"
        assert isinstance(card["created"], int)
        assert card["owned_by"] == "fakes"
        assert card["status"]["state"] == "available"  # nothing is loaded until used
    assert {cards[m]["task"] for m in ("fake-chat", "fake-embed", "fake-rerank")} == {"chat", "embedding", "rerank"}
    assert cards["fake-chat"]["aliases"] == ["fake-chat-alias"]
    assert cards["fake-embed"]["aliases"] == ["text-embedding-3-small"]  # added by the config


def test_models_show_residency_after_use(client: TestClient) -> None:
    assert chat(client).status_code == 200
    cards = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    status = cards["fake-chat"]["status"]
    assert (status["state"], status["device"], status["placement"]) == ("resident", "cpu", "cpu")
    assert cards["fake-embed"]["status"]["state"] == "available"


def test_get_one_model_by_id_or_alias(client: TestClient) -> None:
    for name in ("fake-embed", "text-embedding-3-small"):
        card = client.get(f"/v1/models/{name}").json()
        assert (card["id"], card["object"], card["task"]) == ("fake-embed", "model", "embedding")
    assert_error(client.get("/v1/models/gpt-5"), 404, code="model_not_found")


def test_load_and_unload(client: TestClient, plugin: FakePlugin) -> None:
    r = client.post("/v1/models/fake-rerank/load")
    assert r.status_code == 200, r.text
    assert r.json()["status"]["state"] == "resident"
    assert plugin.calls.count("load", "fake-rerank") == 1
    assert client.get("/health").json()["resident"] == ["fake-rerank"]
    r = client.post("/v1/models/fake-rerank/unload")
    assert r.status_code == 200
    assert r.json()["status"]["state"] == "available"
    assert plugin.calls.count("unload", "fake-rerank") == 1
    assert client.post("/v1/models/fake-rerank/unload").json()["status"]["state"] == "available"  # idempotent
    assert plugin.calls.count("unload", "fake-rerank") == 1
    assert client.post("/v1/models/fake-chat-alias/load").json()["id"] == "fake-chat"  # aliases resolve
    assert_error(client.post("/v1/models/gpt-5/load"), 404, code="model_not_found")
    assert_error(client.post("/v1/models/gpt-5/unload"), 404, code="model_not_found")


def test_health(client: TestClient) -> None:
    r = client.get("/health")
    assert r.status_code == 200
    assert r.json() == {
        "status": "ok",
        "ready": True,
        "models": 5,
        "resident": [],
        "loading": [],
        "failed": [],
        "downloading": [],
    }
    embed(client, "a")
    assert client.get("/health").json()["resident"] == ["fake-embed"]


def test_the_fixture_client_serves_the_fakes(plughost_client: TestClient) -> None:
    """The shipped ``plughost_client`` fixture works as documented for plugin authors."""
    assert {m["id"] for m in plughost_client.get("/v1/models").json()["data"]} == {
        "fake-chat",
        "fake-embed",
        "fake-rerank",
    }
    assert plughost_client.post(CHAT, json={"model": "fake-chat", "messages": USER}).status_code == 200


def test_model_routes_accept_ids_with_a_slash(plughost_app) -> None:
    from host.testing.fakes import FakePlugin

    plugin = FakePlugin([fake_spec("Qwen/Qwen3-Embedding-0.6B", Task.EMBEDDING, aliases=("org/alias",))])
    with TestClient(plughost_app(plugins=[plugin])) as client:
        assert client.get("/v1/models/Qwen/Qwen3-Embedding-0.6B").json()["id"] == "Qwen/Qwen3-Embedding-0.6B"
        assert client.get("/v1/models/org/alias").json()["id"] == "Qwen/Qwen3-Embedding-0.6B"
        loaded = client.post("/v1/models/org/alias/load")
        assert loaded.status_code == 200 and loaded.json()["status"]["state"] == "resident"
        assert client.post("/v1/models/Qwen/Qwen3-Embedding-0.6B/unload").json()["status"]["state"] == "available"
        bad = client.post("/v1/models/Qwen/Qwen3-Embedding-0.6B/explode")
        assert bad.status_code == 404 and bad.json()["error"]["code"] == "not_found"
