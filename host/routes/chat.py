"""``POST /v1/chat/completions``, plain and streamed (SSE)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator

import msgspec
from litestar import Response, post
from litestar.background_tasks import BackgroundTask
from litestar.datastructures import State
from litestar.params import JSONBody
from litestar.response import Stream

from host import request_id
from host.domain import ChatDelta, ChatRequest
from host.errors import BackendError, InvalidRequest, PlughostError, internal_error_message
from host.metrics import Observer
from host.openapi import MODEL_ERRORS, WireBody
from host.protocol.chat import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatUsage,
    Choice,
    ChunkChoice,
    Delta,
)
from host.scheduling.scheduler import Lease
from host.spec import Task

log = logging.getLogger("plughost.chat")
_encode = msgspec.json.Encoder().encode


@post(
    "/v1/chat/completions",
    status_code=200,
    dto=WireBody[ChatCompletionRequest],
    return_dto=None,
    responses=MODEL_ERRORS,
)
async def chat_completions(data: JSONBody[ChatCompletionRequest], state: State) -> Response:
    """Generate a chat completion; ``stream: true`` answers with OpenAI chunks over SSE."""
    arrived = time.perf_counter()
    domain = data.to_domain()
    if data.stream and data.n > 1:
        raise InvalidRequest("n > 1 is not supported with stream: true.", param="n")
    lease = await state.scheduler.acquire(domain.model, Task.CHAT)
    try:
        if data.stream:
            stream = await _opened(lease, domain)
            state.metrics.first_token(lease.model.spec.id, time.perf_counter() - arrived)
            include_usage = bool(data.stream_options and data.stream_options.include_usage)
            events = _sse(lease, stream, include_usage, state.metrics)
            # The stream owns the lease now. Its generator releases it in ``finally``, and the
            # background task covers a body that is never iterated (client gone before the first byte).
            cleanup = BackgroundTask(_release_stream, lease, stream)
            lease = None
            return Stream(
                events,
                media_type="text/event-stream",
                background=cleanup,
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        tasks = [asyncio.ensure_future(_complete(lease, _nth(domain, i))) for i in range(data.n)]
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
    prompt = choices[0][2]
    completion = sum(c[3] for c in choices)
    state.metrics.first_token(lease_model(domain, state), min(c[4] for c in choices) - arrived)
    state.metrics.tokens(lease_model(domain, state), prompt, completion)
    return Response(
        ChatCompletion(
            id=f"chatcmpl-{uuid.uuid4().hex}",
            created=int(time.time()),
            model=lease_model(domain, state),
            choices=[
                Choice(index=i, message=AssistantMessage(role="assistant", content=text), finish_reason=reason)
                for i, (text, reason, *_) in enumerate(choices)
            ],
            usage=ChatUsage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion),
        )
    )


def _release_stream(lease: Lease, opened: _Opened) -> None:
    lease.release()
    opened.close()


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


async def _complete(lease: Lease, domain: ChatRequest) -> tuple[str, str, int, int, float]:
    """The text, finish reason, prompt and completion tokens, and when the first token came."""
    opened = await _opened(lease, domain)
    first = time.perf_counter()
    parts: list[str] = []
    last = ChatDelta(finish_reason="stop")
    try:
        async for delta in opened.deltas():
            parts.append(delta.text)
            last = delta
    finally:
        opened.close()
    return "".join(parts), last.finish_reason or "stop", last.prompt_tokens, last.completion_tokens, first


def _event(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


async def _sse(lease: Lease, opened: _Opened, include_usage: bool, metrics: Observer) -> AsyncIterator[bytes]:
    cid, created, model = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), lease.model.spec.id

    def chunk(delta: Delta, finish: str | None = None) -> bytes:
        return _event(
            _encode(
                ChatCompletionChunk(
                    id=cid,
                    created=created,
                    model=model,
                    choices=[ChunkChoice(index=0, delta=delta, finish_reason=finish)],
                )
            )
        )

    try:
        yield chunk(Delta(role="assistant", content=""))
        last = ChatDelta(finish_reason="stop")
        async for delta in opened.deltas():
            if delta.text:
                yield chunk(Delta(content=delta.text))
            last = delta
        yield chunk(Delta(), last.finish_reason or "stop")
        metrics.tokens(model, last.prompt_tokens, last.completion_tokens)
        if include_usage:
            usage = ChatUsage(
                prompt_tokens=last.prompt_tokens,
                completion_tokens=last.completion_tokens,
                total_tokens=last.prompt_tokens + last.completion_tokens,
            )
            yield _event(_encode(ChatCompletionChunk(id=cid, created=created, model=model, choices=[], usage=usage)))
    except PlughostError as exc:
        yield _event(_encode(exc.envelope()))
    except Exception:
        log.exception("chat stream failed")
        yield _event(_encode(BackendError(internal_error_message(request_id.current.get())).envelope()))
    finally:
        # Synchronous on purpose: a disconnected client cancels this generator, and async
        # cleanup in a cancelled generator can be cut short.
        lease.release()
        opened.close()
    yield b"data: [DONE]\n\n"
