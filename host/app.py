"""The application factory: ``create_app()`` builds the plugin manager, registry and scheduler.

Run it with ``litestar --app host.app:create_app run --port 15530`` or the ``plughost``
console script. Nothing happens at import time; every app has its own plugins and state.
Routes receive what they need by dependency injection (:class:`host.routes.deps.Services`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.datastructures import State

from host.config import HostConfig, load_config, parse_bytes
from host.plugins import make_plugin_manager
from host.registry import build_registry
from host.routes import ROUTES
from host.routes.deps import Services
from host.routes.errors import EXCEPTION_HANDLERS
from host.scheduling.budgets import resolve_budgets
from host.scheduling.policy import Budgets
from host.scheduling.pool import ModelPool, PoolFactory
from host.scheduling.scheduler import Scheduler

log = logging.getLogger("plughost")


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
    services = Services(config, registry)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        scheduler: ModelPool = (
            pool(registry)
            if pool is not None
            else Scheduler(registry, budgets or resolve_budgets(config), config.scheduler)
        )
        services.scheduler = app.state.scheduler = scheduler
        log.info("plughost serving %d model(s): %s", len(registry), ", ".join(m.spec.id for m in registry))
        await scheduler.preload()
        try:
            yield
        finally:
            await scheduler.close()

    return Litestar(
        route_handlers=ROUTES,
        dependencies=services.dependencies(),
        # For tests and tooling that inspect an app; routes use the typed dependencies above.
        state=State({"config": config, "registry": registry, "plugin_manager": pm, "started": services.started}),
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=parse_bytes(config.server.max_body_bytes),
        openapi_config=None,
    )
