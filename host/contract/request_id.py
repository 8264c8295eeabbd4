"""Request ids: taken from ``X-Request-Id`` (when short and safe) or generated, echoed on every
response, and stamped on every log line written while the request is served.

The id lives in a :class:`~contextvars.ContextVar` set by the HTTP edge (``host.server.edge``); tasks
spawned while serving a request inherit it, so the scheduler's and the backends' log lines carry it
too. :func:`install_log_records` stamps it on log records.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

HEADER = "X-Request-Id"
#: Accepted client ids: what proxies and tracing systems send (uuids, hex, base64url), nothing that
#: could break a log line or a header.
_SAFE = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")

current: ContextVar[str | None] = ContextVar("plughost_request_id", default=None)


def new_id() -> str:
    """A fresh request id."""
    return uuid.uuid4().hex


def accept(value: str | None) -> str:
    """The client's id when it is short and made of safe characters, else a fresh one."""
    if value and _SAFE.match(value):
        return value
    return new_id()


def _factory(previous: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        rid = current.get()
        record.request_id = rid or "-"
        if rid is not None and isinstance(record.msg, str):
            # Prefixed so that any handler's format shows it, whoever configured logging.
            record.msg = f"[{rid}] {record.msg}"
        return record

    make.plughost_request_ids = True  # type: ignore[attr-defined]
    return make


def install_log_records() -> None:
    """Stamp every log record made while a request is served with its id (``record.request_id``,
    and a ``[id]`` prefix on the message). Idempotent; a log record factory rather than a filter
    because logger filters do not apply to child loggers and the handlers belong to the runner."""
    previous = logging.getLogRecordFactory()
    if not getattr(previous, "plughost_request_ids", False):
        logging.setLogRecordFactory(_factory(previous))
