"""``/v1/rerank``, ``/rerank`` and ``/v2/rerank`` served by the plugin on a real socket, with the
request bodies RAG clients send (Dify, RAGFlow, FastGPT, Open WebUI) and the fields they read."""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest

from host.app import create_app
from host.testing.pytest_plugin import CPU_ONLY, make_config
from host.testing.server import serve_in_thread
from rerank_qwen3.testing import DOCS, QUERY, TINY, mixed_documents

MODEL = "Qwen3-Reranker-0.6B"
MAX_DOCUMENTS = 60


@pytest.fixture(scope="module")
def base_url(tiny_path: Any) -> Iterator[str]:
    """The host serving only this plugin (tiny weights) on loopback; ``http://127.0.0.1:<port>``."""
    import rerank_qwen3

    config = make_config({"models": {MODEL: {"weights": TINY}}, "server": {"max_rerank_documents": MAX_DOCUMENTS}})
    with serve_in_thread(create_app(config, plugins=[rerank_qwen3], budgets=CPU_ONLY)) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=60) as http:
        yield http


@pytest.fixture(scope="module")
def reference(recipe: Any) -> list[float]:
    """The publisher's recipe scores of DOCS against QUERY."""
    return recipe.scores(QUERY, DOCS)


def post(client: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_contract_shape_sorted_scores_match_recipe(client: httpx.Client, reference: list[float]) -> None:
    data = post(client, "/v1/rerank", {"model": MODEL, "query": QUERY, "documents": DOCS})
    assert data["model"] == MODEL and data["object"] == "rerank"
    results = data["results"]
    assert sorted(r["index"] for r in results) == list(range(len(DOCS)))  # all, when no limit is given
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    for r in results:
        assert r["relevance_score"] == r["score"]
        assert r["document"] == DOCS[r["index"]]
        assert abs(r["score"] - reference[r["index"]]) <= 1e-4
    usage = data["usage"]
    assert usage["prompt_tokens"] == usage["total_tokens"] > 0


def test_usage_counts_every_prompt_token(client: httpx.Client, backend: Any) -> None:
    data = post(client, "/v1/rerank", {"model": MODEL, "query": QUERY, "documents": DOCS})
    expected = sum(len(backend.encoder.encode(backend.instruction, QUERY, d).ids) for d in DOCS)
    assert data["usage"]["prompt_tokens"] == expected


def test_seed_api_example(client: httpx.Client) -> None:
    body = {
        "model": MODEL,
        "query": "什么是人工智能？",
        "documents": ["人工智能是计算机科学的一个分支", "机器学习是AI的重要组成部分"],
        "top_k": 2,
    }
    data = post(client, "/v1/rerank", body)
    assert [set(r) >= {"index", "score", "document"} for r in data["results"]] == [True, True]
    assert {r["document"] for r in data["results"]} == set(body["documents"])


@pytest.mark.parametrize("field", ["top_k", "top_n"])
def test_limit_keeps_the_best(client: httpx.Client, reference: list[float], field: str) -> None:
    data = post(client, "/v1/rerank", {"model": MODEL, "query": QUERY, "documents": DOCS, field: 3})
    best = sorted(range(len(DOCS)), key=lambda i: reference[i], reverse=True)[:3]
    assert [r["index"] for r in data["results"]] == best


def test_return_documents_false_and_document_objects(client: httpx.Client) -> None:
    body = {"model": MODEL, "query": QUERY, "documents": [{"text": d} for d in DOCS], "return_documents": False}
    data = post(client, "/v1/rerank", body)
    assert len(data["results"]) == len(DOCS)
    assert all("document" not in r for r in data["results"])
    plain = post(client, "/v1/rerank", {"model": MODEL, "query": QUERY, "documents": DOCS})
    assert {r["index"]: r["score"] for r in data["results"]} == {r["index"]: r["score"] for r in plain["results"]}


def test_three_paths_answer_alike(client: httpx.Client) -> None:
    body = {"model": MODEL, "query": QUERY, "documents": DOCS, "top_n": 5}
    answers = [post(client, path, body)["results"] for path in ("/v1/rerank", "/rerank", "/v2/rerank")]
    assert answers[0] == answers[1] == answers[2]


def test_instruction_per_request(client: httpx.Client, recipe: Any) -> None:
    instruction = "Given a question, find the passage that states the answer"
    data = post(client, "/v1/rerank", {"model": MODEL, "query": QUERY, "documents": DOCS, "instruction": instruction})
    reference = recipe.scores(QUERY, DOCS, instruction)
    assert max(abs(r["score"] - reference[r["index"]]) for r in data["results"]) <= 1e-4


def test_hub_id_alias(client: httpx.Client) -> None:
    data = post(client, "/v1/rerank", {"model": "Qwen/Qwen3-Reranker-0.6B", "query": QUERY, "documents": DOCS[:2]})
    assert data["model"] == MODEL


# -- what RAG clients send and read ------------------------------------------------------------------


def test_dify(base_url: str, client: httpx.Client, reference: list[float]) -> None:
    # Dify's OpenAI-API-compatible provider: str(URL(endpoint_url) / "rerank"), return_documents true;
    # it reads results[].index, .relevance_score and .document (a string or {"text": ...}).
    endpoint_url = f"{base_url}/v1"
    body = {"model": MODEL, "query": QUERY, "documents": DOCS, "top_n": 4, "return_documents": True}
    response = httpx.post(
        f"{endpoint_url}/rerank",
        content=json.dumps(body),
        headers={"Authorization": "Bearer dummy", "Content-Type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == 4
    for r in results:
        document = r["document"]
        text = document.get("text") if isinstance(document, dict) else document
        assert text == DOCS[r["index"]]
        assert abs(r["relevance_score"] - reference[r["index"]]) <= 1e-4
    # Dify sends top_n: null when the user set no limit.
    unlimited = post(client, "/v1/rerank", {**body, "top_n": None})
    assert len(unlimited["results"]) == len(DOCS)


def test_ragflow_posts_to_rerank_without_v1(base_url: str, reference: list[float]) -> None:
    # RAGFlow's OpenAI-API-Compatible reranker: urljoin(base_url, "/rerank") drops the /v1 prefix.
    url = urljoin(f"{base_url}/v1", "/rerank")
    assert url == f"{base_url}/rerank"
    body = {"model": MODEL, "query": QUERY, "documents": DOCS, "top_n": len(DOCS)}
    res = httpx.post(url, json=body, headers={"Authorization": "Bearer dummy"}, timeout=60).json()
    rank = [0.0] * len(DOCS)
    for d in res["results"]:
        rank[d["index"]] = d["relevance_score"]
    assert max(abs(a - b) for a, b in zip(rank, reference)) <= 1e-4


def test_fastgpt_without_top_n(base_url: str, reference: list[float]) -> None:
    # FastGPT: POST `${baseUrl}/rerank` {model, query, documents}; maps results[].index -> relevance_score.
    body = {"model": MODEL, "query": QUERY, "documents": DOCS}
    data = httpx.post(f"{base_url}/v1/rerank", json=body, timeout=60).json()
    assert data["id"] and len(data["results"]) == len(DOCS)
    scores = {item["index"]: item["relevance_score"] for item in data["results"]}
    assert max(abs(scores[i] - reference[i]) for i in range(len(DOCS))) <= 1e-4


def test_open_webui_reads_one_result_per_document(base_url: str, reference: list[float]) -> None:
    # Open WebUI's ExternalReranker: top_n = len(docs); sorts results by index and zips them with docs.
    docs = [*DOCS, "extra document about rivers", "另一个文档"]
    payload = {"model": MODEL, "query": QUERY, "documents": docs, "top_n": len(docs)}
    data = httpx.post(
        f"{base_url}/v1/rerank",
        json=payload,
        headers={"Content-Type": "application/json", "Authorization": "Bearer dummy"},
        timeout=60,
    ).json()
    sorted_results = sorted(data["results"], key=lambda x: x["index"])
    assert [r["index"] for r in sorted_results] == list(range(len(docs)))
    scores = [r["relevance_score"] for r in sorted_results]
    assert max(abs(a - b) for a, b in zip(scores[: len(DOCS)], reference)) <= 1e-4


# -- client errors and concurrency ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"query": QUERY, "documents": []}, "documents"),
        ({"query": "  ", "documents": DOCS}, "query"),
        ({"query": QUERY, "documents": DOCS, "top_k": 0}, "top_k"),
        ({"query": QUERY, "documents": DOCS, "top_n": -1}, "top_n"),
        ({"query": QUERY, "documents": ["x"] * (MAX_DOCUMENTS + 1)}, "documents"),
        ({"query": "capital " * 2100, "documents": DOCS}, "query"),
    ],
)
def test_bad_requests_are_400(client: httpx.Client, body: dict[str, Any], param: str) -> None:
    response = client.post("/v1/rerank", json={"model": MODEL, **body})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param
    if param == "documents" and body["documents"]:
        assert str(MAX_DOCUMENTS) in error["message"]


def test_server_survives_bad_requests(client: httpx.Client) -> None:
    assert (
        client.post("/v1/rerank", json={"model": MODEL, "query": "capital " * 2100, "documents": DOCS}).status_code
        == 400
    )
    assert client.post("/v1/rerank", content=b"{not json").status_code == 400
    assert post(client, "/v1/rerank", {"model": MODEL, "query": QUERY, "documents": DOCS[:2]})["results"]


def test_concurrent_requests_match_sequential(client: httpx.Client) -> None:
    bodies = [
        {"model": MODEL, "query": q, "documents": mixed_documents(20, seed=s)}
        for s, q in enumerate([QUERY, "Explain gravity", "中国的首都是哪里？", "hello"] * 2)
    ]
    sequential = [post(client, "/v1/rerank", b)["results"] for b in bodies]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        concurrent_results = list(pool.map(lambda b: post(client, "/v1/rerank", b)["results"], bodies))
    for one, other in zip(sequential, concurrent_results):
        a = {r["index"]: r["score"] for r in one}
        b = {r["index"]: r["score"] for r in other}
        assert a.keys() == b.keys()
        assert max(abs(a[i] - b[i]) for i in a) <= 1e-5
