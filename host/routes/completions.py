"""``POST /v1/completions``: raw-prompt completions on the chat models' engines, plain and streamed."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator

import msgspec
from litestar import Request, Response, post
from litestar.background_tasks import BackgroundTask
from litestar.datastructures import State
from litestar.response import Stream

from host.errors import BackendError, PlughostError, decode_body
from host.protocol.chat import ChatUsage
from host.protocol.completions import Completion, CompletionChoice, CompletionRequest, legacy_logprobs
from host.routes.chat import _complete, _event, _nth, _open_all, _Opened, _release_stream
from host.routes.chat_wire import Collected
from host.routes.fanout import merge_deltas
from host.scheduling.scheduler import Lease
from host.spec import Task

log = logging.getLogger("plughost.completions")
_encode = msgspec.json.Encoder().encode


@post("/v1/completions", status_code=200)
async def completions(request: Request, state: State) -> Response:
    """Complete each prompt ``n`` times; ``stream: true`` answers with OpenAI chunks over SSE."""
    body: CompletionRequest = decode_body(await request.body(), CompletionRequest)
    domains = body.to_domain()
    jobs = [_nth(d, i) for d in domains for i in range(body.n)]  # choice index = prompt x n + i
    prompts = [d.prompt or "" for d in domains for _ in range(body.n)]
    lease = await state.scheduler.acquire(domains[0].model, Task.CHAT)
    try:
        if body.stream:
            streams = await _open_all(lease, jobs)
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            events = _sse(lease, streams, prompts if body.echo else None, include_usage, len(domains))
            cleanup = BackgroundTask(_release_stream, lease, streams)  # see routes.chat: the stream owns the lease
            lease = None
            return Stream(
                events,
                media_type="text/event-stream",
                background=cleanup,
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        tasks = [asyncio.ensure_future(_complete(lease, job)) for job in jobs]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
    finally:
        if lease is not None:
            lease.release()
    choices = [_choice(i, c, prompts[i] if body.echo else "") for i, c in enumerate(results)]
    prompt_tokens = sum(results[i * body.n].prompt_tokens for i in range(len(domains)))
    completion_tokens = sum(c.completion_tokens for c in results)
    return Response(
        Completion(
            id=f"cmpl-{uuid.uuid4().hex}",
            created=int(time.time()),
            model=state.registry.get(domains[0].model).spec.id,
            choices=choices,
            usage=ChatUsage(
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                total_tokens=prompt_tokens + completion_tokens,
            ),
        )
    )


def _choice(index: int, c: Collected, echo: str) -> CompletionChoice:
    logprobs = legacy_logprobs(c.logprobs, len(echo)) if c.logprobs is not None else None
    return CompletionChoice(index=index, text=echo + c.text, logprobs=logprobs, finish_reason=c.finish_reason)


async def _sse(
    lease: Lease, streams: list[_Opened], echo: list[str] | None, include_usage: bool, prompt_count: int
) -> AsyncIterator[bytes]:
    cid, created, model = f"cmpl-{uuid.uuid4().hex}", int(time.time()), lease.model.spec.id
    per_prompt = len(streams) // prompt_count

    def chunk(choice: CompletionChoice) -> bytes:
        return _event(_encode(Completion(id=cid, created=created, model=model, choices=[choice])))

    offsets = [len(e) for e in echo] if echo else [0] * len(streams)
    try:
        if echo:
            for index, prompt in enumerate(echo):
                yield chunk(CompletionChoice(index=index, text=prompt))
        prompt_tokens: dict[int, int] = {}
        completion_tokens = 0
        async for index, delta in merge_deltas([opened.deltas() for opened in streams]):
            logprobs = legacy_logprobs(delta.logprobs, offsets[index]) if delta.logprobs is not None else None
            if delta.logprobs:
                offsets[index] += sum(len(t.token) for t in delta.logprobs)
            if delta.text or logprobs is not None or delta.finish_reason is not None:
                yield chunk(
                    CompletionChoice(index=index, text=delta.text, logprobs=logprobs, finish_reason=delta.finish_reason)
                )
            if delta.finish_reason is not None:
                prompt_tokens[index // per_prompt] = delta.prompt_tokens
                completion_tokens += delta.completion_tokens
        if include_usage:
            prompt = sum(prompt_tokens.values())
            usage = ChatUsage(
                prompt_tokens=prompt, completion_tokens=completion_tokens, total_tokens=prompt + completion_tokens
            )
            yield _event(_encode(Completion(id=cid, created=created, model=model, choices=[], usage=usage)))
    except PlughostError as exc:
        yield _event(_encode(exc.envelope()))
    except Exception as exc:
        log.exception("completion stream failed")
        yield _event(_encode(BackendError(f"generation failed: {type(exc).__name__}: {exc}").envelope()))
    finally:
        lease.release()  # synchronous, as in routes.chat
        for opened in streams:
            opened.close()
    yield b"data: [DONE]\n\n"
