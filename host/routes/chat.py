"""``POST /v1/chat/completions``, plain and streamed (SSE)."""

from __future__ import annotations

import time
import uuid

from litestar import Response, post
from litestar.background_tasks import BackgroundTask
from litestar.params import JSONBody
from litestar.response import Stream

from host.contract.domain import ChatRequest
from host.contract.spec import Task
from host.metrics import Observer
from host.protocol.chat import ChatCompletion, ChatCompletionRequest, ChatUsage
from host.routes.deps import ConfigDep, MetricsDep, SchedulerDep
from host.scheduling.pool import ModelPool
from host.server.openapi import MODEL_ERRORS, WireBody
from host.serving.chat import ChatStream, complete, nth_choice
from host.serving.waiting import open_stream

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@post(
    "/v1/chat/completions",
    status_code=200,
    dto=WireBody[ChatCompletionRequest],
    return_dto=None,
    responses=MODEL_ERRORS,
)
async def chat_completions(
    data: JSONBody[ChatCompletionRequest], scheduler: SchedulerDep, config: ConfigDep, metrics: MetricsDep
) -> Response[ChatCompletion] | Stream:
    """Generate a chat completion; ``stream: true`` answers with OpenAI chunks over SSE."""
    arrived = time.perf_counter()
    body = data
    domain = body.to_domain()
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        choices = [nth_choice(domain, i) for i in range(body.n)]
        opened = await open_stream(
            _acquire_and_open(scheduler, choices, include_usage, metrics, arrived),
            ChatStream.events,
            ChatStream.close,
            config.server.stream_keepalive_s,
        )
        # An Opening (the model was not ready within 0.5 s) sends keep-alives until it is. The
        # background task closes a stream whose body is never iterated (client gone first).
        return Stream(
            opened.events(),
            media_type="text/event-stream",
            background=BackgroundTask(opened.close_after_response),
            headers=_SSE_HEADERS,
        )
    lease = await scheduler.acquire(domain.model, Task.CHAT)
    model = lease.model.spec.id
    collected = await complete(lease, domain, body.n)
    prompt = collected[0].prompt_tokens
    completion = sum(c.completion_tokens for c in collected)
    metrics.tokens(model, prompt, completion)
    return Response(
        ChatCompletion(
            id=f"chatcmpl-{uuid.uuid4().hex}",
            created=int(time.time()),
            model=model,
            choices=[c.choice(i) for i, c in enumerate(collected)],
            usage=ChatUsage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion),
        )
    )


async def _acquire_and_open(
    scheduler: ModelPool, choices: list[ChatRequest], include_usage: bool, metrics: Observer, arrived: float
) -> ChatStream:
    """A lease and the backend's streams (one per choice) with their first deltas read (the stream
    owns the lease); records the time to first token."""
    lease = await scheduler.acquire(choices[0].model, Task.CHAT)
    stream = await ChatStream.open(lease, choices, include_usage=include_usage, metrics=metrics)
    metrics.first_token(lease.model.spec.id, time.perf_counter() - arrived)
    return stream
