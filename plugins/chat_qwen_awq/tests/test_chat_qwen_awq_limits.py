"""Issue 12, finding 1: limits that protect the chat engine from abandoned and long work.

Real uvicorn server on loopback, the tiny AWQ model, raw sockets and httpx clients.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from chat_qwen_awq import fairness
from chat_qwen_awq.testing import MODEL_ID, RecordingBackend, RecordingPlugin, paused_decode_steps, tiny_config
from host.app import create_app
from host.testing.pytest_plugin import CPU_ONLY
from host.testing.server import serve_in_thread


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    RecordingBackend.instances.clear()
    # 200 storm requests overfill the waiting line (4 + 100): the short request must still get in.
    config = tiny_config(max_sequences=4, max_tokens_cap=1500, default_max_tokens=1200, max_waiting_sequences=100)
    with serve_in_thread(create_app(config, plugins=[RecordingPlugin()], budgets=CPU_ONLY)) as url:
        assert httpx.post(f"{url}/v1/models/{MODEL_ID}/load", timeout=120).status_code == 200
        yield url


def _backend() -> Any:
    live = [b for b in RecordingBackend.instances if b.engine is not None]
    assert len(live) == 1
    return live[0]


def _body(**extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL_ID,
        "messages": [{"role": "user", "content": "Tell me about the Great Wall of China."}],
        "temperature": 0,
        "repetition_penalty": 1.0,
        **extra,
    }


def _wait_idle(server: str, timeout: float) -> tuple[float, dict[str, Any]]:
    """Seconds until the engine holds no sequence and the model no lease (or the timeout)."""
    start = time.monotonic()
    status: dict[str, Any] = {}
    with httpx.Client(timeout=10) as http:
        while time.monotonic() - start < timeout:
            status = http.get(f"{server}/v1/models/{MODEL_ID}").json()["status"]
            if status["in_flight"] == 0 and _backend().engine.active() == 0:
                break
            time.sleep(0.02)
    return time.monotonic() - start, status


def test_max_tokens_over_the_cap_is_a_400_naming_both_numbers(server: str) -> None:
    response = httpx.post(f"{server}/v1/chat/completions", json=_body(max_tokens=1501), timeout=30)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "max_tokens"
    assert "1501" in error["message"] and "1500" in error["message"] and "max_tokens_cap" in error["message"]


def test_a_request_without_max_tokens_gets_the_default_budget(server: str) -> None:
    response = httpx.post(f"{server}/v1/chat/completions", json=_body(), timeout=120)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["choices"][0]["finish_reason"] == "length"  # the tiny model at temperature 0 never stops
    assert body["usage"]["completion_tokens"] == 1200


def _send_and_vanish(server: str, body: dict[str, Any]) -> None:
    """A raw HTTP/1.1 client that sends a request and closes its socket without reading."""
    host, port = server.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(head + payload)
        deadline = time.monotonic() + 10
        while _backend().engine.active() == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _backend().engine.active() == 1, "the generation never started"
        time.sleep(0.2)  # generating for a while


@pytest.mark.parametrize("stream", [False, True])
def test_a_vanished_client_cancels_its_generation(server: str, stream: bool) -> None:
    steps = _backend().engine.stats.steps
    with paused_decode_steps(_backend().engine, 0.003):  # 1,400 steps take >= 4 s however fast the machine
        _send_and_vanish(server, _body(max_tokens=1400, stream=stream))
        waited, status = _wait_idle(server, 10)
    assert status["in_flight"] == 0 and _backend().engine.active() == 0
    assert waited < 2.0, f"generation went on {waited:.1f} s after the client left"
    assert _backend().engine.stats.steps - steps < 1400


def test_a_short_request_is_answered_during_a_storm_of_abandoned_long_ones(server: str) -> None:
    """The acceptance figure: 200 no-max_tokens clients that give up after 3 s; a new
    ``max_tokens: 1`` request is answered within 2 s; everything is cancelled afterwards."""

    async def run() -> float:
        limits = httpx.Limits(max_connections=300, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=3.0, limits=limits) as storm, httpx.AsyncClient(timeout=30) as fresh:

            async def abandoned(i: int) -> None:
                body = _body(stream=i % 2 == 0)
                try:
                    async with storm.stream("POST", f"{server}/v1/chat/completions", json=body) as r:
                        async for _ in r.aiter_bytes():
                            pass
                except httpx.TimeoutException:
                    pass

            tasks = [asyncio.create_task(abandoned(i)) for i in range(200)]
            deadline = time.monotonic() + 20
            while _backend().engine.active() < 100 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert _backend().engine.active() >= 100, "the storm never reached the engine"
            await asyncio.sleep(0.5)  # the rest of the storm gets its 429s (queue_full)
            start = time.monotonic()
            response = await fresh.post(f"{server}/v1/chat/completions", json=_body(max_tokens=1))
            took = time.monotonic() - start
            assert response.status_code == 200, response.text
            assert response.json()["usage"]["completion_tokens"] == 1
            await asyncio.gather(*tasks)
            return took

    took = asyncio.run(run())
    assert took < 2.0, f"the short request took {took:.2f} s"
    waited, status = _wait_idle(server, 15)
    assert status["in_flight"] == 0 and status["queued"] == 0 and _backend().engine.active() == 0, waited


def test_too_many_waiting_sequences_get_429() -> None:
    RecordingBackend.instances.clear()
    config = tiny_config(max_sequences=1, max_waiting_sequences=1)
    with serve_in_thread(create_app(config, plugins=[RecordingPlugin()], budgets=CPU_ONLY)) as url:

        async def run() -> list[int]:
            async with httpx.AsyncClient(timeout=60) as http:

                async def one() -> int:
                    r = await http.post(f"{url}/v1/chat/completions", json=_body(max_tokens=300))
                    if r.status_code == 429:
                        assert r.json()["error"]["code"] == "queue_full"
                        assert "max_waiting_sequences" in r.json()["error"]["message"]
                    return r.status_code

                return list(await asyncio.gather(*(one() for _ in range(6))))

        codes = asyncio.run(run())
    assert 429 in codes and 200 in codes


@pytest.mark.parametrize(
    ("remaining", "waited", "order"),
    [
        ([2000, 1, 500], [0, 0, 0], [1, 2, 0]),
        ([2000, 1, 2000], [0, 0, 0], [1, 0, 2]),  # equal keys keep arrival order
        ([2000, 1], [40, 0], [0, 1]),  # a long request that waited long enough goes first
    ],
)
def test_admission_order(remaining: list[int], waited: list[float], order: list[int]) -> None:
    keys = [fairness.priority(r, w) for r, w in zip(remaining, waited, strict=True)]
    assert fairness.admission_order(keys) == order


@pytest.mark.parametrize(
    ("head", "running", "expected"),
    [
        (1, [2000, 100, 3000], 2),
        (1, [10, 12], None),  # nothing is much longer than the short one
        (600, [2000], None),
        (400, [2000], 0),
        (1, [], None),
    ],
)
def test_preemption_victim(head: int, running: list[int], expected: int | None) -> None:
    assert fairness.victim(head, running) == expected


@pytest.mark.parametrize(
    ("waiting", "new", "cap", "full"),
    [
        ([2000.0] * 4, 1.0, 4, False),  # a short request gets in ahead of a full line of long ones
        ([2000.0] * 4, 2000.0, 4, True),  # equal keys came first
        ([1.0, 2000.0, 2000.0, 2000.0], 5.0, 4, False),
        ([1.0] * 8, 0.0, 4, True),  # the hard bound: twice the cap
    ],
)
def test_line_full(waiting: list[float], new: float, cap: int, full: bool) -> None:
    assert fairness.line_full(waiting, new, cap) is full
