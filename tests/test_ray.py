"""plughost on Ray Serve: a local Ray instance runs the demo models (two embedding replicas, the
reranker scaled from zero on first use) behind the same Litestar app, driven by the official
``openai`` client and httpx; then one embedding replica is killed and requests keep succeeding
while Serve replaces it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray
import yaml
from openai import OpenAI
from ray import serve

from host.contract.config import ConfigError, config_from_dict
from host.ray import application
from host.testing.http import chat_plain_and_streamed
from host.testing.server import free_port

ROOT = Path(__file__).resolve().parents[1]
CHAT, EMBED, RERANK = "Qwen2.5-7B-Instruct-AWQ", "Qwen3-Embedding-0.6B", "Qwen3-Reranker-0.6B"
APP = "plughost"

pytestmark = pytest.mark.slow


def demo_config(embed_replicas: int = 2) -> dict[str, Any]:
    return {
        "demo": True,
        "plugins": {"paths": [str(ROOT / "plugins")], "entry_points": False},
        "budgets": {"gpus": []},
        "models": {
            EMBED: {"replicas": embed_replicas},
            RERANK: {"autoscaling": {"min_replicas": 0, "max_replicas": 1}},
            "Qwen3-8B-AWQ": {"enabled": False},  # the second chat model: one chat deployment is enough here
        },
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A local Ray instance (small object store, no dashboard) serving the demo profile; its URL."""
    config = config_from_dict(demo_config(), base_dir=tmp_path_factory.mktemp("ray"))
    # Logical CPUs: ingress 0.5 + chat 1 + embedding 2 + rerank 1 + one replacement replica.
    ray.init(
        address="local",
        _node_ip_address="127.0.0.1",  # the node binds to loopback only, not to whatever interface it finds
        num_cpus=6,
        object_store_memory=128 * 2**20,
        include_dashboard=False,
        log_to_driver=False,
    )
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(application(config), name=APP, route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def client(cluster: str) -> OpenAI:
    return OpenAI(base_url=f"{cluster}/v1", api_key="dummy", max_retries=0, timeout=120)


def running(deployment: str) -> int:
    return serve.status().applications[APP].deployments[deployment].replica_states.get("RUNNING", 0)


def replica_actors(deployment: str) -> set[str]:
    prefix = f"SERVE_REPLICA::{APP}#{deployment}#"
    return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix)}


def models_once(client: OpenAI, ready: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """``GET /v1/models`` by id, once ``ready`` holds: the ingress reads serve.status() every second,
    so right after a change it may show the state of a second ago."""
    deadline = time.monotonic() + 10
    while True:
        models = {m.id: m.model_extra for m in client.models.list()}
        if ready(models) or time.monotonic() > deadline:
            return models
        time.sleep(0.2)


def test_models_list_shows_deployments_and_replicas(client: OpenAI) -> None:
    models = models_once(client, lambda m: m[EMBED]["status"]["replicas"] == 2 and m[CHAT]["status"]["replicas"])
    assert set(models) == {CHAT, EMBED, RERANK}
    assert models[CHAT]["status"]["state"] == models[EMBED]["status"]["state"] == "resident"
    assert models[EMBED]["status"]["replicas"] == 2 and models[CHAT]["status"]["replicas"] == 1
    # min_replicas: 0 is the single machine's lazy load: nothing runs until the first request.
    assert models[RERANK]["status"]["state"] == "available" and models[RERANK]["status"]["replicas"] == 0
    # The resources came from the plugin's CPU placement of the stand-in.
    assert models[EMBED]["status"]["placement"] == "cpu" and models[EMBED]["status"]["host_bytes"] > 0


def test_chat_plain_and_streamed_through_the_handle(client: OpenAI) -> None:
    assert len(chat_plain_and_streamed(client, CHAT)) > 3


def test_embeddings_and_rerank_scaled_from_zero(client: OpenAI, cluster: str) -> None:
    result = client.embeddings.create(model=EMBED, input=["文本向量化测试", "hello"], encoding_format="float")
    assert len(result.data) == 2 and result.usage.prompt_tokens > 0
    assert sum(x * x for x in result.data[0].embedding) == pytest.approx(1.0, abs=1e-4)
    body = {"model": RERANK, "query": "capital of France", "documents": ["Paris", "bananas", "Lyon"], "top_n": 2}
    ranked = httpx.post(f"{cluster}/v1/rerank", json=body, timeout=120).json()
    assert len(ranked["results"]) == 2 and ranked["results"][0]["score"] >= ranked["results"][1]["score"]
    assert running(RERANK) == 1  # the first request brought a replica up
    status = models_once(client, lambda m: m[RERANK]["status"]["replicas"] == 1)[RERANK]["status"]
    assert (status["state"], status["replicas"]) == ("resident", 1)


def test_anthropic_messages_and_count_tokens_through_the_handle(cluster: str) -> None:
    body = {"model": CHAT, "messages": [{"role": "user", "content": "你好"}]}
    count = httpx.post(f"{cluster}/v1/messages/count_tokens", json=body, timeout=120)
    assert count.status_code == 200, count.text
    answer = httpx.post(f"{cluster}/v1/messages", json={**body, "max_tokens": 8}, timeout=120).json()
    assert answer["usage"]["input_tokens"] == count.json()["input_tokens"] > 0


def test_errors_keep_the_single_machine_envelope(cluster: str) -> None:
    missing = httpx.post(f"{cluster}/v1/embeddings", json={"model": "nope", "input": "x"}, timeout=60)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    # Raised by the backend inside a model replica, before the first delta: still a JSON 400.
    too_long = {"model": CHAT, "messages": [{"role": "user", "content": "hi " * 5000}], "stream": True}
    response = httpx.post(f"{cluster}/v1/chat/completions", json=too_long, timeout=60)
    assert response.status_code == 400 and response.json()["error"]["code"] == "context_length_exceeded"
    unload = httpx.post(f"{cluster}/v1/models/{EMBED}/unload", timeout=60)
    assert unload.status_code == 409 and "autoscaling.min_replicas: 0" in unload.json()["error"]["message"]


def test_a_killed_embedding_replica_is_replaced_without_failed_requests(client: OpenAI) -> None:
    before = replica_actors(EMBED)
    assert len(before) == 2 and running(EMBED) == 2
    victim = sorted(before)[0]
    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)

    def embed(i: int) -> int:
        return len(client.embeddings.create(model=EMBED, input=[f"request {i}", "still served"]).data)

    sent = 0
    replaced = False
    deadline = time.monotonic() + 120
    with ThreadPoolExecutor(4) as pool:
        while time.monotonic() < deadline:
            assert list(pool.map(embed, range(sent, sent + 4))) == [2] * 4  # no request fails meanwhile
            sent += 4
            now = replica_actors(EMBED)
            if victim not in now and len(now - before) == 1 and running(EMBED) == 2:
                replaced = True
                break
            time.sleep(0.2)
    assert replaced, f"Serve did not replace {victim} in time (now {replica_actors(EMBED)})"
    assert sent >= 4
    models = models_once(client, lambda m: m[EMBED]["status"]["replicas"] == 2)
    assert models[EMBED]["status"]["replicas"] == 2


def test_a_cluster_with_too_few_cpus_is_refused_not_waited_for(cluster: str, tmp_path: Path) -> None:
    # 0.5 + chat 1 + embedding 8 + rerank 1 = 10.5 logical CPUs asked of a 6-CPU cluster.
    with pytest.raises(ConfigError) as refused:
        application(config_from_dict(demo_config(embed_replicas=8), base_dir=tmp_path))
    assert "ask for 10.5 logical CPUs" in str(refused.value) and "cluster has 6;" in str(refused.value)
    # `serve run` itself: it exits at once with the message instead of waiting for replicas forever.
    config = tmp_path / "plugins.yaml"
    config.write_text(yaml.safe_dump(demo_config(embed_replicas=8)))
    serve_cli = Path(sys.executable).with_name("serve")
    address = ray.get_runtime_context().gcs_address
    run = subprocess.run(
        [str(serve_cli), "run", "--address", address, "host.ray:build_app", f"config={config}"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert run.returncode != 0
    assert "ask for 10.5 logical CPUs" in run.stderr and "ray start --head --num-cpus=8" in run.stderr
    assert running(EMBED) == 2  # the application already deployed there is untouched
