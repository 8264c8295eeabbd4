"""Finding 6: half-open connections must not stay open forever.

A real uvicorn server (``host.server.runner``: plughost's protocol and limits) on loopback, driven with raw
sockets: connections that send nothing or half a request are closed once ``header_timeout_s`` has
passed, a body that stops arriving gets a 408 after ``body_timeout_s``, and normal requests are
served all along.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from host.app import create_app
from host.server.runner import uvicorn_config
from host.testing.fakes import FakePlugin
from host.testing.pytest_plugin import CPU_ONLY, make_config
from host.testing.server import free_port

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0


@pytest.fixture
def server() -> Iterator[tuple[str, int]]:
    config = make_config(
        {"server": {"header_timeout_s": HEADER_TIMEOUT, "body_timeout_s": BODY_TIMEOUT, "keep_alive_timeout_s": 1}}
    )
    port = free_port()
    app = create_app(config, plugins=[FakePlugin()], budgets=CPU_ONLY)
    srv = uvicorn.Server(uvicorn_config(app, config.server, port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield "127.0.0.1", port
    finally:
        srv.should_exit = True
        thread.join(timeout=30)


def closed_by_peer(sock: socket.socket, within: float) -> bool:
    """Whether the server closes ``sock`` within ``within`` seconds (reads until EOF)."""
    sock.settimeout(within)
    try:
        while sock.recv(4096):
            pass
        return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_half_open_connections_are_closed_and_service_goes_on(server: tuple[str, int]) -> None:
    host, port = server
    socks = []
    for i in range(50):
        s = socket.create_connection((host, port))
        if i % 3 == 1:
            s.sendall(b"GET /health HTTP/1.1\r\n")  # half a request
        elif i % 3 == 2:
            s.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-")  # headers cut off
        socks.append(s)
    started = time.monotonic()
    assert httpx.get(f"http://{host}:{port}/health", timeout=5).status_code == 200  # served meanwhile
    try:
        assert all(closed_by_peer(s, within=HEADER_TIMEOUT + 3) for s in socks)
        assert time.monotonic() - started < HEADER_TIMEOUT + 4
    finally:
        for s in socks:
            s.close()
    assert httpx.get(f"http://{host}:{port}/health", timeout=5).status_code == 200


def test_a_stalled_body_gets_408(server: tuple[str, int]) -> None:
    host, port = server
    with socket.create_connection((host, port)) as s:
        s.sendall(
            b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"model": '
        )
        s.settimeout(BODY_TIMEOUT + 5)
        started = time.monotonic()
        reply = b""
        while b"request_timeout" not in reply and (chunk := s.recv(65536)):  # head and body may come apart
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 408"), reply
        assert b"request_timeout" in reply and time.monotonic() - started < BODY_TIMEOUT + 3


def test_idle_keep_alive_connections_are_closed(server: tuple[str, int]) -> None:
    host, port = server
    with socket.create_connection((host, port)) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        s.settimeout(5)
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
        assert closed_by_peer(s, within=3)
        s.sendall(b"")  # nothing more; the server closed an idle connection


def test_half_a_second_request_on_a_kept_alive_connection_is_closed(server: tuple[str, int]) -> None:
    host, port = server
    with socket.create_connection((host, port)) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        s.settimeout(5)
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
        s.sendall(b"GET /health HTTP/1.1\r\nHo")  # cancels the keep-alive timer; the header clock still runs
        assert closed_by_peer(s, within=HEADER_TIMEOUT + 3)
