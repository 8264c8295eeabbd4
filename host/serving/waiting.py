"""Streams that answer at once even while their model is still being admitted.

A streamed request used to send nothing, not even headers, until its model was resident (up
to ``scheduler.admission_timeout_s``): clients with a 60 s read timeout gave up on a model that
was about to load. :func:`open_stream` gives the opening (acquire a lease, start generating)
:data:`HEADERS_AFTER_S`; if it is not done by then the response starts anyway and sends an SSE
comment (``: waiting for model``) every ``keepalive_s`` until it is. Errors that come after the
headers go out as one SSE error event in the OpenAI envelope, then ``data: [DONE]``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic, TypeVar

import msgspec

from host.contract import request_id
from host.contract.errors import BackendError, PlughostError, for_client, internal_error_message

log = logging.getLogger("plughost.waiting")

T = TypeVar("T")

#: How long a streamed request may stay silent before its headers go out.
HEADERS_AFTER_S = 0.5
#: The SSE comment sent while waiting (clients ignore comments; proxies see traffic).
KEEPALIVE = b": waiting for model\n\n"
DONE = b"data: [DONE]\n\n"


def error_event(error: PlughostError) -> bytes:
    """One SSE event holding ``error``'s OpenAI envelope."""
    return b"data: " + msgspec.json.encode(error.envelope()) + b"\n\n"


class Opening(Generic[T]):
    """An opening that did not finish within :data:`HEADERS_AFTER_S`; iterate :meth:`events`."""

    def __init__(
        self,
        task: asyncio.Future[T],
        stream: Callable[[T], AsyncIterator[bytes]],
        release: Callable[[T], None],
        keepalive_s: float,
    ) -> None:
        self.task, self.stream, self.release, self.keepalive_s = task, stream, release, keepalive_s

    def close(self) -> None:
        """Cancel the opening, or release what it opened (``release`` must be idempotent: the
        stream releases it too when it ends). Synchronous and idempotent; also the response's
        background task, for a body that is never iterated."""
        if not self.task.done():
            self.task.cancel()  # the opening releases its own lease when cancelled
        elif not self.task.cancelled() and self.task.exception() is None:
            self.release(self.task.result())

    async def close_after_response(self) -> None:
        """:meth:`close` as a Litestar background task (async: it must run on the event loop)."""
        self.close()

    async def events(self) -> AsyncIterator[bytes]:
        """Keep-alive comments until the opening is done, then its stream (or an error event)."""
        try:
            while not self.task.done():
                done, _ = await asyncio.wait({self.task}, timeout=self.keepalive_s)
                if not done:
                    yield KEEPALIVE
            try:
                opened = self.task.result()
            except PlughostError as exc:
                yield error_event(for_client(exc))
                yield DONE
                return
            except Exception:
                log.exception("opening a stream failed")  # details in the log; the client gets the request id
                yield error_event(BackendError(internal_error_message(request_id.current.get())))
                yield DONE
                return
            async for chunk in self.stream(opened):
                yield chunk
        finally:
            # The client left while waiting (cancel the opening) or while streaming: release now
            # rather than when the inner stream generator is finalised.
            self.close()


async def open_stream(
    opening: Awaitable[T],
    stream: Callable[[T], AsyncIterator[bytes]],
    release: Callable[[T], None],
    keepalive_s: float,
) -> T | Opening[T]:
    """``release`` must be idempotent (see :meth:`Opening.close`).

    The opened value when ``opening`` finishes quickly (errors raise: JSON responses), else an
    :class:`Opening` whose events start the response at once."""
    task = asyncio.ensure_future(opening)
    try:
        done, _ = await asyncio.wait({task}, timeout=HEADERS_AFTER_S)
    except BaseException:
        task.cancel()
        raise
    if done:
        return task.result()
    return Opening(task, stream, release, keepalive_s)
