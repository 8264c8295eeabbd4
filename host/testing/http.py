"""HTTP helpers for tests of plughost and its plugins: route paths, error envelope and SSE checks."""

from __future__ import annotations

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
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "app": app,
        "state": {},
    }


def sse_events(response: httpx.Response) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order."""
    return [line[len("data: ") :] for line in response.text.splitlines() if line.startswith("data: ")]
