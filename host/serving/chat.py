"""Chat serving: n-way completions and SSE streams over a chat backend.

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

from host.backend import ChatBackend
from host.domain import ChatDelta, ChatRequest
from host.errors import BackendError, PlughostError
from host.protocol.chat import ChatCompletionChunk, ChatUsage, ChunkChoice, Delta
from host.scheduling.lease import Lease

log = logging.getLogger("plughost.chat")
_encode = msgspec.json.Encoder().encode


class Finished(msgspec.Struct, frozen=True):
    """One finished choice of a plain (not streamed) completion."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


def _nth_choice(request: ChatRequest, i: int) -> ChatRequest:
    """The i-th of ``n`` choices: distinct seeds keep seeded choices reproducible yet different."""
    if i == 0 or request.sampling.seed is None:
        return request
    sampling = msgspec.structs.replace(request.sampling, seed=request.sampling.seed + i)
    return msgspec.structs.replace(request, sampling=sampling)


async def complete(lease: Lease[ChatBackend], request: ChatRequest, n: int = 1) -> list[Finished]:
    """Generate ``n`` choices concurrently; consumes ``lease``.

    One failed choice cancels the others. The lease is released once every generation has
    stopped, even when this coroutine is itself cancelled before they have.
    """
    tasks = [asyncio.ensure_future(_collect(lease.backend, _nth_choice(request, i))) for i in range(n)]
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


async def _collect(backend: ChatBackend, request: ChatRequest) -> Finished:
    iterator = aiter(backend.generate(request))
    parts: list[str] = []
    last = ChatDelta(finish_reason="stop")
    try:
        async for delta in iterator:
            parts.append(delta.text)
            last = delta
            if delta.finish_reason is not None:
                break
    finally:
        await _aclose(iterator)  # a task: its cleanup may await (only its own cancel() interrupts it)
    return Finished("".join(parts), last.finish_reason or "stop", last.prompt_tokens, last.completion_tokens)


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
    """A streamed completion: the backend's first delta is read before the response starts
    (so validation errors are still a JSON 4xx); :meth:`events` yields the SSE bytes.

    Owns the lease: :meth:`close` stops the generation, then releases the lease once the
    backend's generator has finished its cleanup.
    """

    def __init__(
        self, lease: Lease[ChatBackend], iterator: AsyncIterator[ChatDelta], first: ChatDelta | None, usage: bool
    ) -> None:
        self._lease = lease
        self._iterator = iterator
        self._first = first
        self._usage = usage
        self._closed = False
        self._stopping: asyncio.Task[None] | None = None  # referenced so it is not collected early

    @classmethod
    async def open(cls, lease: Lease[ChatBackend], request: ChatRequest, *, include_usage: bool) -> ChatStream:
        """Start generating and read the first delta; consumes ``lease`` (released here on failure)."""
        try:
            iterator = aiter(lease.backend.generate(request))
            first = await anext(iterator, None)
        except BaseException:
            lease.release()  # the generator raised, so it has already stopped
            raise
        return cls(lease, iterator, first, include_usage)

    def close(self) -> None:
        """Stop the generation, then release the lease. Synchronous and idempotent: it runs in a
        ``finally`` of a cancelled generator, where awaiting could be cut short, so the backend's
        ``aclose()`` runs in a task of its own and the lease goes when that task is done."""
        if self._closed:
            return
        self._closed = True
        if _finished(self._iterator):
            self._lease.release()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop left: nothing can still run on the model
            self._lease.release()
            return
        self._stopping = loop.create_task(_aclose(self._iterator))
        self._stopping.add_done_callback(self._stopped)

    async def close_after_response(self) -> None:
        """:meth:`close` as a Litestar background task: covers a body that was never iterated (the
        client left before the first byte). Async so that it runs on the event loop, where the
        scheduler lives; Litestar runs a synchronous background task in a worker thread."""
        self.close()

    def _stopped(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("stopping a chat generation failed", exc_info=task.exception())
        self._lease.release()

    async def _deltas(self) -> AsyncIterator[ChatDelta]:
        if self._first is not None:
            yield self._first
            if self._first.finish_reason is not None:
                return
        async for delta in self._iterator:
            yield delta
            if delta.finish_reason is not None:
                return

    async def events(self) -> AsyncIterator[bytes]:
        """OpenAI ``chat.completion.chunk`` events, an error event if generation fails, then ``[DONE]``."""
        cid, created, model = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), self._lease.model.spec.id

        def chunk(delta: Delta | None, finish: str | None = None, usage: ChatUsage | None = None) -> bytes:
            choices = [] if delta is None else [ChunkChoice(index=0, delta=delta, finish_reason=finish)]
            return _event(
                _encode(ChatCompletionChunk(id=cid, created=created, model=model, choices=choices, usage=usage))
            )

        try:
            yield chunk(Delta(role="assistant", content=""))
            last = ChatDelta(finish_reason="stop")
            async for delta in self._deltas():
                if delta.text:
                    yield chunk(Delta(content=delta.text))
                last = delta
            yield chunk(Delta(), last.finish_reason or "stop")
            if self._usage:
                total = last.prompt_tokens + last.completion_tokens
                yield chunk(None, usage=ChatUsage(last.prompt_tokens, last.completion_tokens, total))
        except PlughostError as exc:
            yield _event(_encode(exc.envelope()))
        except Exception as exc:
            log.exception("chat stream failed")
            yield _event(_encode(BackendError(f"generation failed: {type(exc).__name__}: {exc}").envelope()))
        finally:
            self.close()  # synchronous on purpose: a disconnected client cancels this generator
        yield b"data: [DONE]\n\n"


def _event(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"
