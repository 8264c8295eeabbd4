"""``POST /v1/chat/completions``, plain and streamed (SSE)."""

from __future__ import annotations

from litestar import Response, post
from litestar.params import JSONBody
from litestar.response import Stream

from host.protocol.chat import ChatCompletion, ChatCompletionRequest
from host.routes.deps import ChatDep
from host.server.openapi import MODEL_ERRORS, WireBody
from host.serving.openai_chat import OpenAIChat


@post(
    "/v1/chat/completions",
    status_code=200,
    dto=WireBody[ChatCompletionRequest],
    return_dto=None,
    responses=MODEL_ERRORS,
)
async def chat_completions(data: JSONBody[ChatCompletionRequest], chat: ChatDep) -> Response[ChatCompletion] | Stream:
    """Generate a chat completion; ``stream: true`` answers with OpenAI chunks over SSE."""
    return await chat.respond(OpenAIChat(data))
