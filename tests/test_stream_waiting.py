"""Issue 12, finding 9: a streamed request answers at once while its model loads.

Headers and ``: waiting for model`` comments go out while the model is admitted; errors after
the headers are one SSE error event in the OpenAI envelope, then ``[DONE]``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from host.app import create_app
from host.contract.spec import Task
from host.testing.fakes import FakePlugin, fake_spec
from host.testing.pytest_plugin import CPU_ONLY, make_config
from host.testing.server import serve_in_thread

LOAD_S = 2.5


@pytest.fixture
def server() -> Iterator[str]:
    plugin = FakePlugin([fake_spec("slow-chat", Task.CHAT, load_delay_s=LOAD_S, context=80)])
    config = make_config({"server": {"stream_keepalive_s": 0.5}})
    with serve_in_thread(create_app(config, plugins=[plugin], budgets=CPU_ONLY)) as url:
        yield url


def _stream(url: str, body: dict, path: str = "/v1/chat/completions") -> tuple[float, list[tuple[float, str]]]:
    """Seconds until the headers, and every SSE line with its arrival time."""
    start = time.monotonic()
    lines: list[tuple[float, str]] = []
    with httpx.stream("POST", f"{url}{path}", json=body, timeout=30) as response:
        headers_at = time.monotonic() - start
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line:
                lines.append((time.monotonic() - start, line))
    return headers_at, lines


def test_headers_and_keepalives_while_the_model_loads(server: str) -> None:
    body = {"model": "slow-chat", "messages": [{"role": "user", "content": "hello there"}], "stream": True}
    headers_at, lines = _stream(server, body)
    assert headers_at < 1.5, f"headers after {headers_at:.1f} s"
    comments = [t for t, line in lines if line.startswith(": waiting for model")]
    assert len(comments) >= 2 and comments[0] < 1.5
    data = [line[6:] for _, line in lines if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    text = "".join(
        json.loads(d)["choices"][0]["delta"].get("content") or "" for d in data[:-1] if json.loads(d)["choices"]
    )
    assert text == "echo: hello there"


def test_an_error_after_the_headers_is_an_sse_error_event_then_done(server: str) -> None:
    body = {"model": "slow-chat", "messages": [{"role": "user", "content": "hi"}], "stream": True, "max_tokens": 100}
    _, lines = _stream(server, body)
    data = [line[6:] for _, line in lines if line.startswith("data: ")]
    assert data[-1] == "[DONE]" and len(data) == 2
    error = json.loads(data[0])["error"]
    assert error["param"] == "max_tokens" and "maximum context length" in error["message"]


def test_legacy_completions_stream_keepalives_while_the_model_loads_too(server: str) -> None:
    body = {"model": "slow-chat", "prompt": "hello there", "stream": True}
    headers_at, lines = _stream(server, body, "/v1/completions")
    assert headers_at < 1.5, f"headers after {headers_at:.1f} s"
    assert sum(line.startswith(": waiting for model") for _, line in lines) >= 2
    data = [line[6:] for _, line in lines if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    assert "".join(json.loads(d)["choices"][0]["text"] for d in data[:-1] if json.loads(d)["choices"]) == (
        "echo: hello there"
    )
