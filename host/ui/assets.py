"""The dashboard's files (``host/ui/static``), read once into memory, and the headers they are served with."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Any

from litestar import MediaType, Request
from litestar.datastructures import MutableScopeHeaders
from litestar.openapi.plugins import OpenAPIRenderPlugin
from litestar.types import Message, Scope

#: Only this server's own files, no inline script or style, never inside another site's frame.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

_TYPES = {
    ".html": "text/html",  # Litestar adds "; charset=utf-8" to text types
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}
#: ``<meta name="plughost-auth">`` in the page: whether the API wants a key (the page then asks for one
#: before it requests any data, rather than collecting a 401 first).
_AUTH_MARK = "{{auth}}"


def security_headers() -> dict[str, str]:
    """Headers of every dashboard response (the page, its assets, its JSON, the landing page)."""
    return {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Resource-Policy": "same-origin",
        "Cache-Control": "no-cache",
    }


def is_page_path(path: str) -> bool:
    """The landing page, the dashboard and everything below ``/ui/``."""
    return path in ("/", "/ui") or path.startswith("/ui/")


async def add_security_headers(message: Message, scope: Scope) -> None:
    """Litestar ``before_send`` hook: :func:`security_headers` on the answers of :func:`is_page_path`
    (errors included; ``/docs`` keeps its own, since Swagger UI loads its files from a CDN)."""
    if message["type"] == "http.response.start" and is_page_path(scope["path"]):
        headers = MutableScopeHeaders.from_message(message)
        for name, value in security_headers().items():
            headers[name] = value


class LandingPage(OpenAPIRenderPlugin):
    """``GET /``: links to the dashboard and the API. Litestar's OpenAPI router owns ``/`` and serves one
    of its render plugins there, so the landing page is that plugin."""

    def __init__(self, body: bytes) -> None:
        super().__init__(path="/", media_type=MediaType.HTML)
        self.body = body

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        """The page (the schema is at ``/openapi.json``)."""
        return self.body


@dataclass(frozen=True)
class Asset:
    """One file: its bytes, media type and entity tag."""

    body: bytes
    media_type: str
    etag: str


class Assets:
    """The files of ``host/ui/static`` by name; ``index.html`` says whether the API wants a key."""

    def __init__(self, *, auth_required: bool) -> None:
        files: dict[str, Asset] = {}
        for entry in resources.files(__package__).joinpath("static").iterdir():
            suffix = "." + entry.name.rpartition(".")[2]
            if not entry.is_file() or suffix not in _TYPES:
                continue
            body = entry.read_bytes()
            if entry.name == "index.html":
                body = body.replace(_AUTH_MARK.encode(), b"key" if auth_required else b"none")
            files[entry.name] = Asset(body, _TYPES[suffix], f'"{hashlib.sha256(body).hexdigest()[:16]}"')
        self.files = files

    def get(self, name: str) -> Asset | None:
        """The file called ``name`` (no folders), or ``None``."""
        return self.files.get(name)
