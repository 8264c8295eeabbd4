"""What every route shares: the error envelope, body validation and limits, unknown routes and methods.

Every error body must be OpenAI's ``{"error": {"message", "type", "param", "code"}}`` with a
string ``code``; a client mistake is a 400 that names the field in ``param``.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient

from host.contract.config import ServerConfig
from host.testing.fakes import FakePlugin
from host.testing.http import CHAT, EMBED, RERANK, assert_error

USER = [{"role": "user", "content": "hi there"}]

VALID = {
    CHAT: {"model": "fake-chat", "messages": USER},
    EMBED: {"model": "fake-embed", "input": "hello"},
    RERANK: {"model": "fake-rerank", "query": "q", "documents": ["d"]},
}


def chat(client: TestClient, **body: Any) -> httpx.Response:
    return client.post(CHAT, json={"model": "fake-chat", "messages": USER, **body})


# -- shared behaviour of the POST routes ---------------------------------------------------------------


@pytest.mark.parametrize("path", [CHAT, EMBED, RERANK, "/rerank", "/v2/rerank"])
def test_post_answers_200_not_201(client: TestClient, path: str) -> None:
    r = client.post(path, json=VALID.get(path, VALID[RERANK]))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize("path", [CHAT, EMBED, RERANK])
@pytest.mark.parametrize("raw", [b"{not json", b'{"model": "fake-chat",', b"\xff\xfe"])
def test_malformed_json_is_400(client: TestClient, path: str, raw: bytes) -> None:
    error = assert_error(
        client.post(path, content=raw, headers={"content-type": "application/json"}), 400, code="invalid_json"
    )
    assert "JSON" in error["message"]


@pytest.mark.parametrize("path", [CHAT, EMBED, RERANK])
@pytest.mark.parametrize("raw", [b"", b"   ", b"[]", b'"text"', b"null"])
def test_empty_or_non_object_body_is_400(client: TestClient, path: str, raw: bytes) -> None:
    assert_error(client.post(path, content=raw, headers={"content-type": "application/json"}), 400)


@pytest.mark.parametrize("path", [CHAT, EMBED, RERANK])
def test_missing_model_names_the_field(client: TestClient, path: str) -> None:
    body = {k: v for k, v in VALID[path].items() if k != "model"}
    error = assert_error(client.post(path, json=body), 400, param="model")
    assert "model" in error["message"]


@pytest.mark.parametrize("path", [CHAT, EMBED, RERANK])
def test_unknown_model_is_404(client: TestClient, path: str) -> None:
    error = assert_error(
        client.post(path, json={**VALID[path], "model": "gpt-5"}), 404, code="model_not_found", param="model"
    )
    assert "gpt-5" in error["message"]
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("path", "model"), [(CHAT, "fake-embed"), (EMBED, "fake-rerank"), (RERANK, "fake-chat"), (EMBED, "fake-chat-alias")]
)
def test_model_of_the_wrong_task_is_400(client: TestClient, path: str, model: str) -> None:
    error = assert_error(
        client.post(path, json={**VALID[path], "model": model}), 400, code="model_task_mismatch", param="model"
    )
    assert "not" in error["message"]


@pytest.mark.parametrize("path", [CHAT, EMBED, RERANK])
def test_body_over_the_limit_is_413(client: TestClient, path: str, plugin: FakePlugin, limits: ServerConfig) -> None:
    body = {**VALID[path], "user": "x" * (int(limits.max_body_bytes) + 1)}
    error = assert_error(client.post(path, json=body), 413, code="payload_too_large")
    assert "max_body_bytes" in error["message"]
    assert plugin.calls.count("load") == 0  # rejected before any model was touched


def test_chunked_body_over_the_limit_is_413(client: TestClient, limits: ServerConfig) -> None:
    """Without a Content-Length the limit still holds (the body is counted while it is read)."""
    body = json.dumps({**VALID[CHAT], "user": "x" * (2 * int(limits.max_body_bytes))}).encode()
    chunks = (body[i : i + 512] for i in range(0, len(body), 512))
    r = client.post(CHAT, content=chunks, headers={"content-type": "application/json"})
    assert "content-length" not in r.request.headers
    assert_error(r, 413, code="payload_too_large")


def test_body_just_under_the_limit_is_accepted(client: TestClient, limits: ServerConfig) -> None:
    body = {**VALID[EMBED], "user": ""}
    body["user"] = "x" * (int(limits.max_body_bytes) - len(json.dumps(body)) - 10)
    assert client.post(EMBED, json=body).status_code == 200


@pytest.mark.parametrize(
    ("path", "extra"),
    [
        (CHAT, {"metadata": {"trace": 1}, "parallel_tool_calls": False, "store": False}),
        (CHAT, {"messages": [{"role": "user", "content": "hi", "refusal": None, "x-custom": [1]}]}),
        (CHAT, {"stream_options": {"include_usage": False, "continuous_usage_stats": True}}),
        (EMBED, {"truncate_prompt_tokens": 12, "extra_body": {}}),
        (RERANK, {"rank_fields": ["text"], "max_tokens_per_doc": 512}),
    ],
)
def test_unknown_fields_are_tolerated(client: TestClient, path: str, extra: dict[str, Any]) -> None:
    assert client.post(path, json={**VALID[path], **extra}).status_code == 200


def test_unknown_route_is_an_enveloped_404(client: TestClient) -> None:
    assert_error(client.get("/v1/completions-that-do-not-exist"), 404, code="not_found")
    assert_error(client.post("/v1/engines/davinci/completions", json={}), 404, code="not_found")


def test_wrong_method_is_an_enveloped_405(client: TestClient) -> None:
    assert_error(client.get(CHAT), 405, code="method_not_allowed")
    assert_error(client.delete("/v1/models"), 405, code="method_not_allowed")


def test_an_enveloped_405_keeps_the_allow_header(client: TestClient) -> None:
    r = client.get(CHAT)
    assert_error(r, 405, code="method_not_allowed")
    assert "POST" in r.headers["allow"]
