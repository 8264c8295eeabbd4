"""The one error vocabulary of plughost.

Everything that can go wrong for a client is a :class:`PlughostError`. The app maps it to
an HTTP status and the OpenAI error envelope in one place (``host.routes.errors``, which also
turns Litestar's own HTTP errors into these), and streaming
routes send the same envelope as an SSE event. Backends raise these too (for example
:class:`InvalidRequest` when a prompt is too long for the model).
"""

from __future__ import annotations

import logging
import re
from typing import Literal, NamedTuple, TypeVar

import msgspec

from host.contract import request_id

T = TypeVar("T")


_log = logging.getLogger("plughost.errors")


class ErrorBody(msgspec.Struct, omit_defaults=False):
    """The inner object of the OpenAI error envelope."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorEnvelope(msgspec.Struct):
    """``{"error": {...}}``: what every failed request receives."""

    error: ErrorBody


class PlughostError(Exception):
    """Base of every client-visible error; subclasses fix the status and codes."""

    status: int = 500
    type: str = "server_error"
    code: str = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.retry_after = retry_after
        self.extra_headers: dict[str, str] = {}  # e.g. ``Allow`` of a 405

    def envelope(self) -> ErrorEnvelope:
        """The OpenAI error envelope for this error."""
        return ErrorEnvelope(ErrorBody(message=self.message, type=self.type, param=self.param, code=self.code))

    def headers(self) -> dict[str, str]:
        """Extra response headers (``Retry-After`` where the client should come back)."""
        if self.retry_after is None:
            return dict(self.extra_headers)
        return {**self.extra_headers, "Retry-After": str(max(1, round(self.retry_after)))}


class InvalidRequest(PlughostError):
    """The request is malformed or a value is out of range (400)."""

    status = 400
    type = "invalid_request_error"
    code = "invalid_value"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message, param=param)
        if code is not None:
            self.code = code


class RequestTooLarge(InvalidRequest):
    """One request asks for more work than a model takes per request (input or output tokens,
    log probabilities): a 400, decided before the work starts; the message names the limit, its
    option and the request's numbers."""

    code = "request_too_large"


class WrongTask(InvalidRequest):
    """The model exists but serves another task than the route's (400)."""

    code = "model_task_mismatch"


class ModelNotFound(PlughostError):
    """No declared model has this name (404)."""

    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class NotFound(PlughostError):
    """No such route or resource (404)."""

    status = 404
    type = "invalid_request_error"
    code = "not_found"


class MethodNotAllowed(PlughostError):
    """The route exists but not with this HTTP method (405)."""

    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class PayloadTooLarge(PlughostError):
    """The request body is over the configured limit (413)."""

    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class HttpError(PlughostError):
    """Any other HTTP error status (for example one raised by the web framework)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.type = _HTTP_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        self.code = f"http_{status}"


_HTTP_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}


class Conflict(PlughostError):
    """The operation conflicts with the model's state, e.g. unloading a busy model (409)."""

    status = 409
    type = "invalid_request_error"
    code = "conflict"


class QueueFull(PlughostError):
    """Too many requests are already waiting for this model (429, with Retry-After)."""

    status = 429
    type = "rate_limit_error"
    code = "queue_full"


class AdmissionTimeout(PlughostError):
    """The model could not be admitted in time; the message says what holds the memory (503)."""

    status = 503
    type = "server_error"
    code = "admission_timeout"


class InsufficientMemory(PlughostError):
    """No placement of the model can ever fit the memory budgets (503, no retry)."""

    status = 503
    type = "server_error"
    code = "insufficient_memory"


class ModelLoadFailed(PlughostError):
    """Loading the model failed; the message carries the reason. A later request retries (503)."""

    status = 503
    type = "server_error"
    code = "model_load_failed"


class WeightsNotReady(PlughostError):
    """The model's weights are not on this machine yet (503, with ``Retry-After``): code
    ``model_not_downloaded``, or ``model_downloading`` while a pull runs. The message names the
    model, the progress and the command that fetches them."""

    status = 503
    type = "server_error"
    code = "model_not_downloaded"

    def __init__(self, message: str, *, code: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after=retry_after)
        if code is not None:
            self.code = code


class ShuttingDown(PlughostError):
    """The host is stopping and accepts no new work (503)."""

    status = 503
    type = "server_error"
    code = "shutting_down"


class EngineUnavailable(PlughostError):
    """A model's engine process stopped (crashed, or could not be restarted); its running requests
    fail with this and the next request starts it again (503, retry)."""

    status = 503
    type = "server_error"
    code = "engine_unavailable"


class Unauthorized(PlughostError):
    """No API key, or not one of ``server.api_keys`` (401)."""

    status = 401
    type = "authentication_error"
    code = "invalid_api_key"

    def headers(self) -> dict[str, str]:
        """``WWW-Authenticate``, as RFC 6750 asks of a Bearer-protected resource."""
        return {**super().headers(), "WWW-Authenticate": "Bearer"}


class Forbidden(PlughostError):
    """A cross-site ``Origin`` or a ``Host`` this server does not answer to (403)."""

    status = 403
    type = "permission_error"
    code = "forbidden"


class UnsupportedMediaType(PlughostError):
    """The body is not sent as ``application/json`` (415)."""

    status = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"


class RequestTimeout(PlughostError):
    """The client did not send its whole body in time (408)."""

    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class BackendError(PlughostError):
    """A backend failed while serving a request that was valid (500)."""

    status = 500
    type = "server_error"
    code = "backend_error"


class InternalError(PlughostError):
    """An unexpected exception (a bug); its details stay in the log, not in the response (500)."""


class MsgspecProblem(NamedTuple):
    """A msgspec decode/validation error taken apart (the one parser of msgspec's messages)."""

    message: str  #: msgspec's message without its `` - at `$...` `` suffix
    path: str  #: dotted path of the bad value, ``""`` at the root; ends with the field for ``field``
    field: Literal["missing", "unknown"] | None  #: a missing or unknown object field


_LOCATION = re.compile(r"^(.*) - at `\$\.?([^`]*)`$", re.DOTALL)
_FIELD = re.compile(r"Object (missing required|contains unknown) field `([^`]*)`")


def parse_msgspec_error(exc: msgspec.ValidationError | msgspec.DecodeError) -> MsgspecProblem:
    """Split a msgspec error into message, path and field problem.

    msgspec reports a missing or unknown field at its parent's path; the path returned here
    names the field itself, which is what a client or a config author needs.
    """
    text = str(exc)
    match = _LOCATION.match(text)
    message, path = match.groups() if match else (text, "")
    field = _FIELD.fullmatch(message)
    if field is None:
        return MsgspecProblem(message, path, None)
    path = f"{path}.{field.group(2)}" if path else field.group(2)
    return MsgspecProblem(message, path, "missing" if field.group(1) == "missing required" else "unknown")


def from_validation_error(exc: msgspec.ValidationError | msgspec.DecodeError) -> InvalidRequest:
    """Turn a msgspec decode/validation error into a 400 naming the offending field."""
    if not isinstance(exc, msgspec.ValidationError):
        return InvalidRequest(f"Request body is not valid JSON: {exc}", code="invalid_json")
    problem = parse_msgspec_error(exc)
    param = problem.path or None
    if problem.field == "missing":
        return InvalidRequest(f"Missing required field '{param}'.", param=param)
    message = f"Invalid value for '{param}': {exc}" if param else f"Invalid request body: {exc}"
    return InvalidRequest(message, param=param)


def decode_body(body: bytes, type_: type[T]) -> T:
    """Decode a JSON request body into ``type_``, raising :class:`InvalidRequest` on failure.

    A number with a zero fraction (``2.0``) is an integer in JSON schema, so an integer field takes
    it too: a body that fails validation is decoded once more with such numbers made ints.
    """
    if not body.strip():
        raise InvalidRequest("Request body is empty; expected a JSON object.", code="invalid_json")
    try:
        try:
            return msgspec.json.decode(body, type=type_)
        except msgspec.ValidationError as invalid:
            try:
                return msgspec.convert(_integral(msgspec.json.decode(body)), type_)
            except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
                raise invalid from None  # the first answer names the problem
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise from_validation_error(exc) from None
    except UnicodeDecodeError:
        raise InvalidRequest("Request body is not valid UTF-8.", code="invalid_json") from None
    except RecursionError:
        # msgspec recurses while skipping an unknown field's value; hostile nesting ends here.
        raise InvalidRequest("Request body is nested too deeply.", code="invalid_json") from None


def _integral(value: object) -> object:
    """``value`` (decoded JSON) with every float that has no fraction turned into an int."""
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, list):
        return [_integral(v) for v in value]
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    return value


def internal_error_message(request_id: str | None) -> str:
    """What a client sees of an unexpected failure: no exception class, no path; the log has them."""
    suffix = f" (request id {request_id})" if request_id else ""
    return f"Internal server error{suffix}; the server log has the details."


def client_error(exc: BaseException) -> PlughostError:
    """What a client is told of any exception, the same in a JSON body and in a streamed error event:
    a :class:`PlughostError` as :func:`for_client` shows it; anything else is a bug, logged here with
    its traceback and answered with :class:`InternalError` naming the request id."""
    if isinstance(exc, PlughostError):
        return for_client(exc)
    _log.error("unexpected error", exc_info=exc)
    return InternalError(internal_error_message(request_id.current.get()))


def for_client(error: PlughostError) -> PlughostError:
    """``error`` as a client may see it: a :class:`BackendError` (a failure inside a backend, whose
    message may name exceptions, files or devices) is logged and replaced by the generic message
    with the request id; every other error is meant for the client and passes unchanged."""
    if not isinstance(error, BackendError):
        return error
    rid = request_id.current.get()
    if rid is not None and rid in error.message:
        return error  # already written for the client (see host.toolkit.batched)
    _log.error("backend error: %s", error.message)
    return BackendError(internal_error_message(rid))
