"""``POST /v1/rerank`` (and its aliases) against the fake backend: ordering, limits, validation."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from litestar.testing import TestClient

from host.contract.config import ServerConfig
from host.testing.fakes import FakePlugin
from host.testing.http import RERANK, assert_error

USER = [{"role": "user", "content": "hi there"}]


# -- rerank ------------------------------------------------------------------------------------------------

DOCS = ["cats purr", "dogs bark loudly", "cats and dogs play", "stock markets"]


def rerank(client: TestClient, path: str = RERANK, **body: Any) -> httpx.Response:
    return client.post(path, json={"model": "fake-rerank", "query": "cats dogs", "documents": DOCS, **body})


def text_of(document: Any, cohere: bool) -> str:
    """The document's text, checking its shape: ``{"text": ...}`` in Cohere's dialect, else a string."""
    assert isinstance(document, dict) == cohere, document
    return document["text"] if cohere else document


@pytest.mark.parametrize(("path", "cohere"), [(RERANK, False), ("/rerank", True), ("/v2/rerank", True)])
def test_rerank_orders_by_score_and_returns_all_by_default(client: TestClient, path: str, cohere: bool) -> None:
    body = rerank(client, path).json()
    assert body["model"] == "fake-rerank"
    results = body["results"]
    assert len(results) == len(DOCS)
    assert results[0]["index"] == 2 and results[0]["score"] == results[0]["relevance_score"] == 1.0
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert sorted(r["index"] for r in results) == list(range(len(DOCS)))
    assert all(
        r["relevance_score"] == r["score"] and text_of(r["document"], cohere) == DOCS[r["index"]] for r in results
    )
    assert results[-1]["index"] == 3 and results[-1]["score"] == 0.0


@pytest.mark.parametrize(
    ("path", "fields", "cohere"),
    [
        # The seed's request (top_k or no limit, no return_documents) keeps the seed's answer ...
        (RERANK, {"top_k": 2}, False),
        (RERANK, {}, False),
        (RERANK, {"top_n": None, "return_documents": None}, False),  # null: not sent
        # ... what Cohere's, Jina's and vLLM's clients send gets {"text": ...}.
        (RERANK, {"top_n": 2}, True),
        (RERANK, {"return_documents": True}, True),
        (RERANK, {"top_k": 2, "return_documents": True}, True),
        ("/rerank", {"top_k": 2}, True),
        ("/v2/rerank", {}, True),
    ],
)
def test_rerank_dialect_decides_the_document_shape(
    client: TestClient, path: str, fields: dict[str, Any], cohere: bool
) -> None:
    results = rerank(client, path, **fields).json()["results"]
    assert results and all(text_of(r["document"], cohere) == DOCS[r["index"]] for r in results)


def test_rerank_raw_scores_need_a_model_that_has_them(client: TestClient) -> None:
    # The fake reports no raw scores (the Qwen3 reranker's are tested with its plugin).
    assert_error(rerank(client, raw_scores=True), 400, param="raw_scores")
    assert rerank(client, raw_scores=False).status_code == 200


@pytest.mark.parametrize(
    ("limit", "expected"),
    [({"top_k": 2}, 2), ({"top_n": 1}, 1), ({"top_n": 10}, 4), ({"top_n": 1, "top_k": 3}, 1), ({"top_k": None}, 4)],
)
def test_rerank_limits(client: TestClient, limit: dict[str, Any], expected: int) -> None:
    results = rerank(client, **limit).json()["results"]
    assert len(results) == expected
    assert results[0]["index"] == 2


def test_rerank_without_documents_in_results(client: TestClient) -> None:
    results = rerank(client, return_documents=False).json()["results"]
    assert all(set(r) == {"index", "score", "relevance_score"} for r in results)


def test_rerank_document_objects(client: TestClient, plugin: FakePlugin) -> None:
    docs = [{"text": "cats purr"}, "dogs", {"text": "cats dogs", "id": "doc-7"}]
    results = rerank(client, documents=docs).json()["results"]
    assert results[0] == {"index": 2, "score": 1.0, "relevance_score": 1.0, "document": "cats dogs"}  # seed shape
    assert plugin.calls.of("rerank")[0].documents == ("cats purr", "dogs", "cats dogs")


def test_rerank_instruction_reaches_the_backend(client: TestClient, plugin: FakePlugin) -> None:
    rerank(client, instruction="Find pet facts")
    assert plugin.calls.of("rerank")[0].instruction == "Find pet facts"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"documents": []}, "documents"),
        ({"query": ""}, "query"),
        ({"query": "   "}, "query"),
        ({"top_k": 0}, "top_k"),
        ({"top_n": -1}, "top_n"),
        ({"top_k": "2"}, "top_k"),
        ({"documents": "one doc"}, "documents"),
        ({"documents": [1]}, "documents[0]"),
        ({"documents": [{"txt": "a"}]}, "documents[0].text"),
        ({"query": None}, "query"),
        ({"return_documents": "no"}, "return_documents"),
    ],
)
def test_rerank_validation_names_the_field(client: TestClient, body: dict[str, Any], param: str) -> None:
    assert_error(rerank(client, **body), 400, param=param)


def test_rerank_too_many_documents(client: TestClient, limits: ServerConfig) -> None:
    assert rerank(client, documents=["d"] * limits.max_rerank_documents).status_code == 200
    error = assert_error(rerank(client, documents=["d"] * (limits.max_rerank_documents + 1)), 400, param="documents")
    assert f"limit is {limits.max_rerank_documents}" in error["message"]
