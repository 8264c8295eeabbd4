"""``GET /metrics``: Prometheus text that prometheus-client's own parser reads, counters that move
with traffic, and one registry per app."""

from __future__ import annotations

from typing import Any

from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families

from host.app import create_app
from host.contract.spec import GiB, Task
from host.testing.fakes import FakePlugin, fake_spec
from host.testing.pytest_plugin import CPU_ONLY, make_config

CHAT_BODY = {"model": "fake-chat", "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 3}


def samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(data: dict[Any, float], name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(v for (n, ls), v in data.items() if n == name and set(labels.items()) <= set(ls))


def app(**config: Any) -> Any:
    plugin = FakePlugin(
        [
            fake_spec("fake-chat", Task.CHAT),
            fake_spec("fake-embed", Task.EMBEDDING),
            fake_spec("fake-rerank", Task.RERANK),
            fake_spec("big-embed", Task.EMBEDDING, host_bytes=10 * GiB),
        ]
    )
    scheduler = {"max_resident_per_task": 1, "min_residency_s": 0}
    return create_app(make_config({"scheduler": scheduler, **config}), plugins=[plugin], budgets=CPU_ONLY)


def test_metrics_parse_and_move_with_traffic() -> None:
    with TestClient(app()) as c:
        before = samples(c)
        assert value(before, "plughost_model_state", model="fake-chat", state="available") == 1
        assert c.post("/v1/chat/completions", json=CHAT_BODY).status_code == 200
        stream = c.post("/v1/chat/completions", json={**CHAT_BODY, "stream": True})
        assert stream.status_code == 200
        assert c.post("/v1/embeddings", json={"model": "fake-embed", "input": ["a", "b"]}).status_code == 200
        assert c.post("/v1/embeddings", json={"model": "big-embed", "input": "a"}).status_code == 200  # evicts
        assert c.post("/v1/rerank", json={"model": "fake-rerank", "query": "q", "documents": ["x"]}).status_code == 200
        assert c.post("/v1/embeddings", json={"model": "nope", "input": "a"}).status_code == 404
        after = samples(c)
    route = "/v1/chat/completions"
    assert value(after, "plughost_http_requests_total", route=route, status="200") == 2
    assert value(after, "plughost_http_requests_total", route="/v1/embeddings", status="404") == 1
    assert value(after, "plughost_http_request_duration_seconds_count", route=route, status="200") == 2
    assert value(after, "plughost_prompt_tokens_total", model="fake-chat") > 0
    assert value(after, "plughost_generated_tokens_total", model="fake-chat") > 0
    assert value(after, "plughost_prompt_tokens_total", model="fake-embed") > 0
    assert value(after, "plughost_time_to_first_token_seconds_count", model="fake-chat") == 2  # plain and streamed
    assert value(after, "plughost_model_transition_duration_seconds_count", model="fake-embed", kind="load") == 1
    assert value(after, "plughost_model_transition_duration_seconds_count", model="fake-embed", kind="unload") == 1
    assert value(after, "plughost_model_evictions_total", model="fake-embed", how="unload") == 1
    assert value(after, "plughost_model_state", model="big-embed", state="resident") == 1
    assert value(after, "plughost_model_in_flight_requests", model="big-embed") == 0
    assert value(after, "plughost_model_queued_requests", model="big-embed") == 0
    assert value(after, "plughost_resident_bytes", device="cpu") >= 10 * GiB


def test_two_apps_in_one_process_keep_their_own_counts() -> None:
    with TestClient(app()) as one, TestClient(app()) as two:
        for _ in range(3):
            one.get("/health")
        two.get("/health")
        assert value(samples(one), "plughost_http_requests_total", route="/health") == 3
        assert value(samples(two), "plughost_http_requests_total", route="/health") == 1


def test_unmatched_paths_share_one_label() -> None:
    with TestClient(app()) as c:
        for i in range(5):
            c.get(f"/random/{i}")
        data = samples(c)
    assert value(data, "plughost_http_requests_total", route="unmatched", status="404") == 5
    assert not any("/random" in str(labels) for (_, labels) in data)


def test_legacy_completions_count_their_tokens_and_time_to_first_token() -> None:
    with TestClient(app()) as c:
        body = {"model": "fake-chat", "prompt": "one two three", "max_tokens": 2}
        assert c.post("/v1/completions", json=body).status_code == 200
        stream = c.post("/v1/completions", json={**body, "stream": True, "n": 2})
        assert stream.status_code == 200 and stream.text.endswith("data: [DONE]\n\n")
        after = samples(c)
    assert value(after, "plughost_prompt_tokens_total", model="fake-chat") == 3 + 3  # each prompt once
    assert value(after, "plughost_generated_tokens_total", model="fake-chat") == 2 + 2 * 2
    assert value(after, "plughost_time_to_first_token_seconds_count", model="fake-chat") == 2
