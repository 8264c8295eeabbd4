"""Issue 12, finding 4: over-long inputs are rejected (or truncated) without tokenising all of them.

The real plugins with their tiny stand-ins (demo profile). A 5 MB string used to be tokenised in
full before the length check: seconds per request and a GiB of RSS.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar.testing import TestClient

from host.app import create_app
from host.testing.pytest_plugin import CPU_ONLY, make_config

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
CHAT, EMBED, RERANK = "Qwen2.5-7B-Instruct-AWQ", "Qwen3-Embedding-0.6B", "Qwen3-Reranker-0.6B"
HUGE = "The Great Wall of China is long. 长城很长。 " * 120_000  # about 5 MB of UTF-8
#: Well under the seconds that tokenising all of it takes; generous for a busy machine.
FAST_S = 1.5


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    config = make_config({"demo": True, "plugins": {"paths": [str(PLUGINS)]}})
    with TestClient(create_app(config, budgets=CPU_ONLY), timeout=120) as c:
        for model in (CHAT, EMBED, RERANK):
            assert c.post(f"/v1/models/{model}/load").status_code == 200
        yield c


def _timed(client: TestClient, path: str, body: dict) -> tuple[float, dict, int]:
    start = time.monotonic()
    response = client.post(path, json=body)
    return time.monotonic() - start, response.json(), response.status_code


def test_huge_chat_message_is_a_fast_400_naming_the_context(client: TestClient) -> None:
    body = {"model": CHAT, "messages": [{"role": "user", "content": HUGE}], "max_tokens": 5}
    took, data, status = _timed(client, "/v1/chat/completions", body)
    assert status == 400 and data["error"]["code"] == "context_length_exceeded"
    assert "maximum context length is 2048 tokens" in data["error"]["message"]
    assert took < FAST_S, f"{took:.2f} s"


def test_huge_embedding_input_is_a_fast_400_naming_the_limit(client: TestClient) -> None:
    took, data, status = _timed(client, "/v1/embeddings", {"model": EMBED, "input": ["short", HUGE]})
    assert status == 400 and data["error"]["code"] == "context_length_exceeded"
    assert "input[1]" in data["error"]["message"] and "at most" in data["error"]["message"]
    assert took < FAST_S, f"{took:.2f} s"


def test_huge_embedding_input_truncates_like_its_prefix(client: TestClient) -> None:
    took, data, status = _timed(client, "/v1/embeddings", {"model": EMBED, "input": HUGE, "truncate": True})
    assert status == 200 and took < FAST_S, f"{took:.2f} s"
    _, prefix, _ = _timed(client, "/v1/embeddings", {"model": EMBED, "input": HUGE[:200_000], "truncate": True})
    assert data["data"][0]["embedding"] == pytest.approx(prefix["data"][0]["embedding"], abs=1e-5)


def test_huge_rerank_document_is_cut_fast(client: TestClient) -> None:
    body = {"model": RERANK, "query": "Where is the wall?", "documents": ["a wall", HUGE]}
    took, data, status = _timed(client, "/v1/rerank", body)
    assert status == 200 and len(data["results"]) == 2
    assert took < FAST_S, f"{took:.2f} s"
    body = {"model": RERANK, "query": HUGE, "documents": ["a wall"]}
    took, data, status = _timed(client, "/v1/rerank", body)
    assert status == 400 and data["error"]["param"] == "query" and took < FAST_S, f"{took:.2f} s"
