"""What the routes need from whatever runs the models: a *model pool*.

On one machine that is :class:`host.scheduling.scheduler.Scheduler`; on a Ray Serve cluster it is
``host.ray.RayModelPool``, whose leases reach the model deployments through deployment handles.
``create_app(pool=...)`` takes a factory for another one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, Protocol, overload, runtime_checkable

from host.contract.backend import Backend, ChatBackend, EmbeddingBackend, RerankBackend
from host.contract.spec import Task
from host.registry import ModelRegistry
from host.scheduling.lease import Lease
from host.scheduling.status import ModelStatus


@runtime_checkable  # Litestar checks a dependency's value against its declared type
class ModelPool(Protocol):
    """Hands out leases on models and reports their state (``GET /v1/models``, ``/health``)."""

    @property
    def ready(self) -> bool:
        """Accepting work (not shutting down)."""

    @overload
    async def acquire(self, name: str, task: Literal[Task.CHAT]) -> Lease[ChatBackend]: ...
    @overload
    async def acquire(self, name: str, task: Literal[Task.EMBEDDING]) -> Lease[EmbeddingBackend]: ...
    @overload
    async def acquire(self, name: str, task: Literal[Task.RERANK]) -> Lease[RerankBackend]: ...
    @overload
    async def acquire(self, name: str, task: Task) -> Lease[Backend]: ...

    async def acquire(self, name: str, task: Task) -> Lease[Any]:
        """A lease on the model called ``name``, typed by the backend protocol of ``task``."""

    async def load(self, name: str) -> ModelStatus:
        """Make the model ready to serve now (``POST /v1/models/{id}/load``)."""

    async def unload(self, name: str) -> ModelStatus:
        """Free the model now (``POST /v1/models/{id}/unload``)."""

    def status(self, model_id: str) -> ModelStatus:
        """The status of one model (by id)."""

    def snapshot(self) -> list[ModelStatus]:
        """Status of every model, in registry order."""

    async def preload(self) -> None:
        """Start-up work (called by the app's lifespan)."""

    async def close(self) -> None:
        """Refuse new work and free what the pool holds (app shutdown)."""


#: Builds the pool of an app from its registry (called in the app's lifespan).
PoolFactory = Callable[[ModelRegistry], ModelPool]
