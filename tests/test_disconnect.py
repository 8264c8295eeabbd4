"""Issue 12, finding 1: a client that goes away cancels its request wherever it is.

The ASGI guard (:mod:`host.server.disconnect`) cancels a handler whose client disconnected before the
response started: a request waiting for its model stops waiting, a plain (not streamed)
generation stops. Real uvicorn on loopback, raw sockets that send a request and close.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from host.app import create_app
from host.contract.spec import Task
from host.testing.fakes import FakePlugin, fake_spec
from host.testing.http import send_and_close
from host.testing.pytest_plugin import CPU_ONLY, make_config
from host.testing.server import serve_in_thread


@pytest.fixture
def served() -> Iterator[tuple[str, FakePlugin]]:
    plugin = FakePlugin(
        [
            fake_spec("slow-load", Task.EMBEDDING, load_delay_s=3.0),
            fake_spec("slow-chat", Task.CHAT, token_delay_s=0.05),
            fake_spec("slow-load-chat", Task.CHAT, load_delay_s=3.0),
        ]
    )
    with serve_in_thread(create_app(make_config(), plugins=[plugin], budgets=CPU_ONLY)) as url:
        yield url, plugin


def _status(url: str, model: str) -> dict:
    return httpx.get(f"{url}/v1/models/{model}", timeout=10).json()["status"]


def test_a_request_waiting_for_its_model_stops_waiting(served: tuple[str, FakePlugin]) -> None:
    url, _ = served
    send_and_close(url, "/v1/embeddings", {"model": "slow-load", "input": "hi"}, 0.5)
    assert _status(url, "slow-load")["state"] == "loading"
    deadline = time.monotonic() + 1.0
    while _status(url, "slow-load")["queued"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _status(url, "slow-load")["queued"] == 0


def test_a_plain_generation_stops_when_its_client_leaves(served: tuple[str, FakePlugin]) -> None:
    url, _ = served
    words = " ".join(f"w{i}" for i in range(200))  # the fake echoes 200 words, 50 ms each: 10 s
    body = {"model": "slow-chat", "messages": [{"role": "user", "content": words}], "max_tokens": 300}
    send_and_close(url, "/v1/chat/completions", body, 0.5)
    deadline = time.monotonic() + 1.0
    while _status(url, "slow-chat")["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _status(url, "slow-chat")["in_flight"] == 0


def test_a_stream_waiting_for_its_model_stops_waiting_after_its_headers(served: tuple[str, FakePlugin]) -> None:
    url, _ = served
    body = {"model": "slow-load-chat", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    received = send_and_close(url, "/v1/chat/completions", body, 1.0)
    assert received.startswith(b"HTTP/1.1 200"), received  # headers went out while the model loads
    assert _status(url, "slow-load-chat")["state"] == "loading"
    deadline = time.monotonic() + 1.0
    while _status(url, "slow-load-chat")["queued"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _status(url, "slow-load-chat")["queued"] == 0
