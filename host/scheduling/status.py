"""What ``GET /v1/models`` shows of a model's residency: its state and a status snapshot.

Shared by the single-machine scheduler and the Ray Serve pool (``host.ray``).
"""

from __future__ import annotations

import enum

import msgspec

from host.contract.spec import PlacementKind, Task


class ModelState(enum.StrEnum):
    """A model's life cycle as shown by ``GET /v1/models``."""

    AVAILABLE = "available"
    LOADING = "loading"
    RESIDENT = "resident"
    OFFLOADING = "offloading"
    OFFLOADED = "offloaded"
    UNLOADING = "unloading"
    FAILED = "failed"


class ModelStatus(msgspec.Struct, kw_only=True):
    """A snapshot of one model's residency."""

    id: str
    task: Task
    plugin: str
    state: ModelState
    placement: PlacementKind | None
    device: str | None
    gpu_bytes: int
    host_bytes: int
    in_flight: int
    queued: int
    last_used: float | None
    pinned: bool
    error: str | None
    replicas: int | None = None  # running replicas on a Ray Serve cluster; None on one machine
    #: The request whose admission started the load that failed (its log lines carry the id).
    error_request_id: str | None = None
    #: ``models.<id>.keep_alive_s`` (``None``: stays until it needs the room or is unloaded).
    keep_alive_s: float | None = None
    #: Seconds until the idle model is unloaded by its keep-alive (``None``: no timer is running).
    expires_in_s: float | None = None
