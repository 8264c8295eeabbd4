"""The OpenAPI description Litestar builds from the routes' msgspec Structs.

Served at ``/openapi.json`` with a Swagger UI page at ``/docs``. Request bodies are declared as
the handlers' ``data`` parameter through :class:`WireBody`, a Litestar DTO that documents the
Struct but decodes with :func:`host.contract.errors.decode_body`, so that every bad body keeps plughost's
own 400s (the offending field in ``param``, invalid UTF-8, hostile nesting) rather than Litestar's
generic validation error.

A request body's schema is msgspec's own JSON schema of the Struct that decodes it (inlined, so it
needs no components of its own), plus the Struct's :data:`SCHEMA_RULES`: the cross-field rules
(``if``/``then``) its ``to_domain`` enforces. Litestar's translation of msgspec constraints drops
every bound that is zero (``top_p > 0`` documented no minimum), so clients generating code from the
schema, and schemathesis, saw requests as valid that the server rightly refused.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, Generic, TypeVar

import msgspec
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
        """The Struct's own JSON schema (:func:`request_schema`)."""
        return RawSchema(request_schema(cls.model_type))

    def decode_bytes(self, value: bytes) -> Any:
        """Decode the body with plughost's errors."""
        return decode_body(value, self.model_type)

    def decode_builtins(self, value: dict[str, Any]) -> Any:
        """Not reached: the routes take JSON bodies only."""
        raise NotImplementedError


#: Name of the class attribute (a ``ClassVar`` dict) of a request Struct whose keys are added to its
#: schema: the cross-field rules of its ``to_domain``, as JSON schema (``allOf`` of ``if``/``then``);
#: its ``properties`` replace those of the fields they name (what a field's type cannot say).
SCHEMA_RULES = "schema_rules"
_REF = "#/components/schemas/"


class RawSchema(Schema):
    """A schema given as a ready JSON-schema mapping (Litestar renders it as is)."""

    def __init__(self, raw: dict[str, Any]) -> None:
        super().__init__()
        self.raw = raw

    def to_schema(self) -> dict[str, Any]:
        """The mapping itself."""
        return self.raw


def request_schema(struct: type) -> dict[str, Any]:
    """msgspec's JSON schema of ``struct`` with its :data:`SCHEMA_RULES`, every ``$ref`` inlined."""
    (root,), components = msgspec.json.schema_components([struct], ref_template=_REF + "{name}")
    name = root["$ref"].removeprefix(_REF)
    rules = dict(getattr(struct, SCHEMA_RULES, {}))
    properties = {**components[name].get("properties", {}), **rules.pop("properties", {})}
    components[name] = {**components[name], **rules, "properties": properties}
    return _inline(root, components, ())


def _inline(node: Any, components: dict[str, Any], seen: tuple[str, ...]) -> Any:
    if isinstance(node, list):
        return [_inline(item, components, seen) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith(_REF):
        name = ref.removeprefix(_REF)
        if name in seen:
            raise ValueError(f"request schema {seen[0]} is recursive through {name}; it cannot be inlined")
        return _inline(components[name], components, (*seen, name))
    # The discriminator's mapping names components that inlining removes; the tags stay as enums.
    return {key: _inline(value, components, seen) for key, value in node.items() if key != "discriminator"}


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
