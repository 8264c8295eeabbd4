"""``POST /v1/chat/completions``, plain and streamed (SSE)."""

from __future__ import annotations

import time
import uuid

from litestar import Request, Response, post
from litestar.background_tasks import BackgroundTask
from litestar.response import Stream

from host.errors import InvalidRequest, decode_body
from host.protocol.chat import AssistantMessage, ChatCompletion, ChatCompletionRequest, ChatUsage, Choice
from host.routes.deps import SchedulerDep
from host.serving.chat import ChatStream, complete
from host.spec import Task


@post("/v1/chat/completions", status_code=200)
async def chat_completions(request: Request, scheduler: SchedulerDep) -> Response[ChatCompletion] | Stream:
    """Generate a chat completion; ``stream: true`` answers with OpenAI chunks over SSE."""
    body = decode_body(await request.body(), ChatCompletionRequest)
    domain = body.to_domain()
    if body.stream and body.n > 1:
        raise InvalidRequest("n > 1 is not supported with stream: true.", param="n")
    lease = await scheduler.acquire(domain.model, Task.CHAT)
    model = lease.model.spec.id
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        stream = await ChatStream.open(lease, domain, include_usage=include_usage)
        # The background task closes a stream whose body is never iterated (client gone first).
        return Stream(
            stream.events(),
            media_type="text/event-stream",
            background=BackgroundTask(stream.close_after_response),
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    choices = await complete(lease, domain, body.n)
    prompt = choices[0].prompt_tokens
    completion = sum(c.completion_tokens for c in choices)
    return Response(
        ChatCompletion(
            id=f"chatcmpl-{uuid.uuid4().hex}",
            created=int(time.time()),
            model=model,
            choices=[
                Choice(
                    index=i, message=AssistantMessage(role="assistant", content=c.text), finish_reason=c.finish_reason
                )
                for i, c in enumerate(choices)
            ],
            usage=ChatUsage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion),
        )
    )
