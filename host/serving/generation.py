"""A generation: one model lease and one backend stream per choice, read together, stopped and
released once.

The rule it keeps: the lease is released only after every backend stream has stopped (its
generator has run its cleanup), so the scheduler never moves or unloads a model that still
generates for a closed request. Every way a response ends — finished, failed, the client gone
before or during the stream — goes through :meth:`Generation.close`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from host.contract.backend import ChatBackend
from host.contract.domain import ChatDelta, ChatRequest, TokenLogprob, ToolCall
from host.scheduling.lease import Lease

log = logging.getLogger("plughost.serving")

_DONE = object()  # a choice's stream has stopped (its pump's last item)


@dataclass
class Collected:
    """Everything one choice produced (non-streamed answers): ``reasoning`` is a thinking model's
    thinking, split from its answer ``text``; ``reasoning_tokens`` how many completion tokens it took."""

    text: str = ""
    reasoning: str = ""
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: list[ToolCall] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    stop_sequence: str | None = None
    reasoning_tokens: int = 0

    def add(self, delta: ChatDelta) -> None:
        """Fold one delta in."""
        self.text += delta.text
        self.reasoning += delta.reasoning
        self.calls.extend(delta.tool_calls)
        if delta.logprobs is not None:
            self.logprobs = (self.logprobs or []) + delta.logprobs
        if delta.finish_reason is not None:
            self.finish_reason = delta.finish_reason
            self.stop_sequence = delta.stop_sequence
            self.prompt_tokens, self.completion_tokens = delta.prompt_tokens, delta.completion_tokens
            self.reasoning_tokens = delta.reasoning_tokens


@dataclass
class Usage:
    """Token counts of a whole response: each prompt counted once, every choice's completion."""

    per_prompt: int = 1  # choices generated from each prompt (``n``)
    prompts: dict[int, int] = field(default_factory=dict)  # prompt index -> its tokens
    completion_tokens: int = 0
    reasoning_tokens: int = 0  # of the completion tokens, those the think blocks took

    def add(self, index: int, delta: ChatDelta) -> None:
        """Count a choice's last delta."""
        if delta.finish_reason is not None:
            self.prompts[index // self.per_prompt] = delta.prompt_tokens
            self.completion_tokens += delta.completion_tokens
            self.reasoning_tokens += delta.reasoning_tokens

    @property
    def prompt_tokens(self) -> int:
        """Tokens of the prompts (once each, however many choices they had)."""
        return sum(self.prompts.values())

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


class Generation:
    """The choices of one response, generating on one leased model.

    Made by :meth:`start`, which reads each choice's first delta (so that a request the backend
    rejects is still a JSON 4xx). Read it once, through :meth:`deltas` (streams) or :meth:`collect`;
    both end by :meth:`close`, which is also safe to call at any time and more than once.
    """

    def __init__(
        self,
        lease: Lease[ChatBackend],
        iterators: list[AsyncIterator[ChatDelta]],
        firsts: list[ChatDelta | None],
        per_prompt: int,
    ) -> None:
        self._lease = lease
        self._iterators = iterators
        self._firsts = firsts
        self._queue: asyncio.Queue[tuple[int, object]] = asyncio.Queue()
        self._pumps: list[asyncio.Task[None]] = []
        self._stopping: set[int] = set()  # choices whose stream is running its cleanup
        self._closed = False
        self._released = False
        self.usage = Usage(per_prompt=per_prompt)

    @classmethod
    async def start(cls, lease: Lease[ChatBackend], requests: Sequence[ChatRequest], per_prompt: int = 1) -> Generation:
        """Start every choice on ``lease``'s backend and read its first delta; takes ownership of
        ``lease`` (if a choice fails to start, the started ones are stopped and the lease released)."""
        iterators: list[AsyncIterator[ChatDelta]] = []
        firsts: list[ChatDelta | None] = []
        try:
            for request in requests:
                iterator = aiter(lease.backend.generate(request))
                firsts.append(await anext(iterator, None))
                iterators.append(iterator)
        except BaseException:
            try:
                for started in iterators:
                    await _aclose(started)
            finally:
                lease.release()  # the failed generator raised, so it has already stopped
            raise
        return cls(lease, iterators, firsts, per_prompt)

    @property
    def model(self) -> str:
        """The canonical id of the model that generates."""
        return self._lease.model.spec.id

    @property
    def choices(self) -> int:
        """How many choices are generated."""
        return len(self._iterators)

    async def deltas(self) -> AsyncIterator[tuple[int, ChatDelta]]:
        """``(choice index, delta)`` of every choice as they arrive; each choice ends with a delta
        that has a ``finish_reason``. The first failure of any choice is raised (the others are
        stopped); closing this iterator closes the generation."""
        if self._pumps or self._closed:
            raise RuntimeError("a generation is read once")
        loop = asyncio.get_running_loop()
        self._pumps = [loop.create_task(self._pump(i)) for i in range(self.choices)]
        running = self.choices
        try:
            while running:
                index, item = await self._queue.get()
                if item is _DONE:
                    running -= 1
                elif isinstance(item, Exception):
                    raise item
                else:
                    assert isinstance(item, ChatDelta)
                    self.usage.add(index, item)
                    yield index, item
        finally:
            self.close()

    async def collect(self) -> list[Collected]:
        """Every choice, whole (the choices generate concurrently)."""
        results = [Collected() for _ in range(self.choices)]
        async for index, delta in self.deltas():
            results[index].add(delta)
        return results

    def close(self) -> None:
        """Stop every choice that still generates, then release the lease once all have stopped.

        Synchronous and idempotent: it runs in ``finally`` blocks of cancelled generators (where an
        await could be cut short) and as the response's background task. Streams that are closing
        already are left to finish their cleanup; the lease goes when the last one is done."""
        if self._closed:
            return
        self._closed = True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop left: nothing can still run on the model
            self._release()
            return
        if not self._pumps:  # never read: stop the suspended generators
            self._pumps = [loop.create_task(_aclose(it)) for it in self._iterators]
        else:
            for index, pump in enumerate(self._pumps):
                if index not in self._stopping:
                    pump.cancel()  # interrupts the backend at its next await; a no-op once done
        pending = [p for p in self._pumps if not p.done()]
        if not pending:
            self._release()
            return
        for pump in pending:
            pump.add_done_callback(self._stopped)

    def _stopped(self, pump: asyncio.Task[None]) -> None:
        if not pump.cancelled() and pump.exception() is not None:
            log.error("stopping a chat generation failed", exc_info=pump.exception())
        if all(p.done() for p in self._pumps):
            self._release()

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._lease.release()

    async def _pump(self, index: int) -> None:
        """Move one choice's deltas to the queue; a stream that ends without saying why ends "stop"."""
        iterator, first = self._iterators[index], self._firsts[index]
        put = self._queue.put_nowait
        try:
            finished = first is not None and first.finish_reason is not None
            if first is not None:
                put((index, first))
            if not finished:
                async for delta in iterator:
                    put((index, delta))
                    if delta.finish_reason is not None:
                        finished = True
                        break
            if not finished:
                put((index, ChatDelta(finish_reason="stop")))
        except Exception as exc:  # handed to the reader, which raises it
            put((index, exc))
        finally:
            self._stopping.add(index)  # from here on close() lets the cleanup run to its end
            try:
                await _aclose(iterator)
            finally:
                put((index, _DONE))


async def _aclose(iterator: AsyncIterator[ChatDelta]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()
