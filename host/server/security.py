"""Who may talk to the server: API keys, allowed ``Host`` names, cross-site ``Origin``s, body types.

Pure checks over a request's method, path and headers; :mod:`host.server.edge` applies them to every
request before routing and answers a refusal in the error envelope of the path (OpenAI's, or
Anthropic's on its Messages API).

- **API keys** (``server.api_keys`` and ``PLUGHOST_API_KEY``): when any is set, every route but
  :data:`OPEN_PATHS` and the dashboard's files needs ``Authorization: Bearer <key>`` or
  ``x-api-key: <key>`` (Anthropic's clients send that one), compared in constant time.
- **Host** (DNS rebinding): on a loopback bind only loopback names are answered, unless
  ``server.allowed_hosts`` says otherwise; a page on ``evil.example`` that rebinds its name to
  127.0.0.1 sends ``Host: evil.example`` and is refused.
- **Origin** (CSRF from a web page): browsers send ``Origin`` with every cross-site request. It must
  be the server's own origin or one of ``server.cors_origins``.
- **Content type**: a body is JSON only when sent as ``application/json`` (or ``+json``). Without an
  ``Origin`` header (curl, scripts, SDKs: not a browser) a missing type and curl ``-d``'s
  ``application/x-www-form-urlencoded`` are read as JSON too, so ``curl -d '{...}'`` keeps working;
  a page can never send those without ``Origin``. ``text/plain`` and multipart are always refused.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from litestar.config.cors import CORSConfig

from host.contract.config import ServerConfig
from host.contract.errors import Forbidden, PlughostError, Unauthorized, UnsupportedMediaType

API_KEY_ENV = "PLUGHOST_API_KEY"
#: Paths answered without an API key: liveness probes, the API's own description, and the pages
#: that hold no data (the landing page, the dashboard, which asks for the key itself).
OPEN_PATHS = frozenset({"/health", "/openapi.json", "/docs", "/", "/ui", "/ui/"})
#: Folders of files answered without a key (one plain file name below them, never a subfolder).
OPEN_FOLDERS = ("/ui/assets/",)
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_CURL_TYPES = frozenset({"", "application/x-www-form-urlencoded"})


def is_loopback(host: str) -> bool:
    """Whether a bind address only accepts connections from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The name part of a ``Host`` header: port and IPv6 brackets removed, lower case."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


@dataclass(frozen=True)
class EdgePolicy:
    """The checks' settings, resolved once from the config and the environment."""

    api_keys: tuple[bytes, ...] = ()
    allowed_hosts: frozenset[str] | None = None  # None: any Host
    cors_origins: frozenset[str] = frozenset()

    @classmethod
    def from_config(cls, server: ServerConfig, environ: Mapping[str, str] = os.environ) -> EdgePolicy:
        """``server.*`` keys plus ``PLUGHOST_API_KEY``."""
        keys = [k for k in [*server.api_keys, environ.get(API_KEY_ENV, "")] if k]
        hosts: frozenset[str] | None
        if server.allowed_hosts is None:
            hosts = LOOPBACK_NAMES if is_loopback(server.host) else None
        elif "*" in server.allowed_hosts:
            hosts = None
        else:
            hosts = frozenset(host_name(h) for h in server.allowed_hosts) | LOOPBACK_NAMES
        origins = frozenset(o.rstrip("/").lower() for o in server.cors_origins)
        return cls(api_keys=tuple(k.encode() for k in keys), allowed_hosts=hosts, cors_origins=origins)

    def origin_allowed(self, origin: str, host: str) -> bool:
        """The page's origin is this server itself or one of ``server.cors_origins``."""
        origin = origin.rstrip("/").lower()
        if origin in self.cors_origins or "*" in self.cors_origins:
            return True
        return urlsplit(origin).netloc == host.strip().lower() and origin != "null"

    def check(self, method: str, path: str, headers: Mapping[str, str]) -> PlughostError | None:
        """The refusal for this request, or ``None`` when it may proceed. ``headers``: lower-case names."""
        host = headers.get("host", "")
        if self.allowed_hosts is not None and host_name(host) not in self.allowed_hosts:
            return Forbidden(
                f"This server does not answer to the host name {host_name(host)!r}; "
                "add it to server.allowed_hosts to allow it.",
                param="Host",
            )
        origin = headers.get("origin")
        if origin is not None and not self.origin_allowed(origin, host):
            return Forbidden(
                f"Cross-site requests from {origin!r} are not allowed; add it to server.cors_origins.", param="Origin"
            )
        if method == "OPTIONS" and origin is not None:
            return None  # a CORS preflight carries no credentials; the CORS layer answers it
        if self.api_keys and not is_open(path) and not self._key_ok(headers):
            return Unauthorized(
                "Missing or invalid API key: send 'Authorization: Bearer <key>' (or 'x-api-key: <key>') "
                "with one of the server's keys."
            )
        if method in _BODY_METHODS and _has_body(headers):
            media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            json = media == "application/json" or media.endswith("+json")
            if not json and not (origin is None and media in _CURL_TYPES):
                return UnsupportedMediaType(
                    f"Send the body as JSON with 'Content-Type: application/json' (got {media or 'none'!r}).",
                    param="Content-Type",
                )
        return None

    def _key_ok(self, headers: Mapping[str, str]) -> bool:
        """A Bearer token or an ``x-api-key`` that is one of the keys (either header may carry it)."""
        scheme, _, token = headers.get("authorization", "").strip().partition(" ")
        given = [token.strip().encode()] if scheme.lower() == "bearer" else []
        if "x-api-key" in headers:
            given.append(headers["x-api-key"].strip().encode())
        # Every key is compared (no early exit), each in constant time.
        return any([hmac.compare_digest(g, key) for g in given for key in self.api_keys])


def is_open(path: str) -> bool:
    """Whether ``path`` is answered without an API key (:data:`OPEN_PATHS`, :data:`OPEN_FOLDERS`)."""
    if path in OPEN_PATHS:
        return True
    for folder in OPEN_FOLDERS:
        name = path[len(folder) :]
        if path.startswith(folder) and name and "/" not in name and not name.startswith("."):
            return True
    return False


def _has_body(headers: Mapping[str, str]) -> bool:
    length = headers.get("content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return "transfer-encoding" in headers


def cors_config(server: ServerConfig) -> CORSConfig | None:
    """Litestar's CORS layer for ``server.cors_origins`` (none: no CORS headers at all)."""
    if not server.cors_origins:
        return None
    return CORSConfig(
        allow_origins=list(server.cors_origins),
        allow_methods=["GET", "POST", "OPTIONS"],
        # x-api-key and anthropic-*: what Anthropic's SDK sends from a browser page.
        allow_headers=[
            "Authorization",
            "Content-Type",
            "X-Request-Id",
            "x-api-key",
            "anthropic-version",
            "anthropic-beta",
            "anthropic-dangerous-direct-browser-access",
        ],
        expose_headers=["X-Request-Id", "Retry-After"],
        allow_credentials=False,
    )
