"""``POST /v1/responses`` (OpenAI's Responses API, plain and streamed) and the stored responses:
``GET`` and ``DELETE /v1/responses/{id}``."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, delete, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody
from litestar.response import Stream

from host.contract.errors import NotFound
from host.protocol.responses import DeletedResponse, ResponsesRequest
from host.protocol.responses import Response as ResponseObject
from host.routes.deps import ChatDep, ResponsesDep
from host.server.openapi import COMMON_ERRORS, MODEL_ERRORS, WireBody
from host.serving.openai_responses import OpenAIResponses
from host.serving.response_store import owner_of

#: The JSON answer's schema (the annotation's union with ``Stream`` would leave it undocumented).
_CREATED = ResponseSpec(
    data_container=ResponseObject,
    description="The response; with `stream: true`, its events as text/event-stream instead",
    generate_examples=False,
)


@post(
    "/v1/responses",
    status_code=200,
    dto=WireBody[ResponsesRequest],
    return_dto=None,
    responses={**MODEL_ERRORS, 200: _CREATED},
)
async def create_response(
    data: JSONBody[ResponsesRequest], request: Request[Any, Any, Any], chat: ChatDep, responses: ResponsesDep
) -> Response[ResponseObject] | Stream:
    """Generate a response; ``stream: true`` answers with the Responses API's events over SSE."""
    return await chat.respond(OpenAIResponses(data, responses, owner_of(request.headers)))


@get("/v1/responses/{response_id:str}", responses=COMMON_ERRORS)
async def get_response(
    response_id: FromPath[str], request: Request[Any, Any, Any], responses: ResponsesDep
) -> ResponseObject:
    """A stored response (404 for another API key's, and once it has expired or was deleted)."""
    stored = responses.get(response_id, owner_of(request.headers))
    if stored is None:
        raise NotFound(f"No response with id '{response_id}' found.", param="response_id")
    return stored.response


@delete("/v1/responses/{response_id:str}", status_code=200, responses=COMMON_ERRORS)
async def delete_response(
    response_id: FromPath[str], request: Request[Any, Any, Any], responses: ResponsesDep
) -> DeletedResponse:
    """Forget a stored response."""
    if not responses.delete(response_id, owner_of(request.headers)):
        raise NotFound(f"No response with id '{response_id}' found.", param="response_id")
    return DeletedResponse(id=response_id)
