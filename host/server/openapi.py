"""The OpenAPI description Litestar builds from the routes' msgspec Structs.

Served at ``/openapi.json`` with a Swagger UI page at ``/docs``. Request bodies are declared as
the handlers' ``data`` parameter through :class:`WireBody`, a Litestar DTO that documents the
Struct but decodes with :func:`host.contract.errors.decode_body`, so that every bad body keeps plughost's
own 400s (the offending field in ``param``, invalid UTF-8, hostile nesting) rather than Litestar's
generic validation error.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, Generic, TypeVar

from litestar.dto import AbstractDTO
from litestar.dto.data_structures import DTOFieldDefinition
from litestar.exceptions import ValidationException
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.plugins import JsonRenderPlugin, OpenAPIRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, Reference, Schema, SecurityScheme
from litestar.typing import FieldDefinition

from host import __version__
from host.contract.errors import ErrorEnvelope, InvalidRequest, decode_body

T = TypeVar("T")


def openapi_config(root: OpenAPIRenderPlugin | None = None) -> OpenAPIConfig:
    """The OpenAPI description at ``/openapi.json`` with Swagger UI at ``/docs``. Litestar serves one
    of the render plugins at ``/`` as well: ``root`` (the landing page of :mod:`host.ui`) or else
    the schema itself."""
    plugins: list[OpenAPIRenderPlugin] = [JsonRenderPlugin(path="/openapi.json"), SwaggerRenderPlugin(path="/docs")]
    return OpenAPIConfig(
        title="plughost",
        version=__version__,
        description="A self-hosted, OpenAI-compatible inference host (chat, embeddings, rerank).",
        path="/",
        render_plugins=[*plugins, root] if root is not None else plugins,
        use_handler_docstrings=True,
        # Required only when server.api_keys (or PLUGHOST_API_KEY) is set; /health never needs it.
        components=Components(
            security_schemes={
                "apiKey": SecurityScheme(type="http", scheme="bearer", description="server.api_keys"),
                "xApiKey": SecurityScheme(
                    type="apiKey", name="x-api-key", security_scheme_in="header", description="server.api_keys"
                ),
            }
        ),
        security=[{"apiKey": []}, {"xApiKey": []}, {}],
    )


#: The description of an app without the dashboard (``server.ui: false``).
OPENAPI = openapi_config()


class WireBody(AbstractDTO[T], Generic[T]):
    """``dto=WireBody[SomeStruct]``: the body documented as ``SomeStruct``, decoded by ``decode_body``."""

    @classmethod
    def generate_field_definitions(cls, model_type: type[Any]) -> Generator[DTOFieldDefinition, None, None]:
        """Unused: this DTO does not transform fields."""
        yield from ()

    @classmethod
    def detect_nested_field(cls, field_definition: FieldDefinition) -> bool:
        """Unused: this DTO does not transform fields."""
        return False

    @classmethod
    def create_for_field_definition(
        cls, field_definition: FieldDefinition, handler_id: str, backend_cls: Any = None
    ) -> None:
        """No codec backend: decoding is :func:`decode_body`."""

    @classmethod
    def create_openapi_schema(
        cls, field_definition: FieldDefinition, handler_id: str, schema_creator: Any
    ) -> Reference | Schema:
        """The Struct's schema, as Litestar would build it for a plain ``data: Struct`` parameter."""
        return schema_creator.for_field_definition(
            FieldDefinition.from_annotation(cls.model_type, kwarg_definition=field_definition.kwarg_definition)
        )

    def decode_bytes(self, value: bytes) -> Any:
        """Decode the body with plughost's errors."""
        return decode_body(value, self.model_type)

    def decode_builtins(self, value: dict[str, Any]) -> Any:
        """Not reached: the routes take JSON bodies only."""
        raise NotImplementedError


def body_error(exc: ValidationException) -> InvalidRequest | None:
    """Litestar's own check that a declared body is present (it runs before :class:`WireBody`), as
    plughost's 400; ``None`` for any other validation failure."""
    extra = exc.extra if isinstance(exc.extra, list) else []
    if any(isinstance(e, dict) and e.get("key") == "data" for e in extra):
        return InvalidRequest("Request body is empty; expected a JSON object.", code="invalid_json")
    return None


def error_specs(envelope: type[Any], *statuses: int) -> dict[int, ResponseSpec]:
    """The documented error answers ``statuses`` of a route whose errors come in ``envelope``."""
    return {
        status: ResponseSpec(data_container=envelope, description=_ERROR_TEXT[status], generate_examples=False)
        for status in statuses
    }


def _errors(*statuses: int) -> dict[int, ResponseSpec]:
    return error_specs(ErrorEnvelope, *statuses)


_ERROR_TEXT = {
    400: "Invalid request (the field is named in `error.param`)",
    401: "Missing or invalid API key",
    403: "Cross-site Origin or unknown Host",
    404: "No such model or route",
    408: "The body did not arrive in time",
    409: "The model is busy",
    413: "The body is over server.max_body_bytes",
    415: "The body is not application/json",
    429: "Too many requests are waiting (Retry-After)",
    500: "Unexpected failure (the message carries the request id)",
    503: "The model cannot be admitted or loaded now",
}
#: The error answers every route may give, documented with the OpenAI error envelope.
COMMON_ERRORS = _errors(401, 403, 404, 500)
#: The statuses of the routes that take a body and run a model.
MODEL_ERROR_STATUSES = (400, 401, 403, 404, 408, 413, 415, 429, 500, 503)
#: ... and those answers, in the OpenAI error envelope.
MODEL_ERRORS = _errors(*MODEL_ERROR_STATUSES)
#: ... and those of the load/unload/pin/pull route (400: a bad ``wait_s``, nothing to pull).
MANAGE_ERRORS = _errors(400, 401, 403, 404, 409, 429, 500, 503)
