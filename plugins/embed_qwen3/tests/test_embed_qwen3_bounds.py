"""Issue 26: one embeddings request's work is bounded before it starts, and stops when its client leaves.

Real server on loopback, the tiny Qwen3-Embedding stand-in, ``/metrics`` to see the batches that ran.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from embed_qwen3.testing import TINY
from host.app import create_app
from host.testing.http import assert_error, send_and_close
from host.testing.pytest_plugin import CPU_ONLY, make_config
from host.testing.server import serve_in_thread

MODEL = "Qwen3-Embedding-0.6B"
LIMIT = 300_000


@pytest.fixture(scope="module")
def url(tiny_path: Any) -> Iterator[str]:
    import embed_qwen3

    # Small batches: a request of many inputs runs as many forward passes.
    options = {"max_request_tokens": LIMIT, "batch_tokens_cpu": 256, "batch_overhead_tokens_cpu": None}
    config = make_config({"models": {MODEL: {"weights": TINY, "options": options}}})
    with serve_in_thread(create_app(config, plugins=[embed_qwen3], budgets=CPU_ONLY)) as served:
        assert httpx.post(f"{served}/v1/models/{MODEL}/load", timeout=120).status_code == 200
        yield served


def batches(url: str) -> int:
    """Forward passes the model's batcher has run (``plughost_batches``)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found = re.search(rf'^plughost_batches_total{{model="{MODEL}"}} (\S+)$', text, re.M)
    return int(float(found.group(1))) if found else 0


def in_flight(url: str) -> int:
    return int(httpx.get(f"{url}/v1/models/{MODEL}", timeout=10).json()["status"]["in_flight"])


def words(n: int, seed: int) -> str:
    return " ".join(f"w{(seed * 7919 + i) % 997}" for i in range(n))


def test_over_the_bound_is_a_400_before_any_batch(url: str) -> None:
    before = batches(url)
    body = {"model": MODEL, "input": ["x" * 30_000] * 200, "truncate": True}  # 200 x 2,048 tokens
    error = assert_error(httpx.post(f"{url}/v1/embeddings", json=body, timeout=120), 400, param="input")
    assert error["code"] == "request_too_large"
    assert str(LIMIT) in error["message"] and f"models.{MODEL}.options.max_request_tokens" in error["message"]
    assert batches(url) == before
    within = httpx.post(f"{url}/v1/embeddings", json={"model": MODEL, "input": [words(40, i) for i in range(50)]})
    assert within.status_code == 200 and len(within.json()["data"]) == 50 and batches(url) > before


def test_a_client_that_leaves_stops_its_embeddings(url: str) -> None:
    inputs = [words(60, i) for i in range(1200)]  # ~200k tokens in ~1,200 small forward passes: seconds
    before = batches(url)
    send_and_close(url, "/v1/embeddings", {"model": MODEL, "input": inputs}, 1.0)
    left = batches(url)
    deadline = time.monotonic() + 10
    while in_flight(url) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert in_flight(url) == 0
    stopped = batches(url)
    assert left > before  # it was running when its client left
    time.sleep(0.5)
    assert batches(url) == stopped  # nothing more runs for it
    assert stopped - before < len(inputs) // 2, (before, left, stopped)  # it did not run to the end
