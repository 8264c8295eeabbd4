"""HTTP helpers for tests of plughost and its plugins: route paths, error envelope and SSE checks, a
client that leaves."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from types import EllipsisType
from typing import Any

import httpx

CHAT, EMBED, RERANK = "/v1/chat/completions", "/v1/embeddings", "/v1/rerank"


def assert_error(
    response: httpx.Response, status: int, *, code: str | None = None, param: str | EllipsisType | None = ...
) -> dict[str, Any]:
    """Check OpenAI's error envelope ``{"error": {"message", "type", "param", "code"}}`` with a
    string ``code`` (and ``code``/``param`` when given); returns the inner error object."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    assert isinstance(error["code"], str) and error["code"]
    if code is not None:
        assert error["code"] == code
    if param is not ...:
        assert error["param"] == param
    return error


def asgi_post_scope(app: Any, path: str) -> dict[str, Any]:
    """An ASGI ``http`` scope for a JSON ``POST`` to ``path``: tests that drive the app's ASGI
    callable directly, to play a client that leaves at a chosen moment."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        # A Host the edge answers to (loopback), as every HTTP/1.1 client sends.
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "app": app,
        "state": {},
    }


async def post_and_leave(app: Any, path: str, body: bytes, *, after: int, stall: bool = False) -> list[bytes]:
    """POST ``body`` to ``app``'s ASGI callable as a client that hangs up after ``after`` body
    chunks: while the server waits for the next one, or (``stall``) while it is stuck sending one
    (a client that stopped reading, then hung up). Returns the chunks it read."""
    chunks: list[bytes] = []
    left = asyncio.Event()
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": body, "more_body": False}
        await left.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            chunks.append(message["body"])
            if len(chunks) == after:
                left.set()
                if stall:
                    await asyncio.Event().wait()  # never returns: cancelled by the disconnect

    await app(asgi_post_scope(app, path), receive, send)
    return chunks


def sse_events(response: httpx.Response) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order."""
    return [line[len("data: ") :] for line in response.text.splitlines() if line.startswith("data: ")]


def chat_plain_and_streamed(client: Any, model: str) -> list[Any]:
    """Ask ``model`` the same greedy question through the ``openai`` client ``client``, plainly and
    streamed with usage: the texts and token counts must agree. Returns the streamed chunks."""
    messages = [{"role": "user", "content": "你好"}]
    reply = client.chat.completions.create(model=model, messages=messages, max_tokens=8, temperature=0)
    assert reply.choices[0].finish_reason in ("stop", "length") and reply.usage.completion_tokens <= 8
    stream = client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == reply.choices[0].message.content
    assert chunks[-1].usage.total_tokens == reply.usage.total_tokens
    return chunks


def send_and_close(url: str, path: str, body: dict[str, Any], wait_s: float) -> bytes:
    """POST ``body`` as JSON on a raw socket, wait ``wait_s`` and close it: a client that leaves.

    Returns what had arrived by then (``b""`` if nothing).
    """
    host, port = url.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(head.encode() + payload)
        time.sleep(wait_s)
        sock.settimeout(0.1)
        try:
            return sock.recv(65536)
        except TimeoutError:
            return b""
