"""The HTTP edge: an ASGI layer every HTTP request passes before routing (404s included).

In order, for each request it

1. takes or makes the request id (:mod:`host.contract.request_id`), sets it for the request's log lines
   and adds ``X-Request-Id`` to the response (errors and streams too);
2. applies :class:`~host.server.security.EdgePolicy` (Host, Origin, API key, content type), answering a
   refusal itself in the error envelope of the path (``envelope``: OpenAI's, Anthropic's on its paths);
3. bounds the time the client may take to send its body (``server.body_timeout_s``: 408);
4. counts the request and its latency per route template and status (:mod:`host.metrics`).

``create_app`` installs it around Litestar's own ASGI handler, inside which CORS, routing and the
exception handlers run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, cast

import msgspec
from litestar.types import ASGIApp, HTTPScope, Message, Receive, Scope, Send

from host.contract import request_id
from host.contract.errors import PlughostError, RequestTimeout
from host.metrics import Metrics
from host.server.security import EdgePolicy

#: The error body for a path: ``(path, error) -> Struct`` (``host.routes.errors.envelope_for``).
Envelope = Callable[[str, PlughostError], Any]


def _openai_envelope(_: str, error: PlughostError) -> Any:
    return error.envelope()


class Edge:
    """Wraps an ASGI app; see the module docstring."""

    def __init__(
        self,
        app: ASGIApp,
        policy: EdgePolicy,
        metrics: Metrics | None,
        body_timeout_s: float,
        envelope: Envelope = _openai_envelope,
    ) -> None:
        self.app = app
        self.policy = policy
        self.metrics = metrics
        self.body_timeout_s = body_timeout_s
        self.envelope = envelope

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = cast("HTTPScope", scope)["method"], scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        rid = request_id.accept(headers.get("x-request-id"))
        token = request_id.current.set(rid)
        started = time.perf_counter()
        status = 500  # what the client sees if the app dies before it answers

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *[(k, v) for k, v in message.get("headers", ()) if k.lower() != b"x-request-id"],
                    (b"x-request-id", rid.encode()),
                ]
            await send(message)

        try:
            refusal = self.policy.check(method, path, headers)
            if refusal is not None:
                await _send_error(send_with_id, refusal, self.envelope(path, refusal))
                return
            await self.app(scope, self._bounded(receive), send_with_id)
        finally:
            if self.metrics is not None:
                route = scope.get("path_template") or "unmatched"
                self.metrics.request(method, route, status, time.perf_counter() - started)
            request_id.current.reset(token)

    def _bounded(self, receive: Receive) -> Receive:
        """``receive`` with a deadline on the body: it must be complete ``body_timeout_s`` after the
        app starts reading it. Later calls (a stream waiting for the disconnect) are not bounded."""
        deadline: float | None = None
        done = False

        async def bounded() -> Any:
            nonlocal deadline, done
            if done:
                return await receive()
            loop = asyncio.get_running_loop()
            if deadline is None:
                deadline = loop.time() + self.body_timeout_s
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                done = True
                raise RequestTimeout(
                    f"The request body did not arrive within {self.body_timeout_s:g}s (server.body_timeout_s)."
                ) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                done = True
            return message

        return bounded


async def _send_error(send: Send, error: PlughostError, envelope: Any) -> None:
    body = msgspec.json.encode(envelope)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers().items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
