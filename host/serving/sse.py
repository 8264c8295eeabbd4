"""Server-sent events: every byte of SSE framing plughost writes is written here.

OpenAI's dialects send ``data:`` events and end with ``data: [DONE]``; the Responses and
Anthropic Messages dialects name their events (``event: <type>``) and send no end marker.
A comment (``: waiting for model``) keeps a connection busy while the model is admitted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from litestar.background_tasks import BackgroundTask
from litestar.response import Stream

#: The media type of every streamed answer.
MEDIA_TYPE = "text/event-stream"
#: No caching, and no buffering by nginx-style proxies (tokens must reach the client as they come).
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
#: The end of an OpenAI stream.
DONE = b"data: [DONE]\n\n"
#: A comment sent while the model is being admitted (clients ignore comments; proxies see traffic).
KEEPALIVE = b": waiting for model\n\n"


def data(payload: bytes) -> bytes:
    """One unnamed event carrying ``payload`` (JSON)."""
    return b"data: " + payload + b"\n\n"


def named(name: str, payload: bytes) -> bytes:
    """One event of type ``name`` carrying ``payload`` (JSON)."""
    return b"event: " + name.encode() + b"\ndata: " + payload + b"\n\n"


def response(events: AsyncIterator[bytes], close: Callable[[], Awaitable[None]]) -> Stream:
    """The streamed HTTP response of ``events``; ``close`` also runs after the response, so that a
    body that is never iterated (the client left before the first byte) still releases its work."""
    return Stream(events, media_type=MEDIA_TYPE, headers=HEADERS, background=BackgroundTask(close))
