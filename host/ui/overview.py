"""``GET /ui/api/overview``: what the dashboard needs beyond ``/v1/models``.

Each device's memory budget against the bytes its models hold, the live rates of
:mod:`host.ui.history`, whether stand-ins serve (the DEMO banner) and which actions this pool offers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

import msgspec

from host import __version__
from host.demo import is_demo
from host.metrics import Metrics
from host.registry import ModelRegistry
from host.scheduling.policy import Budgets
from host.scheduling.pool import ModelPool, Pinning
from host.scheduling.scheduler import Scheduler
from host.scheduling.status import ModelStatus
from host.ui.assets import Assets
from host.ui.history import History, Point


class Device(msgspec.Struct, kw_only=True):
    """One memory budget: a GPU (``cuda:N``) or host RAM (``cpu``)."""

    name: str
    kind: Literal["gpu", "host"]
    budget_bytes: int | None  #: ``None`` where the pool does not say (a Ray Serve cluster)
    used_bytes: int


class Features(msgspec.Struct, kw_only=True):
    """The actions this pool offers besides load and unload. (Pulling weights is offered per model,
    where its card in ``/v1/models`` says where its ``weights`` are.)"""

    pin: bool  #: ``POST /v1/models/{id}/pin|unpin``


class Overview(msgspec.Struct, kw_only=True):
    """The body of ``GET /ui/api/overview``."""

    version: str
    ready: bool
    demo: list[str]  #: models served by their random-weight stand-ins
    server_time: float  #: Unix seconds: the page shows ``last_used`` relative to it
    devices: list[Device]
    features: Features
    interval_s: float
    history: list[Point]


class Dashboard:
    """The page's files and its live history, made once per app (``server.ui``)."""

    def __init__(
        self,
        registry: ModelRegistry,
        metrics: Metrics,
        snapshot: Callable[[], list[ModelStatus]],
        *,
        auth_required: bool,
    ) -> None:
        self.registry = registry
        self.assets = Assets(auth_required=auth_required)
        self.history = History(metrics, snapshot)

    @property
    def landing(self) -> bytes:
        """The page at ``/`` (links to the dashboard and the API)."""
        asset = self.assets.get("landing.html")
        assert asset is not None  # shipped in host/ui/static
        return asset.body

    def overview(self, pool: ModelPool) -> Overview:
        """The overview of ``pool`` now."""
        return Overview(
            version=__version__,
            ready=pool.ready,
            demo=[m.spec.id for m in self.registry if m.spec.weights and is_demo(m.spec.weights)],
            server_time=time.time(),
            devices=devices(pool.snapshot(), pool.budgets if isinstance(pool, Scheduler) else None),
            features=Features(pin=isinstance(pool, Pinning)),
            interval_s=self.history.interval_s,
            history=list(self.history.points),
        )


def devices(models: list[ModelStatus], budgets: Budgets | None) -> list[Device]:
    """Each GPU's and host RAM's budget with the bytes models hold there (GPUs with models but no
    budget, as on a cluster, are listed with ``budget_bytes: None``)."""
    gpu_used: dict[str, int] = {}
    host_used = 0
    for m in models:
        if m.gpu_bytes and m.device and m.device != "cpu":
            gpu_used[m.device] = gpu_used.get(m.device, 0) + m.gpu_bytes
        host_used += m.host_bytes
    gpus = list(budgets.gpus) if budgets is not None else []
    out = [
        Device(name=f"cuda:{i}", kind="gpu", budget_bytes=b, used_bytes=gpu_used.pop(f"cuda:{i}", 0))
        for i, b in enumerate(gpus)
    ]
    out += [Device(name=n, kind="gpu", budget_bytes=None, used_bytes=u) for n, u in sorted(gpu_used.items())]
    out.append(
        Device(
            name="cpu", kind="host", budget_bytes=budgets.host if budgets is not None else None, used_bytes=host_used
        )
    )
    return out
