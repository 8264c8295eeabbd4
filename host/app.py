"""The application factory: ``create_app()`` builds the plugin manager, registry and scheduler.

Run it with ``litestar --app host.app:create_app run --port 15530`` or the ``plughost``
console script. Nothing happens at import time; every app has its own plugins and state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from litestar import Litestar, MediaType, Request, Response
from litestar.datastructures import State
from litestar.exceptions import HTTPException

from host.config import HostConfig, load_config, parse_bytes
from host.errors import ErrorBody, ErrorEnvelope, PlughostError
from host.plugins import make_plugin_manager
from host.registry import build_registry
from host.routes import ROUTES
from host.scheduling.budgets import resolve_budgets
from host.scheduling.policy import Budgets
from host.scheduling.pool import ModelPool, PoolFactory
from host.scheduling.scheduler import Scheduler

log = logging.getLogger("plughost")

_HTTP_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def create_app(
    config: HostConfig | None = None,
    *,
    budgets: Budgets | None = None,
    plugins: Sequence[object] = (),
    pool: PoolFactory | None = None,
) -> Litestar:
    """Build the Litestar app.

    :param config: the configuration; default ``load_config()`` (``$PLUGHOST_CONFIG``).
    :param budgets: memory budgets to use instead of measuring this machine (tests).
    :param plugins: extra plugin objects registered after discovery (tests, embedding).
    :param pool: builds the model pool from the registry instead of this machine's scheduler
        (``host.ray`` passes one whose models are Ray Serve deployments).
    """
    config = config if config is not None else load_config()
    logging.getLogger("plughost").setLevel(config.server.log_level.upper())
    pm = make_plugin_manager(config, extra=plugins)
    registry = build_registry(pm, config)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        scheduler: ModelPool = (
            pool(registry)
            if pool is not None
            else Scheduler(registry, budgets or resolve_budgets(config), config.scheduler)
        )
        app.state.scheduler = scheduler
        log.info("plughost serving %d model(s): %s", len(registry), ", ".join(m.spec.id for m in registry))
        await scheduler.preload()
        try:
            yield
        finally:
            await scheduler.close()

    return Litestar(
        route_handlers=ROUTES,
        state=State({"config": config, "registry": registry, "plugin_manager": pm, "started": int(time.time())}),
        lifespan=[lifespan],
        exception_handlers={PlughostError: _plughost_error, HTTPException: _http_error, Exception: _unexpected},
        request_max_body_size=parse_bytes(config.server.max_body_bytes),
        openapi_config=None,
    )


def _error_response(status: int, body: ErrorEnvelope, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, headers=headers, media_type=MediaType.JSON)


def _plughost_error(_: Request, exc: PlughostError) -> Response:
    return _error_response(exc.status, exc.envelope(), exc.headers())


def _http_error(_: Request, exc: HTTPException) -> Response:
    status = exc.status_code
    code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(status, f"http_{status}")
    message = exc.detail or "HTTP error"
    if status == 413:
        message = "Request body is larger than the server's limit (server.max_body_bytes)."
    body = ErrorEnvelope(ErrorBody(message=message, type=_HTTP_TYPES.get(status, "server_error"), code=code))
    return _error_response(status, body, exc.headers)


def _unexpected(_: Request, exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    body = ErrorEnvelope(
        ErrorBody(message=f"Internal server error: {type(exc).__name__}", type="server_error", code="internal_error")
    )
    return _error_response(500, body)
