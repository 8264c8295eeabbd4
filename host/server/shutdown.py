"""Graceful shutdown: on SIGTERM (or Ctrl-C) drain with a deadline, then cancel.

uvicorn stops accepting connections on SIGTERM and then waits for every running response,
without a limit by default: one long generation kept the server up for minutes. The app's
lifespan only hears about the shutdown after that wait. So the app chains its own handler in
front of the server's (:func:`install`):

1. at once: the scheduler refuses new work (``/health`` answers 503, requests get 503
   ``shutting_down``) and fails requests still waiting for a model;
2. running requests go on for up to ``server.shutdown_timeout_s``;
3. then every running generation is ended with a ``shutting_down`` error (a stream gets an
   error event and ``[DONE]``, a plain request a 503), so the server can exit.

The server's own handler still runs (it is called first), so a second Ctrl-C forces the exit
as usual. Signal handlers can only be set from the main thread; elsewhere (tests that serve
from a thread) :func:`install` does nothing and :func:`drain` can be called directly.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

log = logging.getLogger("plughost.shutdown")

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def drain(scheduler: Any, deadline_s: float) -> asyncio.TimerHandle:
    """Refuse new work now; end running generations after ``deadline_s`` (event-loop thread)."""
    log.info("shutting down: draining running requests for up to %.1f s", deadline_s)
    scheduler.begin_shutdown()
    return asyncio.get_running_loop().call_later(deadline_s, scheduler.abort_running)


def install(scheduler: Any, deadline_s: float) -> Callable[[], None]:
    """Chain a draining handler in front of the current SIGTERM/SIGINT handlers; returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {sig: signal.getsignal(sig) for sig in _SIGNALS}
    started = False

    def start() -> None:
        nonlocal started
        if not started:
            started = True
            drain(scheduler, deadline_s)

    def handler(sig: int, frame: FrameType | None) -> None:
        before = previous[sig]
        if callable(before):
            before(sig, frame)
        elif before == signal.SIG_DFL and sig == signal.SIGINT:
            raise KeyboardInterrupt
        loop.call_soon_threadsafe(start)

    for sig in _SIGNALS:
        signal.signal(sig, handler)

    def undo() -> None:
        for sig, before in previous.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, before)

    return undo
