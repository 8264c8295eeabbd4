"""End to end: the real server process (``litestar run``) in the demo profile, driven by the
official ``openai`` client and httpx, then shut down cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from host.testing.http import chat_plain_and_streamed
from host.testing.server import free_port, wait_until_healthy

ROOT = Path(__file__).resolve().parents[1]
CHAT, EMBED, RERANK = "Qwen2.5-7B-Instruct-AWQ", "Qwen3-Embedding-0.6B", "Qwen3-Reranker-0.6B"
QWEN3 = "Qwen3-8B-AWQ"  # the second chat model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    config = tmp / "plugins.yaml"
    config.write_text(
        f"demo: true\nplugins:\n  paths: [{ROOT / 'plugins'}]\n  entry_points: false\nbudgets:\n  gpus: []\n"
    )
    port = free_port()
    env = {
        **os.environ,
        "PLUGHOST_CONFIG": str(config),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    log = open(tmp / "server.log", "w+")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "litestar",
            "--app",
            "host.app:create_app",
            "run",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=tmp,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, proc)
    except RuntimeError as exc:
        log.seek(0)
        pytest.fail(f"{exc}:\n{log.read()}")
    yield url, proc, log
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    log.close()


@pytest.fixture(scope="module")
def client(server):
    return OpenAI(base_url=f"{server[0]}/v1", api_key="dummy", max_retries=0, timeout=300)


def test_models_list_says_demo(client) -> None:
    models = {m.id: m for m in client.models.list()}
    assert {CHAT, EMBED, RERANK} <= set(models)
    assert all("DEMO" in models[m].model_extra["description"] for m in (CHAT, EMBED, RERANK))


def test_chat_plain_and_streamed_with_usage(client) -> None:
    chat_plain_and_streamed(client, CHAT)


def test_the_second_chat_model_swaps_with_the_first(client, server) -> None:
    """Qwen3-8B-AWQ (its demo stand-in) answers beside the seed's model; one chat model is resident at a time."""
    assert "DEMO" in client.models.retrieve(QWEN3).model_extra["description"]
    chat_plain_and_streamed(client, QWEN3)
    resident = httpx.get(f"{server[0]}/health").json()["resident"]
    assert QWEN3 in resident and CHAT not in resident
    chat_plain_and_streamed(client, CHAT)
    resident = httpx.get(f"{server[0]}/health").json()["resident"]
    assert CHAT in resident and QWEN3 not in resident


def test_embeddings_default_and_float(client) -> None:
    default = client.embeddings.create(model=EMBED, input=["文本向量化测试", "hello"])
    floats = client.embeddings.create(model=EMBED, input=["文本向量化测试", "hello"], encoding_format="float")
    assert len(default.data) == 2 and default.usage.prompt_tokens > 0
    for a, b in zip(default.data, floats.data):
        assert a.embedding == pytest.approx(b.embedding, abs=1e-6)
        assert sum(x * x for x in a.embedding) == pytest.approx(1.0, abs=1e-4)


def test_rerank_and_health(server) -> None:
    url = server[0]
    body = {
        "model": RERANK,
        "query": "什么是人工智能？",
        "documents": ["人工智能是计算机科学的一个分支", "机器学习是AI的重要组成部分"],
        "top_k": 2,
    }
    r = httpx.post(f"{url}/v1/rerank", json=body, timeout=300)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert sorted(x["index"] for x in results) == [0, 1]
    assert results[0]["score"] >= results[1]["score"]
    health = httpx.get(f"{url}/health").json()
    assert health["ready"] and RERANK in health["resident"]


def test_clean_shutdown(server) -> None:
    _url, proc, log = server
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0
    log.seek(0)
    text = log.read()
    assert "unloaded" in text and "Traceback" not in text
