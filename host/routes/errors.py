"""The one HTTP error edge: every exception a request raises becomes a :class:`PlughostError`,
and every error body is that error's envelope: OpenAI's (``PlughostError.envelope()``), or
Anthropic's on the Messages API's paths (:func:`envelope_for`, which the ASGI edge uses too).

Litestar's own errors (404, 405, 413, validation, any ``HTTPException``) are translated here;
anything else is a bug, logged with its traceback and answered with a generic 500.
"""

from __future__ import annotations

import logging

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import ExceptionHandlersMap

from host.contract import request_id
from host.contract.errors import (
    ErrorEnvelope,
    HttpError,
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    PlughostError,
    client_error,
    for_client,
)
from host.protocol.anthropic import AnthropicErrorEnvelope, anthropic_error
from host.server.openapi import body_error

log = logging.getLogger("plughost")


def from_http_exception(exc: HTTPException) -> PlughostError:
    """The plughost error for one of Litestar's HTTP exceptions (keeps its headers, e.g. ``Allow``)."""
    status, detail = exc.status_code, exc.detail or "HTTP error"
    error: PlughostError
    if isinstance(exc, ValidationException) and (missing := body_error(exc)) is not None:
        error = missing
    elif isinstance(exc, ValidationException) or status == 400:
        error = InvalidRequest(detail)
    elif status == 404:
        error = NotFound(detail)
    elif status == 405:
        error = MethodNotAllowed(detail)
    elif status == 413:
        error = PayloadTooLarge("Request body is larger than the server's limit (server.max_body_bytes).")
    elif status == 500:
        error = InternalError("Internal server error")  # Litestar's details may describe internals
    else:
        error = HttpError(status, detail)
    error.extra_headers = dict(exc.headers or {})
    return error


#: Paths under which errors come in Anthropic's envelope (its Messages API, unknown sub-paths too).
ANTHROPIC_PATH = "/v1/messages"


def envelope_for(path: str, error: PlughostError) -> ErrorEnvelope | AnthropicErrorEnvelope:
    """The body of ``error`` (already as a client may see it) on ``path``: Anthropic's envelope on
    the Messages API's paths, OpenAI's everywhere else."""
    if path == ANTHROPIC_PATH or path.startswith(ANTHROPIC_PATH + "/"):
        return anthropic_error(error, request_id.current.get())
    return error.envelope()


def error_response(error: PlughostError, path: str = "") -> Response[ErrorEnvelope | AnthropicErrorEnvelope]:
    """The HTTP response of ``error`` on ``path``: its status, headers and envelope."""
    return Response(
        envelope_for(path, error), status_code=error.status, headers=error.headers(), media_type=MediaType.JSON
    )


def _plughost_error(request: Request, exc: PlughostError) -> Response[ErrorEnvelope | AnthropicErrorEnvelope]:
    response = error_response(for_client(exc), request.scope["path"])
    # A client's error needs no traceback, and its traceback holds the request's frames (its body,
    # a batcher's request) in a reference cycle through the future that delivered the error: such
    # cycles wait for a full garbage collection, so rejected 25 MB rerank requests piled up in RSS
    # (+59 MB each). Dropping it frees them at once.
    exc.__traceback__ = exc.__context__ = exc.__cause__ = None
    return response


def _http_error(request: Request, exc: HTTPException) -> Response[ErrorEnvelope | AnthropicErrorEnvelope]:
    return error_response(from_http_exception(exc), request.scope["path"])


def _unexpected(request: Request, exc: Exception) -> Response[ErrorEnvelope | AnthropicErrorEnvelope]:
    return error_response(client_error(exc), request.scope["path"])


#: Exception handlers for ``Litestar(exception_handlers=...)``.
EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    PlughostError: _plughost_error,
    HTTPException: _http_error,
    Exception: _unexpected,
}
