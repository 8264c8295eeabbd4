"""A chat generation is stopped before its lease is released (host/serving/chat.py).

The scheduler may move or unload a model as soon as its last lease is released, so a
generation that is closed (finished, cancelled, or its client gone) must have really
stopped by then. :class:`StopWitness` records, when its generator's cleanup runs, how many
leases its model still has; it must be at least one.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from host.app import create_app
from host.contract.domain import ChatDelta, ChatRequest
from host.contract.spec import Task
from host.testing.fakes import FakeBackend, FakePlugin, fake_spec
from host.testing.http import CHAT, post_and_leave
from host.testing.pytest_plugin import CPU_ONLY, make_config

WORDS = 40


class StopWitness(FakeBackend):
    """Streams ``WORDS`` words; its cleanup records ``("stopped", model, leases held)``. The choice
    whose seed is the ``fail_seed`` option fails after two words."""

    async def generate(self, request: ChatRequest) -> AsyncIterator[ChatDelta]:
        in_flight: Callable[[], int] = self.script["in_flight"]
        delay = self.options.token_delay_s
        try:
            for i in range(WORDS):
                if delay:
                    await asyncio.sleep(delay)
                self.calls.add("token", self.spec.id, i)
                yield ChatDelta(text=f" w{i}")
                if i == 1 and request.sampling.seed == self.script.get("fail_seed", -1):
                    raise RuntimeError("scripted failure of one choice")
            yield ChatDelta(finish_reason="stop", prompt_tokens=2, completion_tokens=WORDS)
        finally:
            self.calls.add("stopped", self.spec.id, in_flight())


def witness_app(**options: Any) -> tuple[Litestar, FakePlugin]:
    """An app serving one :class:`StopWitness` model, ``"w"``."""
    apps: list[Litestar] = []

    def in_flight() -> int:
        return apps[0].state.scheduler.status("w").in_flight

    spec = fake_spec("w", Task.CHAT, in_flight=in_flight, **options)
    plugin = FakePlugin([msgspec.structs.replace(spec, backend=f"{__name__}:StopWitness")])
    apps.append(create_app(make_config(), plugins=[plugin], budgets=CPU_ONLY))
    return apps[0], plugin


def wait_until_released(client: TestClient) -> None:
    deadline = time.monotonic() + 5
    while client.get("/v1/models/w").json()["status"]["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert client.get("/v1/models/w").json()["status"]["in_flight"] == 0


@pytest.mark.parametrize(
    ("body", "generations"), [({}, 1), ({"n": 3}, 3), ({"stream": True}, 1), ({"stream": True, "n": 3}, 3)]
)
def test_a_finished_generation_stops_before_its_lease_is_released(body: dict[str, Any], generations: int) -> None:
    app, plugin = witness_app()
    with TestClient(app) as client:
        r = client.post(
            "/v1/chat/completions", json={"model": "w", "messages": [{"role": "user", "content": "x"}]} | body
        )
        assert r.status_code == 200, r.text
        wait_until_released(client)
    # Every generation's cleanup ran while the request still held the model.
    assert plugin.calls.of("stopped") == [1] * generations


def test_when_one_of_n_choices_fails_the_others_stop_before_the_lease_goes() -> None:
    app, plugin = witness_app(token_delay_s=0.01, fail_seed=11)
    with TestClient(app) as client:
        body = {"model": "w", "n": 3, "seed": 10, "messages": [{"role": "user", "content": "x"}]}
        assert client.post("/v1/chat/completions", json=body).status_code == 500
        wait_until_released(client)
    assert plugin.calls.of("stopped") == [1, 1, 1]
    assert plugin.calls.count("token") < 3 * WORDS


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("stalls", [False, True])
def test_a_stream_whose_client_leaves_stops_its_generation_before_the_lease_goes(stalls: bool, n: int) -> None:
    """The client leaves after three chunks: while the server waits for the next token, or while
    it is stuck sending one (a client that stopped reading, then hung up)."""
    app, plugin = witness_app(token_delay_s=0.02)
    body = json.dumps({"model": "w", "stream": True, "n": n, "messages": [{"role": "user", "content": "x"}]}).encode()

    with TestClient(app) as client:
        client.blocking_portal.call(lambda: post_and_leave(app, CHAT, body, after=3, stall=stalls))
        wait_until_released(client)
    assert plugin.calls.of("stopped") == [1] * n  # stopped while the lease was still held
    assert plugin.calls.count("token") < n * WORDS  # and it did stop: the rest was never generated
