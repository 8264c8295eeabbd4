"""Several generations streamed as one: ``n > 1`` with ``stream: true``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from host.contract.domain import ChatDelta

_DONE = object()


async def merge_deltas(streams: list[AsyncIterator[ChatDelta]]) -> AsyncIterator[tuple[int, ChatDelta]]:
    """``(choice index, delta)`` from all ``streams`` in the order they arrive.

    The first failure of any stream is raised (the others are cancelled); closing the merged
    iterator cancels every stream's pump.
    """
    if len(streams) == 1:
        async for delta in streams[0]:
            yield 0, delta
        return
    queue: asyncio.Queue[tuple[int, object]] = asyncio.Queue()

    async def pump(index: int, stream: AsyncIterator[ChatDelta]) -> None:
        try:
            async for delta in stream:
                await queue.put((index, delta))
        except Exception as exc:  # handed to the consumer, which raises it
            await queue.put((index, exc))
        await queue.put((index, _DONE))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        running = len(tasks)
        while running:
            index, item = await queue.get()
            if item is _DONE:
                running -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                assert isinstance(item, ChatDelta)
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
