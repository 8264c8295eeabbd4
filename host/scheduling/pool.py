"""What the routes need from whatever runs the models: a *model pool*.

On one machine that is :class:`host.scheduling.scheduler.Scheduler`; on a Ray Serve cluster it is
``host.ray.RayModelPool``, whose leases reach the model deployments through deployment handles.
``create_app(pool=...)`` takes a factory for another one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Literal, Protocol, overload, runtime_checkable

from host.contract.backend import Backend, ChatBackend, EmbeddingBackend, RerankBackend
from host.contract.spec import Task
from host.registry import ModelRegistry
from host.scheduling.lease import Lease
from host.scheduling.status import ModelState, ModelStatus


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


@runtime_checkable
class Pinning(Protocol):
    """A pool whose models can be pinned at run time (the single-machine scheduler)."""

    def pin(self, name: str, pinned: bool) -> ModelStatus:
        """Pin (never moved for room or by keep-alive) or unpin a model; does not load it."""


_MOVING = {ModelState.LOADING, ModelState.OFFLOADING, ModelState.UNLOADING}


async def unload_when_idle(pool: ModelPool, model_id: str, wait_s: float) -> ModelStatus:
    """Unload ``model_id`` once its requests have finished, waiting up to ``wait_s`` for them; new
    requests are still served meanwhile, so a model that never idles is a conflict (409) after the wait."""
    deadline = time.monotonic() + wait_s
    status = pool.status(model_id)
    while (status.in_flight or status.queued or status.state in _MOVING) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        status = pool.status(model_id)
    return await pool.unload(model_id)
