"""What routes receive by Litestar dependency injection, typed.

A route names a parameter after a dependency and types it with the alias below, e.g.
``scheduler: SchedulerDep``; :meth:`Services.dependencies` provides the values.
"""

from __future__ import annotations

import time

from litestar.di import NamedDependency, Provide

from host.contract.config import HostConfig, parse_bytes
from host.contract.errors import NotFound, ShuttingDown
from host.downloads.manager import Downloads
from host.metrics import NO_METRICS, Observer
from host.registry import ModelRegistry
from host.scheduling.pool import ModelPool
from host.serving.response_store import ResponseStore
from host.serving.service import ChatService
from host.ui import Dashboard

#: ``config: ConfigDep``: the host configuration.
ConfigDep = NamedDependency[HostConfig]
#: ``registry: RegistryDep``: the declared models.
RegistryDep = NamedDependency[ModelRegistry]
#: ``scheduler: SchedulerDep``: the model pool that hands out leases (the scheduler on one machine).
SchedulerDep = NamedDependency[ModelPool]
#: ``started: StartedDep``: when the app was built (Unix seconds).
StartedDep = NamedDependency[int]
#: ``metrics: MetricsDep``: where routes report tokens and time to first token (``host.metrics``).
MetricsDep = NamedDependency[Observer]
#: ``dashboard: DashboardDep``: the page's files and live history (``server.ui``).
DashboardDep = NamedDependency[Dashboard]
#: ``downloads: DownloadsDep``: the app's weight downloads (``POST /v1/models/{id}/pull``, cards, health).
DownloadsDep = NamedDependency[Downloads]
#: ``chat: ChatDep``: the service behind every chat-like route (``host.serving.service``).
ChatDep = NamedDependency[ChatService]
#: ``responses: ResponsesDep``: the stored responses of ``/v1/responses`` (``host.serving.response_store``).
ResponsesDep = NamedDependency[ResponseStore]


class Services:
    """What routes are given: the config, the registry, the downloads, and the scheduler while the app runs."""

    def __init__(
        self,
        config: HostConfig,
        registry: ModelRegistry,
        metrics: Observer = NO_METRICS,
        downloads: Downloads | None = None,
    ) -> None:
        self.config = config
        self.registry = registry
        self.metrics = metrics
        self.downloads = downloads if downloads is not None else Downloads(config, metrics)
        self.started = int(time.time())
        self.scheduler: ModelPool | None = None  # made by the lifespan (it measures the machine)
        self.dashboard: Dashboard | None = None  # server.ui
        self.chat: ChatService | None = None  # serves on the scheduler, made with it
        stored = config.responses
        self.responses = ResponseStore(stored.max_stored, parse_bytes(stored.max_stored_bytes), stored.max_age_s)

    def get_config(self) -> HostConfig:
        """The host configuration."""
        return self.config

    def get_registry(self) -> ModelRegistry:
        """The declared models."""
        return self.registry

    def get_scheduler(self) -> ModelPool:
        """The running scheduler (a 503 outside the app's lifespan)."""
        if self.scheduler is None:
            raise ShuttingDown("plughost is not running")
        return self.scheduler

    def start(self, scheduler: ModelPool) -> None:
        """The lifespan's scheduler is running: serve on it."""
        self.scheduler = scheduler
        server = self.config.server
        self.chat = ChatService(
            scheduler,
            self.registry,
            self.metrics,
            server.stream_keepalive_s,
            open_schema_objects=server.json_schema_objects == "open",
        )

    def get_chat(self) -> ChatService:
        """The chat service (a 503 outside the app's lifespan)."""
        if self.chat is None:
            raise ShuttingDown("plughost is not running")
        return self.chat

    def get_responses(self) -> ResponseStore:
        """The stored responses of ``/v1/responses``."""
        return self.responses

    def get_started(self) -> int:
        """When the app was built (Unix seconds): the ``created`` of every model card."""
        return self.started

    def get_metrics(self) -> Observer:
        """The app's metrics (``GET /metrics`` renders them when they are a ``host.metrics.Metrics``)."""
        return self.metrics

    def get_dashboard(self) -> Dashboard:
        """The dashboard (a 404 when ``server.ui`` is off)."""
        if self.dashboard is None:
            raise NotFound("The dashboard is off (server.ui: false).")
        return self.dashboard

    def get_downloads(self) -> Downloads:
        """The app's weight downloads."""
        return self.downloads

    def dependencies(self) -> dict[str, Provide]:
        """Litestar dependencies: a route parameter ``scheduler: ModelPool`` receives the pool."""
        return {
            "config": Provide(self.get_config, sync_to_thread=False),
            "registry": Provide(self.get_registry, sync_to_thread=False),
            "scheduler": Provide(self.get_scheduler, sync_to_thread=False),
            "started": Provide(self.get_started, sync_to_thread=False),
            "metrics": Provide(self.get_metrics, sync_to_thread=False),
            "dashboard": Provide(self.get_dashboard, sync_to_thread=False),
            "downloads": Provide(self.get_downloads, sync_to_thread=False),
            "chat": Provide(self.get_chat, sync_to_thread=False),
            "responses": Provide(self.get_responses, sync_to_thread=False),
        }
