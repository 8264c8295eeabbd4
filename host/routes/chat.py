"""``POST /v1/chat/completions``, plain and streamed (SSE)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator

import msgspec
from litestar import Request, Response, post
from litestar.background_tasks import BackgroundTask
from litestar.datastructures import State
from litestar.response import Stream

from host.domain import ChatDelta, ChatRequest
from host.errors import BackendError, PlughostError, decode_body
from host.protocol.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatUsage,
    ChunkChoice,
    Delta,
)
from host.protocol.tools import ChoiceLogprobs
from host.routes.chat_wire import Collected, chunk_parts
from host.routes.fanout import merge_deltas
from host.scheduling.scheduler import Lease
from host.spec import Task

log = logging.getLogger("plughost.chat")
_encode = msgspec.json.Encoder().encode


@post("/v1/chat/completions", status_code=200)
async def chat_completions(request: Request, state: State) -> Response:
    """Generate a chat completion; ``stream: true`` answers with OpenAI chunks over SSE."""
    body: ChatCompletionRequest = decode_body(await request.body(), ChatCompletionRequest)
    domain = body.to_domain()
    lease = await state.scheduler.acquire(domain.model, Task.CHAT)
    try:
        if body.stream:
            streams = await _open_all(lease, [_nth(domain, i) for i in range(body.n)])
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            events = _sse(lease, streams, include_usage)
            # The stream owns the lease now. Its generator releases it in ``finally``, and the
            # background task covers a body that is never iterated (client gone before the first byte).
            cleanup = BackgroundTask(_release_stream, lease, streams)
            lease = None
            return Stream(
                events,
                media_type="text/event-stream",
                background=cleanup,
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        tasks = [asyncio.ensure_future(_complete(lease, _nth(domain, i))) for i in range(body.n)]
        try:
            choices = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:  # one failed choice stops the others before the lease goes
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
    finally:
        if lease is not None:
            lease.release()
    prompt = choices[0].prompt_tokens
    completion = sum(c.completion_tokens for c in choices)
    return Response(
        ChatCompletion(
            id=f"chatcmpl-{uuid.uuid4().hex}",
            created=int(time.time()),
            model=lease_model(domain, state),
            choices=[c.choice(i) for i, c in enumerate(choices)],
            usage=ChatUsage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion),
        )
    )


def _release_stream(lease: Lease, streams: list[_Opened]) -> None:
    lease.release()
    for opened in streams:
        opened.close()


async def _open_all(lease: Lease, jobs: list[ChatRequest]) -> list[_Opened]:
    """One stream per choice, each with its first delta read (a validation error closes the rest)."""
    streams: list[_Opened] = []
    try:
        for job in jobs:
            streams.append(await _opened(lease, job))
    except BaseException:
        for opened in streams:
            opened.close()
        raise
    return streams


def lease_model(domain: ChatRequest, state: State) -> str:
    """The canonical id of the model the request named (aliases resolve to it)."""
    return state.registry.get(domain.model).spec.id


def _nth(domain: ChatRequest, i: int) -> ChatRequest:
    """The i-th of ``n`` choices: distinct seeds keep seeded choices reproducible yet different."""
    if i == 0 or domain.sampling.seed is None:
        return domain
    return msgspec.structs.replace(
        domain, sampling=msgspec.structs.replace(domain.sampling, seed=domain.sampling.seed + i)
    )


class _Opened:
    """A backend stream whose first delta has been read (so validation errors surface as JSON)."""

    def __init__(self, iterator: AsyncIterator[ChatDelta], first: ChatDelta | None) -> None:
        self.iterator = iterator
        self.first = first
        self._closing: asyncio.Task[None] | None = None

    async def deltas(self) -> AsyncIterator[ChatDelta]:
        if self.first is not None:
            yield self.first
            if self.first.finish_reason is not None:
                return
        async for delta in self.iterator:
            yield delta
            if delta.finish_reason is not None:
                return

    def close(self) -> None:
        """Stop the backend's generation (scheduled; callable from a synchronous ``finally``)."""
        aclose = getattr(self.iterator, "aclose", None)
        if aclose is not None and self._closing is None:
            with contextlib.suppress(RuntimeError):  # no running loop: nothing left to stop
                self._closing = asyncio.get_running_loop().create_task(aclose())  # referenced: not GC'd early


async def _opened(lease: Lease, domain: ChatRequest) -> _Opened:
    iterator = aiter(lease.backend.generate(domain))
    first = await anext(iterator, None)
    return _Opened(iterator, first)


async def _complete(lease: Lease, domain: ChatRequest) -> Collected:
    opened = await _opened(lease, domain)
    collected = Collected()
    try:
        async for delta in opened.deltas():
            collected.add(delta)
    finally:
        opened.close()
    return collected


def _event(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


async def _sse(lease: Lease, streams: list[_Opened], include_usage: bool) -> AsyncIterator[bytes]:
    cid, created, model = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), lease.model.spec.id

    def chunk(index: int, delta: Delta, finish: str | None = None, logprobs: ChoiceLogprobs | None = None) -> bytes:
        return _event(
            _encode(
                ChatCompletionChunk(
                    id=cid,
                    created=created,
                    model=model,
                    choices=[ChunkChoice(index=index, delta=delta, finish_reason=finish, logprobs=logprobs)],
                )
            )
        )

    try:
        for index in range(len(streams)):
            yield chunk(index, Delta(role="assistant", content=""))
        prompt_tokens = completion_tokens = 0
        unfinished = set(range(len(streams)))
        async for index, delta in merge_deltas([opened.deltas() for opened in streams]):
            for part, logprobs in chunk_parts(delta):
                yield chunk(index, part, logprobs=logprobs)
            if delta.finish_reason is not None:
                yield chunk(index, Delta(), delta.finish_reason)
                unfinished.discard(index)
                prompt_tokens = delta.prompt_tokens
                completion_tokens += delta.completion_tokens
        for index in sorted(unfinished):  # a backend stream that ended without saying why
            yield chunk(index, Delta(), "stop")
        if include_usage:
            usage = ChatUsage(
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                total_tokens=prompt_tokens + completion_tokens,
            )
            yield _event(_encode(ChatCompletionChunk(id=cid, created=created, model=model, choices=[], usage=usage)))
    except PlughostError as exc:
        yield _event(_encode(exc.envelope()))
    except Exception as exc:
        log.exception("chat stream failed")
        yield _event(_encode(BackendError(f"generation failed: {type(exc).__name__}: {exc}").envelope()))
    finally:
        # Synchronous on purpose: a disconnected client cancels this generator, and async
        # cleanup in a cancelled generator can be cut short.
        lease.release()
        for opened in streams:
            opened.close()
    yield b"data: [DONE]\n\n"
