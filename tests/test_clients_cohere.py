"""Cohere's API through Cohere's own SDK (``cohere`` 7.3): v1 and v2 rerank, v2 embed, served by the
Qwen3 embedding and reranker plugins on their tiny demo weights."""

from __future__ import annotations

import base64
import math
from collections.abc import Iterator

import cohere
import httpx
import numpy as np
import pytest

import embed_qwen3
import rerank_qwen3
from host.app import create_app
from host.protocol.cohere_embed import int8
from host.testing.pytest_plugin import CPU_ONLY, make_config
from host.testing.server import serve_in_thread

EMBED, RERANK = embed_qwen3.MODEL_ID, rerank_qwen3.MODEL_ID
QUERY = "What is the capital of China?"
DOCS = ["The capital of China is Beijing.", "Gravity pulls objects together.", "北京是中国的首都。"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    from embed_qwen3.testing import TINY as EMBED_TINY
    from rerank_qwen3.testing import TINY as RERANK_TINY

    config = make_config({"models": {EMBED: {"weights": EMBED_TINY}, RERANK: {"weights": RERANK_TINY}}})
    with serve_in_thread(create_app(config, plugins=[embed_qwen3, rerank_qwen3], budgets=CPU_ONLY)) as url:
        yield url


@pytest.fixture(scope="module")
def v1(base_url: str) -> cohere.Client:
    return cohere.Client(api_key="none", base_url=base_url, timeout=120)


@pytest.fixture(scope="module")
def v2(base_url: str) -> cohere.ClientV2:
    return cohere.ClientV2(api_key="none", base_url=base_url, timeout=120)


@pytest.fixture(scope="module")
def scores(base_url: str) -> list[float]:
    """Each document's score as the seed's dialect answers it."""
    body = {"model": RERANK, "query": QUERY, "documents": DOCS}
    results = httpx.post(f"{base_url}/v1/rerank", json=body, timeout=120).json()["results"]
    return [r["score"] for r in sorted(results, key=lambda r: r["index"])]


def test_v1_rerank_with_documents(v1: cohere.Client, scores: list[float]) -> None:
    response = v1.rerank(model=RERANK, query=QUERY, documents=DOCS, top_n=2, return_documents=True)
    assert len(response.results) == 2
    for result in response.results:
        assert result.document is not None and result.document.text == DOCS[result.index]  # not a bare string
        assert result.relevance_score == pytest.approx(scores[result.index])
    assert response.results[0].relevance_score >= response.results[1].relevance_score


def test_v1_rerank_without_documents(v1: cohere.Client) -> None:
    response = v1.rerank(model=RERANK, query=QUERY, documents=DOCS, return_documents=False)
    assert sorted(r.index for r in response.results) == [0, 1, 2]
    assert all(r.document is None for r in response.results)


def test_v2_rerank(v2: cohere.ClientV2, scores: list[float]) -> None:
    response = v2.rerank(model=RERANK, query=QUERY, documents=DOCS, top_n=3)
    assert [r.index for r in response.results] == sorted(range(3), key=lambda i: -scores[i])
    assert [r.relevance_score for r in response.results] == pytest.approx(sorted(scores, reverse=True))


def test_rerank_raw_scores_are_the_margins_behind_the_scores(base_url: str, scores: list[float]) -> None:
    body = {"model": RERANK, "query": QUERY, "documents": DOCS, "raw_scores": True}
    results = httpx.post(f"{base_url}/rerank", json=body, timeout=120).json()["results"]
    raw = {r["index"]: r["relevance_score"] for r in results}
    assert [1 / (1 + math.exp(-raw[i])) for i in range(3)] == pytest.approx(scores, abs=1e-6)
    assert [r["index"] for r in results] == sorted(range(3), key=lambda i: -scores[i])


def test_v2_embed_every_embedding_type(v2: cohere.ClientV2, base_url: str) -> None:
    types = ["float", "int8", "uint8", "binary", "ubinary", "base64"]
    response = v2.embed(model=EMBED, texts=DOCS, input_type="search_document", embedding_types=types)
    e = response.embeddings
    floats = np.asarray(e.float_, dtype=np.float32)
    n, d = floats.shape
    assert n == 3 and np.allclose(np.linalg.norm(floats, axis=1), 1, atol=1e-5)
    assert response.meta is not None and response.meta.billed_units.input_tokens > 0
    # The same vectors as OpenAI's route gives for documents.
    openai = httpx.post(f"{base_url}/v1/embeddings", json={"model": EMBED, "input": DOCS}, timeout=120).json()
    assert np.allclose(floats, [item["embedding"] for item in openai["data"]], atol=1e-6)
    decoded = np.stack([np.frombuffer(base64.b64decode(s), dtype="<f4") for s in e.base64])
    assert np.array_equal(decoded, floats)
    # Binary: one bit per dimension, positive = 1, most significant bit first.
    bits = np.unpackbits(np.asarray(e.ubinary, dtype=np.uint8), axis=1)
    assert np.array_equal(bits, (floats > 0).astype(np.uint8))
    assert np.array_equal(np.asarray(e.binary), np.asarray(e.ubinary) - 128)
    assert len(e.binary[0]) == d // 8 and min(min(row) for row in e.binary) >= -128
    # int8: a fixed scale, so dot products keep their order; uint8 = int8 + 128.
    q = np.asarray(e.int8)
    assert q.min() >= -128 and q.max() <= 127 and np.array_equal(q, int8(floats))
    assert np.array_equal(np.asarray(e.uint8), q + 128)
    cos = (q @ q.T) / np.outer(np.linalg.norm(q, axis=1), np.linalg.norm(q, axis=1))
    assert np.allclose(cos, floats @ floats.T, atol=0.05)


def test_v2_embed_queries_get_the_instruction(v2: cohere.ClientV2, base_url: str) -> None:
    query = v2.embed(model=EMBED, texts=[QUERY], input_type="search_query", embedding_types=["float"])
    document = v2.embed(model=EMBED, texts=[QUERY], input_type="search_document", embedding_types=["float"])
    body = {"model": EMBED, "input": [QUERY], "input_type": "query"}
    openai = httpx.post(f"{base_url}/v1/embeddings", json=body, timeout=120).json()["data"][0]["embedding"]
    assert np.allclose(query.embeddings.float_[0], openai, atol=1e-6)
    assert not np.allclose(query.embeddings.float_[0], document.embeddings.float_[0], atol=1e-3)
    clustering = v2.embed(model=EMBED, texts=[QUERY], input_type="clustering")  # float by default
    assert np.allclose(clustering.embeddings.float_[0], document.embeddings.float_[0], atol=1e-6)


def test_v2_embed_truncate_and_errors(v2: cohere.ClientV2, base_url: str) -> None:
    long = "word " * 50_000
    cut = v2.embed(model=EMBED, texts=[long], input_type="search_document", truncate="END")
    assert len(cut.embeddings.float_[0]) > 0
    with pytest.raises(cohere.errors.BadRequestError) as refused:
        v2.embed(model=EMBED, texts=[long], input_type="search_document", truncate="NONE")
    assert refused.value.body["error"]["param"] == "texts"
    for body, param in [
        ({"texts": ["x"], "input_type": "search_document", "truncate": "START"}, "truncate"),
        ({"texts": ["x"], "input_type": "search_document", "images": ["data:image/png;base64,AA=="]}, "images"),
        ({"texts": ["x"], "input_type": "web"}, "input_type"),
        ({"texts": [], "input_type": "search_document"}, "texts"),
        ({"texts": ["x"], "input_type": "search_document", "embedding_types": ["int4"]}, "embedding_types[0]"),
    ]:
        r = httpx.post(f"{base_url}/v2/embed", json={"model": EMBED, **body}, timeout=60)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, (body, r.text)
