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

from host.contract import request_id
from host.contract.config import HostConfig, load_config, parse_bytes
from host.downloads.manager import Downloads
from host.metrics import Metrics
from host.plugins import make_plugin_manager
from host.registry import build_registry
from host.routes import ROUTES
from host.routes.deps import Services
from host.routes.errors import EXCEPTION_HANDLERS, envelope_for
from host.routes.ui import UI_ROUTES
from host.scheduling.budgets import resolve_budgets
from host.scheduling.policy import Budgets
from host.scheduling.pool import ModelPool, PoolFactory
from host.scheduling.scheduler import Scheduler
from host.server import shutdown
from host.server.disconnect import DisconnectGuard
from host.server.edge import Edge
from host.server.openapi import OPENAPI, openapi_config
from host.server.security import EdgePolicy, cors_config
from host.ui import Dashboard, LandingPage, add_security_headers

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
    request_id.install_log_records()
    pm = make_plugin_manager(config, extra=plugins)
    registry = build_registry(pm, config)
    metrics = Metrics()
    downloads = Downloads(config, metrics)
    services = Services(config, registry, metrics, downloads)
    policy = EdgePolicy.from_config(config.server)
    if config.server.ui:
        services.dashboard = Dashboard(
            registry,
            metrics,
            lambda: services.scheduler.snapshot() if services.scheduler is not None else [],
            auth_required=bool(policy.api_keys),
        )

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        scheduler: ModelPool = (
            pool(registry)
            if pool is not None
            else Scheduler(
                registry, budgets or resolve_budgets(config), config.scheduler, observer=metrics, weights=downloads
            )
        )
        services.start(scheduler)
        app.state.scheduler = scheduler
        metrics.watch(scheduler)
        log.info("plughost serving %d model(s): %s", len(registry), ", ".join(m.spec.id for m in registry))
        await scheduler.preload()
        # On one machine SIGTERM drains, then aborts at the deadline; Ray Serve stops its own replicas.
        uninstall = (
            shutdown.install(scheduler, config.server.shutdown_timeout_s)
            if isinstance(scheduler, Scheduler)
            else lambda: None
        )
        try:
            if services.dashboard is not None:
                async with services.dashboard.history.running():
                    yield
            else:
                yield
        finally:
            uninstall()
            await downloads.close()
            await scheduler.close()

    app = Litestar(
        route_handlers=[*ROUTES, *(UI_ROUTES if config.server.ui else ())],
        dependencies=services.dependencies(),
        # For tests and tooling that inspect an app; routes use the typed dependencies above.
        state=State({"config": config, "registry": registry, "plugin_manager": pm, "started": services.started}),
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=parse_bytes(config.server.max_body_bytes),
        middleware=[DisconnectGuard],
        openapi_config=openapi_config(LandingPage(services.dashboard.landing)) if services.dashboard else OPENAPI,
        before_send=[add_security_headers] if services.dashboard else [],
        cors_config=cors_config(config.server),
    )
    # Outside Litestar's own handler: sees every request (404s too) before routing and CORS.
    app.asgi_handler = Edge(app.asgi_handler, policy, metrics, config.server.body_timeout_s, envelope_for)
    return app
