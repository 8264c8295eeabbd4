"""Cancel a request's handler when its client goes away before the response starts.

Litestar's ``Stream`` already stops a streamed body when the client disconnects, but a handler
that is still working (a non-streamed chat completion generating, a request waiting for its
model) would run to the end for nobody: abandoned clients would keep the engine busy.

:class:`DisconnectGuard` is an ASGI middleware. Once the handler has read the whole request
body, the guard owns the server's ``receive`` and waits for ``http.disconnect``. When it comes
before the response has started, the handler's task is cancelled: its ``finally`` blocks
release leases and close backend generators, which cancels the engine's sequences at once.
After the response has started, the disconnect is handed to the app (``Stream`` stops itself).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send

log = logging.getLogger("plughost.disconnect")


class DisconnectGuard:
    """ASGI middleware: a client that disconnects before its response starts cancels the handler."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await _Guarded(self.app, scope, receive, send).run()


class _Guarded:
    """One guarded request (event-loop thread only)."""

    def __init__(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        self.app, self.scope, self.raw_receive, self.raw_send = app, scope, receive, send
        self.body_done = False
        self.response_started = False
        self.disconnected = asyncio.Event()
        self.cancelled_by_guard = False
        self.task: asyncio.Task[Any] | None = None
        self.watcher: asyncio.Task[None] | None = None

    async def run(self) -> None:
        self.task = asyncio.ensure_future(self.app(self.scope, self.receive, self.send))
        try:
            await self.task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not self.cancelled_by_guard or (current is not None and current.cancelling()):
                raise  # the server cancelled us (shutdown): not ours to swallow
            log.info(
                "client disconnected before the response: %s %s cancelled",
                self.scope.get("method"),
                self.scope.get("path"),
            )
        finally:
            if self.watcher is not None:
                self.watcher.cancel()

    async def receive(self) -> ReceiveMessage:
        if not self.body_done:
            message = await self.raw_receive()
            if message["type"] == "http.disconnect":
                self.body_done = True
                self.disconnected.set()
            elif not message.get("more_body", False):
                self.body_done = True
                self.watcher = asyncio.ensure_future(self._watch())
            return message
        await self.disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.response_started = True
        await self.raw_send(message)

    async def _watch(self) -> None:
        while True:
            message = await self.raw_receive()
            if message["type"] == "http.disconnect":
                break
        self.disconnected.set()
        if not self.response_started and self.task is not None and not self.task.done():
            self.cancelled_by_guard = True
            self.task.cancel()
