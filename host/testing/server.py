"""Run an app on a real socket in a background thread (for clients such as the ``openai`` SDK)."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn
from litestar import Litestar


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    """Wait for a server started as a subprocess to answer ``GET /health`` with 200.

    Raises ``RuntimeError`` if the process exits or ``timeout`` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the server at {url} did not start (exit code {proc.poll()})")
        time.sleep(0.2)


@contextmanager
def serve_in_thread(app: Litestar, *, startup_timeout: float = 30.0) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port; yields the base URL. Stops cleanly."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name=f"plughost-test-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
