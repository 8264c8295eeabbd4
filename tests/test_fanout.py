"""``host.serving.fanout.merge_deltas``: n streams as one (``n > 1`` with ``stream: true``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from host.contract.domain import ChatDelta
from host.serving.fanout import merge_deltas


async def words(
    name: str, count: int, delay: float, log: list[str], fail_at: int | None = None
) -> AsyncIterator[ChatDelta]:
    try:
        for i in range(count):
            await asyncio.sleep(delay)
            if i == fail_at:
                raise RuntimeError(f"{name} failed")
            yield ChatDelta(text=f"{name}{i}")
        yield ChatDelta(finish_reason="stop")
    finally:
        log.append(f"{name} closed")


async def test_deltas_of_all_streams_arrive_tagged_with_their_index() -> None:
    log: list[str] = []
    got = [
        (i, d.text or d.finish_reason)
        async for i, d in merge_deltas([words("a", 3, 0.001, log), words("b", 2, 0.0015, log)])
    ]
    assert [t for i, t in got if i == 0] == ["a0", "a1", "a2", "stop"]
    assert [t for i, t in got if i == 1] == ["b0", "b1", "stop"]
    assert {i for i, _ in got[:3]} == {0, 1}  # interleaved, not one stream after the other
    assert sorted(log) == ["a closed", "b closed"]


async def test_the_first_failure_is_raised_and_the_other_streams_stop() -> None:
    log: list[str] = []
    with pytest.raises(RuntimeError, match="b failed"):
        async for _ in merge_deltas([words("a", 1000, 0.001, log), words("b", 10, 0.001, log, fail_at=2)]):
            pass
    await asyncio.sleep(0.01)
    assert sorted(log) == ["a closed", "b closed"]


async def test_closing_the_merged_stream_stops_every_stream() -> None:
    log: list[str] = []
    merged = merge_deltas([words("a", 1000, 0.001, log), words("b", 1000, 0.001, log)])
    async for _ in merged:
        break
    await merged.aclose()
    await asyncio.sleep(0.01)
    assert sorted(log) == ["a closed", "b closed"]
