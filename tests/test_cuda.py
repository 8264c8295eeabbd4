"""The host on a real GPU: measured budgets, GPU placements granted and used, unloading that frees GPU memory.

Skipped where torch sees no CUDA device (CI has none). The three real plugins serve their tiny
random-weight models; the scheduler decides the placements from the memory it measures.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch

from host.app import create_app
from host.contract.spec import GiB
from host.scheduling.budgets import detect_gpus, resolve_budgets
from host.scheduling.policy import Budgets
from host.testing.pytest_plugin import make_config
from host.testing.server import serve_in_thread

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

ROOT = Path(__file__).resolve().parents[1]
CHAT, EMBED, RERANK = "Qwen2.5-7B-Instruct-AWQ", "Qwen3-Embedding-0.6B", "Qwen3-Reranker-0.6B"


@pytest.fixture(scope="module")
def plugins() -> list[Any]:
    import chat_qwen_awq
    import embed_qwen3
    import rerank_qwen3

    return [chat_qwen_awq, embed_qwen3, rerank_qwen3]


def _config() -> Any:
    return make_config(
        {
            "models": {
                CHAT: {"weights": "demo:chat_qwen_awq.demo:TINY_AWQ"},
                EMBED: {"weights": "demo:embed_qwen3.demo:TINY"},
                RERANK: {"weights": "demo:rerank_qwen3.demo:TINY"},
            }
        }
    )


def _status(url: str, model: str) -> dict[str, Any]:
    return httpx.get(f"{url}/v1/models/{model}", timeout=30).json()["status"]


def test_budgets_measure_the_free_gpu_memory() -> None:
    free, _total = torch.cuda.mem_get_info(0)
    measured = detect_gpus()
    assert len(measured) == torch.cuda.device_count() >= 1
    assert abs(measured[0] - free) <= 256 * 2**20
    budgets = resolve_budgets(make_config())
    assert abs(budgets.gpus[0] - (free - GiB)) <= 256 * 2**20  # free memory less the 1 GiB CUDA allowance


@pytest.fixture(scope="module")
def gpu_server(plugins: list[Any]) -> Iterator[str]:
    app = create_app(_config(), plugins=plugins)  # budgets measured on this machine
    with serve_in_thread(app, startup_timeout=60) as url:
        yield url


def test_every_model_is_placed_on_the_gpu_and_answers(gpu_server: str) -> None:
    chat = httpx.post(
        f"{gpu_server}/v1/chat/completions",
        timeout=120,
        json={
            "model": CHAT,
            "messages": [{"role": "user", "content": "你好，介绍一下长城。"}],
            "max_tokens": 16,
            "temperature": 0,
        },
    )
    assert chat.status_code == 200, chat.text
    assert chat.json()["usage"]["completion_tokens"] >= 1
    emb = httpx.post(
        f"{gpu_server}/v1/embeddings",
        timeout=120,
        json={"model": EMBED, "input": ["hello world", "长城"], "encoding_format": "float"},
    )
    assert emb.status_code == 200, emb.text
    vectors = np.asarray([d["embedding"] for d in emb.json()["data"]], dtype=np.float32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    rr = httpx.post(
        f"{gpu_server}/v1/rerank",
        timeout=120,
        json={
            "model": RERANK,
            "query": "What is the capital of China?",
            "documents": ["Beijing is the capital of China.", "The sea is blue.", "长城很长。"],
        },
    )
    assert rr.status_code == 200, rr.text
    scores = [r["relevance_score"] for r in rr.json()["results"]]
    assert scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)
    for model in (CHAT, EMBED, RERANK):
        status = _status(gpu_server, model)
        assert status["placement"] == "gpu" and status["device"] == "cuda:0", (model, status)


def test_stream_on_the_gpu(gpu_server: str) -> None:
    with httpx.stream(
        "POST",
        f"{gpu_server}/v1/chat/completions",
        timeout=120,
        json={
            "model": CHAT,
            "messages": [{"role": "user", "content": "请用三句话介绍一下北京。"}],
            "max_tokens": 24,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    ) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    assert '"usage"' in lines[-2]


def test_gpu_results_match_the_cpu_results(plugins: list[Any], gpu_server: str) -> None:
    """The same tiny models on the CPU (fp32) and on the GPU (16-bit) agree."""
    texts = ["hello world", "The Great Wall of China is long.", "机器学习是人工智能的一个分支。"]
    docs = ["Beijing is the capital of China.", "The sea is blue.", "Shanghai is a big city in China."]
    app = create_app(_config(), plugins=plugins, budgets=Budgets(gpus=(), host=16 * GiB))
    with serve_in_thread(app, startup_timeout=60) as cpu_url:
        results = {}
        for url in (gpu_server, cpu_url):
            emb = httpx.post(
                f"{url}/v1/embeddings", timeout=120, json={"model": EMBED, "input": texts, "encoding_format": "float"}
            ).json()
            rr = httpx.post(
                f"{url}/v1/rerank", timeout=120, json={"model": RERANK, "query": "capital of China", "documents": docs}
            ).json()
            results[url] = (
                np.asarray([d["embedding"] for d in emb["data"]], dtype=np.float32),
                {r["index"]: r["relevance_score"] for r in rr["results"]},
            )
        assert _status(cpu_url, EMBED)["device"] == "cpu"
    (gpu_vectors, gpu_scores), (cpu_vectors, cpu_scores) = results[gpu_server], results[cpu_url]
    assert (gpu_vectors * cpu_vectors).sum(axis=1).min() >= 0.999
    assert max(abs(gpu_scores[i] - cpu_scores[i]) for i in range(len(docs))) <= 0.01


def test_unloading_frees_gpu_memory(gpu_server: str) -> None:
    body = {"model": RERANK, "query": "capital of China", "documents": ["Beijing is the capital.", "The sea."]}
    first = httpx.post(f"{gpu_server}/v1/rerank", json=body, timeout=120)
    assert first.status_code == 200, first.text
    torch.cuda.synchronize()
    loaded = torch.cuda.memory_allocated()
    assert httpx.post(f"{gpu_server}/v1/models/{RERANK}/unload", timeout=120).status_code == 200
    torch.cuda.synchronize()
    assert _status(gpu_server, RERANK)["device"] is None
    assert torch.cuda.memory_allocated() < loaded
    again = httpx.post(f"{gpu_server}/v1/rerank", json=body, timeout=120)
    assert again.json()["results"] == first.json()["results"]
    assert _status(gpu_server, RERANK)["device"] == "cuda:0"
