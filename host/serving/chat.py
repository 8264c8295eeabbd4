"""Chat serving: n-way completions and SSE streams (n choices interleaved) over a chat backend.

Both entry points take ownership of the request's lease. The rule they keep: a generation is
stopped first, and the lease is released only once the backend has really stopped, so the
scheduler never moves or unloads a model that still generates for a closed request.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Any

import msgspec

from host.contract import request_id
from host.contract.backend import ChatBackend
from host.contract.domain import ChatDelta, ChatRequest
from host.contract.errors import BackendError, PlughostError, for_client, internal_error_message
from host.metrics import NO_METRICS, Observer
from host.protocol.chat import ChatCompletionChunk, ChatUsage, ChunkChoice, Delta
from host.protocol.tools import ChoiceLogprobs
from host.scheduling.lease import Lease
from host.serving.fanout import merge_deltas
from host.serving.wire import Collected, chunk_parts

log = logging.getLogger("plughost.chat")
_encode = msgspec.json.Encoder().encode


def nth_choice(request: ChatRequest, i: int) -> ChatRequest:
    """The i-th of ``n`` choices: distinct seeds keep seeded choices reproducible yet different."""
    if i == 0 or request.sampling.seed is None:
        return request
    sampling = msgspec.structs.replace(request.sampling, seed=request.sampling.seed + i)
    return msgspec.structs.replace(request, sampling=sampling)


async def complete(lease: Lease[ChatBackend], request: ChatRequest, n: int = 1) -> list[Collected]:
    """Generate ``n`` choices concurrently; consumes ``lease``."""
    return await complete_all(lease, [nth_choice(request, i) for i in range(n)])


async def complete_all(lease: Lease[ChatBackend], requests: list[ChatRequest]) -> list[Collected]:
    """Generate one choice per request concurrently; consumes ``lease``.

    One failed choice cancels the others. The lease is released once every generation has
    stopped, even when this coroutine is itself cancelled before they have.
    """
    tasks = [asyncio.ensure_future(_collect(lease.backend, r)) for r in requests]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    finally:
        # Normally every task is done here. If this coroutine was cancelled while waiting for the
        # cancelled choices, they are still in their cleanup: not cancelled twice, waited for.
        _release_when_done(lease, tasks)


async def _collect(backend: ChatBackend, request: ChatRequest) -> Collected:
    iterator = aiter(backend.generate(request))
    collected = Collected()
    try:
        async for delta in iterator:
            collected.add(delta)
            if delta.finish_reason is not None:
                break
    finally:
        await _aclose(iterator)  # a task: its cleanup may await (only its own cancel() interrupts it)
    return collected


def _release_when_done(lease: Lease[ChatBackend], tasks: Iterable[asyncio.Future[Any]]) -> None:
    """Release ``lease`` now if every task is done, else when the last one finishes (synchronous)."""
    pending = {t for t in tasks if not t.done()}
    if not pending:
        lease.release()
        return

    def done(task: asyncio.Future[Any]) -> None:
        pending.discard(task)
        if not pending:
            lease.release()

    for task in pending:
        task.add_done_callback(done)


async def _aclose(iterator: AsyncIterator[ChatDelta]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


def _finished(iterator: AsyncIterator[ChatDelta]) -> bool:
    """Whether a backend's iterator has nothing left to stop (exhausted, raised or closed)."""
    if inspect.isasyncgen(iterator):
        return iterator.ag_frame is None  # an async generator drops its frame when it finishes
    return not hasattr(iterator, "aclose")


class ChatStream:
    """A streamed completion of one or more choices: each backend's first delta is read before the
    response starts (so validation errors are still a JSON 4xx); :meth:`events` yields the SSE bytes,
    the choices interleaved as their deltas arrive.

    Owns the lease: :meth:`close` stops every generation, then releases the lease once all the
    backends' generators have finished their cleanup.
    """

    def __init__(
        self,
        lease: Lease[ChatBackend],
        iterators: list[AsyncIterator[ChatDelta]],
        firsts: list[ChatDelta | None],
        usage: bool,
        metrics: Observer = NO_METRICS,
    ) -> None:
        self._lease = lease
        self._metrics = metrics
        self._iterators = iterators
        self._firsts = firsts
        self._usage = usage
        self._closed = False
        self._stopping: set[asyncio.Task[None]] = set()  # referenced so they are not collected early

    @classmethod
    async def open(
        cls,
        lease: Lease[ChatBackend],
        requests: ChatRequest | list[ChatRequest],
        *,
        include_usage: bool,
        metrics: Observer = NO_METRICS,
    ) -> ChatStream:
        """Start generating every choice and read their first deltas; consumes ``lease`` (on failure
        the choices already started are stopped, then the lease is released)."""
        iterators: list[AsyncIterator[ChatDelta]] = []
        firsts: list[ChatDelta | None] = []
        try:
            for request in requests if isinstance(requests, list) else [requests]:
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
        return cls(lease, iterators, firsts, include_usage, metrics)

    def close(self) -> None:
        """Stop the generations, then release the lease. Synchronous and idempotent: it runs in a
        ``finally`` of a cancelled generator, where awaiting could be cut short, so the backends'
        ``aclose()`` run in tasks of their own and the lease goes when the last one is done."""
        if self._closed:
            return
        self._closed = True
        running = [it for it in self._iterators if not _finished(it)]
        if not running:
            self._lease.release()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop left: nothing can still run on the model
            self._lease.release()
            return
        self._stopping = {loop.create_task(_aclose(it)) for it in running}
        for task in self._stopping:
            task.add_done_callback(self._stopped)

    async def close_after_response(self) -> None:
        """:meth:`close` as a Litestar background task: covers a body that was never iterated (the
        client left before the first byte). Async so that it runs on the event loop, where the
        scheduler lives; Litestar runs a synchronous background task in a worker thread."""
        self.close()

    def _stopped(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("stopping a chat generation failed", exc_info=task.exception())
        if all(t.done() for t in self._stopping):
            self._lease.release()

    @property
    def choices(self) -> int:
        """How many choices the stream carries."""
        return len(self._iterators)

    @property
    def usage(self) -> bool:
        """Whether the client asked for a final usage chunk."""
        return self._usage

    @property
    def model(self) -> str:
        """The canonical id of the model that generates."""
        return self._lease.model.spec.id

    async def _deltas(self, index: int) -> AsyncIterator[ChatDelta]:
        first = self._firsts[index]
        if first is not None:
            yield first
            if first.finish_reason is not None:
                return
        async for delta in self._iterators[index]:
            yield delta
            if delta.finish_reason is not None:
                return

    def deltas(self) -> AsyncIterator[tuple[int, ChatDelta]]:
        """``(choice index, delta)`` of every choice as they arrive."""
        return merge_deltas([self._deltas(i) for i in range(self.choices)])

    async def events(self) -> AsyncIterator[bytes]:
        """OpenAI ``chat.completion.chunk`` events, an error event if generation fails, then ``[DONE]``."""
        cid, created, model = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), self.model

        def chunk(
            index: int | None,
            delta: Delta | None = None,
            finish: str | None = None,
            usage: ChatUsage | None = None,
            logprobs: ChoiceLogprobs | None = None,
        ) -> bytes:
            choices = (
                []
                if index is None or delta is None
                else [ChunkChoice(index=index, delta=delta, finish_reason=finish, logprobs=logprobs)]
            )
            return event(
                _encode(ChatCompletionChunk(id=cid, created=created, model=model, choices=choices, usage=usage))
            )

        try:
            for index in range(self.choices):
                yield chunk(index, Delta(role="assistant", content=""))
            prompt_tokens = completion_tokens = 0
            unfinished = set(range(self.choices))
            async for index, delta in self.deltas():
                for part, logprobs in chunk_parts(delta):
                    yield chunk(index, part, logprobs=logprobs)
                if delta.finish_reason is not None:
                    yield chunk(index, Delta(), delta.finish_reason)
                    unfinished.discard(index)
                    prompt_tokens = delta.prompt_tokens
                    completion_tokens += delta.completion_tokens
            for index in sorted(unfinished):  # a backend stream that ended without saying why
                yield chunk(index, Delta(), "stop")
            self._metrics.tokens(model, prompt_tokens, completion_tokens)
            if self._usage:
                total = prompt_tokens + completion_tokens
                yield chunk(None, usage=ChatUsage(prompt_tokens, completion_tokens, total))
        except PlughostError as exc:
            yield event(_encode(for_client(exc).envelope()))
        except Exception:
            log.exception("chat stream failed")  # the details stay in the log; the client gets the request id
            yield event(_encode(BackendError(internal_error_message(request_id.current.get())).envelope()))
        finally:
            self.close()  # synchronous on purpose: a disconnected client cancels this generator
        yield b"data: [DONE]\n\n"


def event(payload: bytes) -> bytes:
    """One SSE ``data:`` event."""
    return b"data: " + payload + b"\n\n"
