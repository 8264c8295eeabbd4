"""``POST /v1/messages`` and ``/v1/messages/count_tokens``: Anthropic's Messages API on the chat models.

Their errors come in Anthropic's envelope (``host.routes.errors.envelope_for``), streamed ones too.
"""

from __future__ import annotations

from litestar import Response, post
from litestar.params import JSONBody
from litestar.response import Stream

from host.protocol.anthropic import (
    AnthropicErrorEnvelope,
    CountTokensRequest,
    CountTokensResponse,
    Message,
    MessagesRequest,
)
from host.routes.deps import ChatDep
from host.server.openapi import MODEL_ERROR_STATUSES, WireBody, error_specs
from host.serving.anthropic_messages import AnthropicMessages, param

_ERRORS = error_specs(AnthropicErrorEnvelope, *MODEL_ERROR_STATUSES)


@post("/v1/messages", status_code=200, dto=WireBody[MessagesRequest], return_dto=None, responses=_ERRORS)
async def messages(data: JSONBody[MessagesRequest], chat: ChatDep) -> Response[Message] | Stream:
    """Answer a conversation (Anthropic Messages API); ``stream: true`` answers with its named SSE events."""
    return await chat.respond(AnthropicMessages(data))


@post(
    "/v1/messages/count_tokens", status_code=200, dto=WireBody[CountTokensRequest], return_dto=None, responses=_ERRORS
)
async def count_tokens(data: JSONBody[CountTokensRequest], chat: ChatDep) -> CountTokensResponse:
    """Count the tokens of a Messages request's prompt (system, messages, tools) as the model reads it."""
    return CountTokensResponse(input_tokens=await chat.prompt_tokens(data.to_domain(), param))
