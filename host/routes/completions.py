"""``POST /v1/completions``: raw-prompt completions on the chat models' engines, plain and streamed."""

from __future__ import annotations

import time
import uuid

from litestar import Response, post
from litestar.background_tasks import BackgroundTask
from litestar.params import JSONBody
from litestar.response import Stream

from host.contract.spec import Task
from host.protocol.chat import ChatUsage
from host.protocol.completions import Completion, CompletionChoice, CompletionRequest, legacy_logprobs
from host.routes.deps import SchedulerDep
from host.server.openapi import MODEL_ERRORS, WireBody
from host.serving.chat import ChatStream, complete_all, nth_choice
from host.serving.completions import completion_events


@post(
    "/v1/completions",
    status_code=200,
    dto=WireBody[CompletionRequest],
    return_dto=None,
    responses=MODEL_ERRORS,
)
async def completions(data: JSONBody[CompletionRequest], scheduler: SchedulerDep) -> Response[Completion] | Stream:
    """Complete each prompt ``n`` times; ``stream: true`` answers with OpenAI chunks over SSE."""
    body = data
    domains = body.to_domain()
    jobs = [nth_choice(d, i) for d in domains for i in range(body.n)]  # choice index = prompt x n + i
    echo = [d.prompt or "" for d in domains for _ in range(body.n)] if body.echo else None
    lease = await scheduler.acquire(domains[0].model, Task.CHAT)
    model = lease.model.spec.id
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        stream = await ChatStream.open(lease, jobs, include_usage=include_usage)
        return Stream(
            completion_events(stream, echo, len(domains)),
            media_type="text/event-stream",
            background=BackgroundTask(stream.close_after_response),
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    results = await complete_all(lease, jobs)
    choices = []
    for i, c in enumerate(results):
        prefix = echo[i] if echo else ""
        logprobs = legacy_logprobs(c.logprobs, len(prefix)) if c.logprobs is not None else None
        choices.append(
            CompletionChoice(index=i, text=prefix + c.text, logprobs=logprobs, finish_reason=c.finish_reason)
        )
    prompt_tokens = sum(results[i * body.n].prompt_tokens for i in range(len(domains)))  # each prompt once
    completion_tokens = sum(c.completion_tokens for c in results)
    usage = ChatUsage(prompt_tokens, completion_tokens, prompt_tokens + completion_tokens)
    return Response(
        Completion(id=f"cmpl-{uuid.uuid4().hex}", created=int(time.time()), model=model, choices=choices, usage=usage)
    )
