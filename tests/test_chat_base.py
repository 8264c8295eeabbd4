"""``host.toolkit.chat.ChatEngineBackend``: a backend supplies prepare + tokens, the base does the rest.

The backends here are what a stranger writes around another engine: a plain blocking iterator
(llama.cpp bindings, a sync client) or an async generator. No torch.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from host.app import create_app
from host.contract.capabilities import Capabilities
from host.contract.domain import ChatDelta, ChatRequest
from host.contract.errors import InvalidRequest
from host.contract.spec import Grant, ModelSpec, Task
from host.testing.fakes import FakeOptions, FakePlugin, fake_spec
from host.testing.http import CHAT, assert_error, post_and_leave, sse_events
from host.testing.pytest_plugin import CPU_ONLY, make_config
from host.toolkit.chat import ChatEngineBackend

WORDS = 200


@dataclass(frozen=True)
class Job:
    words: list[str]
    max_tokens: int


class BlockingEcho(ChatEngineBackend[Job]):
    """Echoes the last message word by word from a blocking generator (one ``time.sleep`` a step).

    Records every step it produced and, in its generator's cleanup, whether the lease was still held.
    ``script["in_flight"]`` reads the model's leases; ``script["crash_at"]`` makes step N raise."""

    def __init__(self, spec: ModelSpec[FakeOptions]) -> None:
        super().__init__(spec)
        self.options = spec.options
        self.calls = spec.options.calls

    def load_model(self, grant: Grant) -> None:
        self.calls.add("load", self.spec.id, threading.current_thread().name)

    def unload_model(self) -> None:
        self.calls.add("unload", self.spec.id)

    def prepare(self, request: ChatRequest) -> Job:
        self.calls.add("prepare", self.spec.id, threading.current_thread().name)
        text = request.messages[-1].content
        if text == "boom":
            raise RuntimeError("tokenizer exploded at /secret/path")
        if not text:
            raise InvalidRequest("say something.", param="messages")
        words = (text.split() * WORDS)[:WORDS] if text.startswith("long") else text.split()
        return Job(words, request.sampling.max_tokens or 10_000)

    def tokens(self, prepared: Job) -> Iterator[ChatDelta]:
        in_flight = self.options.script.get("in_flight", lambda: -1)
        step = 0
        try:
            for step, word in enumerate(prepared.words[: prepared.max_tokens], start=1):
                time.sleep(self.options.token_delay_s)
                if step == self.options.script.get("crash_at"):
                    raise RuntimeError("CUDA error: device-side assert triggered")
                self.calls.add("step", self.spec.id, threading.current_thread().name)
                yield ChatDelta(text=word if step == 1 else " " + word)
            reason = "length" if len(prepared.words) > prepared.max_tokens else "stop"
            yield ChatDelta(finish_reason=reason, prompt_tokens=len(prepared.words), completion_tokens=step)
        finally:
            self.calls.add("closed", self.spec.id, in_flight())


class AsyncEcho(BlockingEcho):
    """The same engine behind an async generator instead of a blocking iterator."""

    async def stream(self, prepared: Job) -> AsyncIterator[ChatDelta]:
        for i, word in enumerate(prepared.words):
            await asyncio.sleep(self.options.token_delay_s)
            self.calls.add("step", self.spec.id, "event loop")
            yield ChatDelta(text=word if i == 0 else " " + word)
        yield ChatDelta(finish_reason="stop", prompt_tokens=len(prepared.words), completion_tokens=len(prepared.words))


def base_app(backend: type, **options: Any) -> tuple[Litestar, FakePlugin]:
    """An app serving one model ``"e"`` on ``backend``; ``script["in_flight"]`` reads its leases."""
    apps: list[Litestar] = []

    def in_flight() -> int:
        return int(apps[0].state.scheduler.status("e").in_flight)

    spec = fake_spec("e", Task.CHAT, in_flight=in_flight, capabilities=Capabilities(), **options)
    plugin = FakePlugin([msgspec.structs.replace(spec, backend=f"{__name__}:{backend.__name__}")])
    apps.append(create_app(make_config(), plugins=[plugin], budgets=CPU_ONLY))
    return apps[0], plugin


def ask(client: TestClient, text: str, **extra: Any) -> Any:
    return client.post(CHAT, json={"model": "e", "messages": [{"role": "user", "content": text}], **extra})


def wait_until_released(client: TestClient) -> None:
    deadline = time.monotonic() + 10
    while client.get("/v1/models/e").json()["status"]["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert client.get("/v1/models/e").json()["status"]["in_flight"] == 0


@pytest.mark.parametrize("backend", [BlockingEcho, AsyncEcho])
def test_a_backend_on_the_base_answers_plain_and_streamed(backend: type) -> None:
    app, plugin = base_app(backend)
    with TestClient(app) as client:
        plain = ask(client, "hello there world")
        assert plain.status_code == 200, plain.text
        assert plain.json()["choices"][0]["message"]["content"] == "hello there world"
        assert plain.json()["usage"] == {
            "prompt_tokens": 3,
            "completion_tokens": 3,
            "total_tokens": 6,
            "completion_tokens_details": {"reasoning_tokens": 0},  # sent always, as OpenAI does
        }
        events = sse_events(ask(client, "one two", stream=True))
        text = "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1])
        assert (text, events[-1]) == ("one two", "[DONE]")
        wait_until_released(client)
    assert all(name.startswith("e-prepare") for name in plugin.calls.of("prepare"))  # off the event loop
    if backend is BlockingEcho:
        assert all(name.startswith("e-stream") for name in plugin.calls.of("step"))
        assert plugin.calls.of("closed") == [1, 1]  # each iterator closed while its lease was held


@pytest.mark.parametrize("stall", [False, True])
def test_a_client_that_leaves_stops_the_blocking_iterator_within_one_token_and_the_lease_goes_once(
    stall: bool,
) -> None:
    app, plugin = base_app(BlockingEcho, token_delay_s=0.01)
    body = json.dumps({"model": "e", "stream": True, "messages": [{"role": "user", "content": "long a b"}]})
    with TestClient(app) as client:
        client.blocking_portal.call(lambda: post_and_leave(app, CHAT, body.encode(), after=4, stall=stall))
        steps_when_left = plugin.calls.count("step")
        wait_until_released(client)
        time.sleep(0.1)  # an iterator that did not stop would go on stepping now
        assert plugin.calls.count("step") <= steps_when_left + 1  # within one token
        assert plugin.calls.of("closed") == [1]  # its cleanup ran on its thread while the lease was held
        assert ask(client, "still serving").json()["choices"][0]["message"]["content"] == "still serving"
        wait_until_released(client)
    assert plugin.calls.count("step") < WORDS
    assert plugin.calls.of("closed") == [1, 1]


def test_a_plain_request_whose_client_leaves_stops_its_iterator() -> None:
    app, plugin = base_app(BlockingEcho, token_delay_s=0.01)
    body = json.dumps({"model": "e", "messages": [{"role": "user", "content": "long a b"}]}).encode()

    async def leave_after(seconds: float) -> None:
        task = asyncio.ensure_future(post_and_leave(app, CHAT, body, after=1))
        await asyncio.sleep(seconds)
        task.cancel()  # the ASGI server cancels a request whose client hung up
        await asyncio.gather(task, return_exceptions=True)

    with TestClient(app) as client:
        client.blocking_portal.call(leave_after, 0.3)
        wait_until_released(client)
        steps = plugin.calls.count("step")
        time.sleep(0.1)
        assert plugin.calls.count("step") == steps and steps < WORDS
    assert plugin.calls.of("closed") == [1]


def test_client_mistakes_in_prepare_are_400_and_engine_failures_500_with_the_request_id() -> None:
    app, _ = base_app(BlockingEcho, crash_at=2)
    with TestClient(app) as client:
        assert_error(ask(client, ""), 400, param="messages")
        prepare_failure = assert_error(ask(client, "boom"), 500, code="backend_error")
        assert "/secret" not in prepare_failure["message"] and "request id" in prepare_failure["message"]
        plain = assert_error(ask(client, "a b c"), 500, code="backend_error")
        streamed = json.loads(sse_events(ask(client, "a b c", stream=True))[-2])["error"]
        assert (streamed["type"], streamed["code"]) == (plain["type"], plain["code"])
        assert "CUDA" not in streamed["message"] and "request id" in streamed["message"]
        wait_until_released(client)
        assert client.get("/health").json()["status"] == "ok"


class TwoStreams(BlockingEcho):
    """At most two iterators generate at once."""

    max_streams = 2


def test_max_streams_bounds_the_iterators_generating_at_once() -> None:
    app, plugin = base_app(TwoStreams, token_delay_s=0.005)
    with TestClient(app) as client:

        async def four_at_once() -> list[int]:
            async def one() -> int:
                chunks = await post_and_leave(
                    app,
                    CHAT,
                    json.dumps({"model": "e", "messages": [{"role": "user", "content": "a b c d"}]}).encode(),
                    after=10,
                )
                return len(chunks)

            return list(await asyncio.gather(*(one() for _ in range(4))))

        assert all(n >= 1 for n in client.blocking_portal.call(four_at_once))
        threads = set(plugin.calls.of("step"))
        assert len(threads) <= 2
