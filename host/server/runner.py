"""Serve an app with uvicorn under plughost's connection limits.

uvicorn closes idle keep-alive connections (``timeout_keep_alive``) but has no deadline for a
request's headers: a client that connects and sends nothing, or half a request line, holds its
connection (and a file descriptor) forever. :class:`HeaderTimeoutH11Protocol` adds that deadline:
the request line and headers must be complete within ``server.header_timeout_s`` of the connection
opening or of the previous response's end; otherwise the connection is closed. The body's deadline
is enforced in ASGI (:mod:`host.server.edge`), where the request can still be answered with a 408.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from host.contract.config import ServerConfig

#: Largest request line + headers accepted (h11 answers 400 beyond it); uvicorn's default is 16 KiB.
MAX_HEADER_BYTES = 64 * 1024


class HeaderTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus a deadline on receiving a request's headers."""

    header_timeout_s: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the header clock when the connection opens."""
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._arm_header_timer()

    def handle_events(self) -> None:
        """Stop the clock once a request's headers have arrived (a new cycle has begun)."""
        before = self.cycle
        super().handle_events()
        if self.cycle is not before:
            self._cancel_header_timer()

    def on_response_complete(self) -> None:
        """Restart the clock for the next request on this keep-alive connection."""
        self._arm_header_timer()
        super().on_response_complete()  # may begin a pipelined request, which cancels the clock

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the clock with the connection."""
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        if not self.transport.is_closing():
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self.logger.info("closing a connection that sent no complete request within %.0fs", self.header_timeout_s)
            self.transport.close()


def protocol_for(server: ServerConfig) -> type[HeaderTimeoutH11Protocol]:
    """The protocol class with this config's header deadline."""
    return type(
        "PlughostH11Protocol", (HeaderTimeoutH11Protocol,), {"header_timeout_s": float(server.header_timeout_s)}
    )


def uvicorn_config(app: Any, server: ServerConfig, **overrides: Any) -> uvicorn.Config:
    """uvicorn's config for ``app`` with ``server``'s bind address and connection limits."""
    options: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "http": protocol_for(server),
        "timeout_keep_alive": max(1, round(server.keep_alive_timeout_s)),
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
        "lifespan": "on",
        **overrides,
    }
    return uvicorn.Config(app, **options)
