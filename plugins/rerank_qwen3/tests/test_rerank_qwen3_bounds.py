"""Issue 26: one rerank request's work is bounded before it starts, and stops when its client leaves.

Before: 1,000 documents of 25k characters (25 MB, under the body limit) kept the reranker busy for
minutes while the client waited. Real server on loopback, the tiny reranker, ``/metrics`` to see
the batches that ran.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from host.app import create_app
from host.testing.http import assert_error, send_and_close
from host.testing.pytest_plugin import CPU_ONLY, make_config
from host.testing.server import serve_in_thread
from rerank_qwen3.backend import Qwen3RerankerBackend
from rerank_qwen3.testing import TINY

MODEL = "Qwen3-Reranker-0.6B"
LIMIT = 100_000
#: While set, every forward pass takes 20 ms longer: a request of ~200 passes surely still runs a
#: second after it began, however fast the machine (a full-suite run once finished all of them in 1 s).
SLOW = threading.Event()


@pytest.fixture(scope="module")
def url(tiny_path: Any) -> Iterator[str]:
    import rerank_qwen3

    # Small batches: a request of many documents runs as many forward passes.
    options = {"max_request_tokens": LIMIT, "batch_tokens_cpu": 256}
    config = make_config({"models": {MODEL: {"weights": TINY, "options": options}}})
    run = Qwen3RerankerBackend.run

    def slowed(self: Qwen3RerankerBackend, batch: Any) -> Any:
        if SLOW.is_set():
            time.sleep(0.02)
        return run(self, batch)

    with (
        pytest.MonkeyPatch.context() as patch,
        serve_in_thread(create_app(config, plugins=[rerank_qwen3], budgets=CPU_ONLY)) as served,
    ):
        patch.setattr(Qwen3RerankerBackend, "run", slowed)
        assert httpx.post(f"{served}/v1/models/{MODEL}/load", timeout=120).status_code == 200
        yield served


def batches(url: str) -> int:
    """Forward passes the reranker's batcher has run (``plughost_batches``)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found = re.search(rf'^plughost_batches_total{{model="{MODEL}"}} (\S+)$', text, re.M)
    return int(float(found.group(1))) if found else 0


def in_flight(url: str) -> int:
    return int(httpx.get(f"{url}/v1/models/{MODEL}", timeout=10).json()["status"]["in_flight"])


def words(n: int, seed: int) -> str:
    return " ".join(f"w{(seed * 7919 + i) % 997}" for i in range(n))


def test_huge_documents_are_a_400_before_any_batch(url: str) -> None:
    # The shape, scaled down: 100 documents of 25k characters (2.5 MB).
    before = batches(url)
    body = {"model": MODEL, "query": "what is it?", "documents": ["x" * 25_000] * 100}
    error = assert_error(httpx.post(f"{url}/v1/rerank", json=body, timeout=120), 400, param="documents")
    assert error["code"] == "request_too_large"
    assert str(LIMIT) in error["message"] and f"models.{MODEL}.options.max_request_tokens" in error["message"]
    assert batches(url) == before  # decided before any forward pass
    ok = httpx.post(f"{url}/v1/rerank", json={"model": MODEL, "query": "q", "documents": ["a", "b"]}, timeout=60)
    assert ok.status_code == 200 and batches(url) > before


def test_a_request_within_the_bound_runs_whole(url: str) -> None:
    docs = [words(40, i) for i in range(100)]
    r = httpx.post(f"{url}/v1/rerank", json={"model": MODEL, "query": "q", "documents": docs}, timeout=120)
    assert r.status_code == 200, r.text
    assert len(r.json()["results"]) == 100 and r.json()["usage"]["prompt_tokens"] <= LIMIT


def test_a_client_that_leaves_stops_its_rerank(url: str) -> None:
    # ~75k tokens (within the bound) in ~200 small forward passes of 20+ ms: seconds of work; the client
    # leaves after one second.
    docs = [words(48, i) for i in range(300)]
    before = batches(url)
    SLOW.set()
    try:
        send_and_close(url, "/v1/rerank", {"model": MODEL, "query": "q", "documents": docs}, 1.0)
        left = batches(url)
        deadline = time.monotonic() + 10
        while in_flight(url) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert in_flight(url) == 0
        stopped = batches(url)
    finally:
        SLOW.clear()
    assert left > before  # it was running when its client left
    time.sleep(0.5)
    assert batches(url) == stopped  # nothing more runs for it
    assert stopped - before < len(docs) // 2, (before, left, stopped)  # it did not run to the end
