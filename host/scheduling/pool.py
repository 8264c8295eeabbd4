"""What the routes need from whatever runs the models: a *model pool*.

On one machine that is :class:`host.scheduling.scheduler.Scheduler`; on a Ray Serve cluster it is
``host.ray.RayModelPool``, whose leases reach the model deployments through deployment handles.
``create_app(pool=...)`` takes a factory for another one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from host.registry import ModelRegistry, RegisteredModel
from host.scheduling.scheduler import ModelStatus
from host.spec import Task


class ModelLease(Protocol):
    """Permission to use a model's backend for one response; released exactly once (idempotent)."""

    backend: Any
    model: RegisteredModel

    def release(self) -> None:
        """Give the model back (synchronous, safe to call twice)."""

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: object) -> None: ...


class ModelPool(Protocol):
    """Hands out leases on models and reports their state (``GET /v1/models``, ``/health``)."""

    @property
    def ready(self) -> bool:
        """Accepting work (not shutting down)."""

    async def acquire(self, name: str, task: Task) -> Any:
        """A :class:`ModelLease` on the model called ``name``, once it can serve ``task``."""

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
