"""``POST /v1/completions``: raw-prompt completions on the chat models' engines, plain and streamed."""

from __future__ import annotations

from litestar import Response, post
from litestar.params import JSONBody
from litestar.response import Stream

from host.protocol.completions import Completion, CompletionRequest
from host.routes.deps import ChatDep
from host.server.openapi import MODEL_ERRORS, WireBody
from host.serving.openai_completions import OpenAICompletions


@post("/v1/completions", status_code=200, dto=WireBody[CompletionRequest], return_dto=None, responses=MODEL_ERRORS)
async def completions(data: JSONBody[CompletionRequest], chat: ChatDep) -> Response[Completion] | Stream:
    """Complete each prompt ``n`` times; ``stream: true`` answers with OpenAI chunks over SSE."""
    return await chat.respond(OpenAICompletions(data))
