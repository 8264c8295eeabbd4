"""``host.serving.generation.Generation``: n choices read as one stream, stopped and released once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from host.contract.domain import ChatDelta, ChatRequest
from host.serving.generation import Generation


class Words:
    """A backend whose choice ``i`` streams ``counts[i]`` words; each stream logs its cleanup and
    whether the lease was still held then."""

    def __init__(
        self, counts: list[int], delay: float = 0.001, fail: dict[int, int] | None = None, reject: int | None = None
    ) -> None:
        self.counts, self.delay, self.fail, self.reject = counts, delay, fail or {}, reject
        self.log: list[tuple[str, bool]] = []
        self.lease: FakeLease | None = None

    async def generate(self, request: ChatRequest) -> AsyncIterator[ChatDelta]:
        index = request.sampling.seed or 0
        name = "ab"[index]
        if index == self.reject:
            raise ValueError("rejected")  # before the first delta: the backend refuses the request
        try:
            for i in range(self.counts[index]):
                if i:
                    await asyncio.sleep(self.delay)
                if self.fail.get(index) == i:
                    raise RuntimeError(f"{name} failed")
                yield ChatDelta(text=f"{name}{i}")
            yield ChatDelta(finish_reason="stop", prompt_tokens=3, completion_tokens=self.counts[index])
        finally:
            assert self.lease is not None
            self.log.append((f"{name} closed", not self.lease.released))


class FakeLease:
    def __init__(self, backend: Words) -> None:
        self.backend = backend
        self.released = False
        self.releases = 0
        backend.lease = self

    def release(self) -> None:
        self.releases += 1
        self.released = True


def requests(n: int) -> list[ChatRequest]:
    from host.contract.domain import SamplingParams

    return [ChatRequest(model="m", messages=(), sampling=SamplingParams(seed=i)) for i in range(n)]


async def start(backend: Words, n: int = 2) -> tuple[Generation, FakeLease]:
    lease = FakeLease(backend)
    generation = await Generation.start(lease, requests(n), per_prompt=n)  # type: ignore[arg-type]
    return generation, lease


async def settle(lease: FakeLease) -> None:
    for _ in range(200):
        if lease.released:
            return
        await asyncio.sleep(0.005)


async def test_deltas_of_all_choices_arrive_tagged_with_their_index() -> None:
    backend = Words([3, 2])
    generation, lease = await start(backend)
    got = [(i, d.text or d.finish_reason) async for i, d in generation.deltas()]
    assert [t for i, t in got if i == 0] == ["a0", "a1", "a2", "stop"]
    assert [t for i, t in got if i == 1] == ["b0", "b1", "stop"]
    assert {i for i, _ in got[:2]} == {0, 1}  # interleaved, not one choice after the other
    await settle(lease)
    assert sorted(backend.log) == [("a closed", True), ("b closed", True)]  # stopped while the lease was held
    assert lease.releases == 1
    assert (generation.usage.prompt_tokens, generation.usage.completion_tokens) == (3, 5)  # the prompt once


async def test_the_first_failure_is_raised_and_the_other_choices_stop_before_the_lease_goes() -> None:
    backend = Words([1000, 10], fail={1: 2})
    generation, lease = await start(backend)
    with pytest.raises(RuntimeError, match="b failed"):
        async for _ in generation.deltas():
            pass
    await settle(lease)
    assert sorted(backend.log) == [("a closed", True), ("b closed", True)]
    assert lease.releases == 1


async def test_closing_the_stream_stops_every_choice_then_releases_once() -> None:
    backend = Words([1000, 1000])
    generation, lease = await start(backend)
    deltas = generation.deltas()
    async for _ in deltas:
        break
    await deltas.aclose()
    generation.close()  # twice: idempotent
    await settle(lease)
    assert sorted(backend.log) == [("a closed", True), ("b closed", True)]
    assert lease.releases == 1


async def test_a_generation_never_read_stops_its_started_choices_on_close() -> None:
    backend = Words([1000, 1000])
    generation, lease = await start(backend)
    generation.close()
    await settle(lease)
    assert sorted(backend.log) == [("a closed", True), ("b closed", True)]
    assert lease.releases == 1


async def test_collect_gathers_every_choice_and_releases() -> None:
    backend = Words([2, 3])
    generation, lease = await start(backend)
    results = await generation.collect()
    assert [r.text for r in results] == ["a0a1", "b0b1b2"]
    await settle(lease)
    assert lease.releases == 1


async def test_a_choice_that_fails_to_start_stops_the_started_ones_and_releases() -> None:
    backend = Words([1000, 1000], reject=1)
    with pytest.raises(ValueError, match="rejected"):
        await start(backend)
    assert backend.log == [("a closed", True)]
    assert backend.lease is not None and backend.lease.releases == 1


async def test_a_stream_that_ends_without_a_reason_finishes_with_stop() -> None:
    class Silent(Words):
        async def generate(self, request: ChatRequest) -> AsyncIterator[ChatDelta]:
            yield ChatDelta(text="x")

    generation, _ = await start(Silent([1]), n=1)
    got = [d async for _, d in generation.deltas()]
    assert [(d.text, d.finish_reason) for d in got] == [("x", None), ("", "stop")]
