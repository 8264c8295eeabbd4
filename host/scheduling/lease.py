"""A lease: permission to use a loaded backend, typed by its task's backend protocol."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from host.contract.backend import Backend
from host.registry import RegisteredModel

B_co = TypeVar("B_co", bound=Backend, covariant=True)


class Lease(Generic[B_co]):
    """Permission to use a loaded backend; hold it for the whole response, then release.

    ``backend`` is typed by the task the lease was acquired for (``Lease[ChatBackend]``);
    admission checked that the backend class implements that task's protocol
    (:func:`host.contract.backend.check_backend`). Leases are made by :meth:`Scheduler.acquire`.
    """

    __slots__ = ("_on_release", "_released", "backend", "model")

    def __init__(self, backend: B_co, model: RegisteredModel, on_release: Callable[[], None]) -> None:
        self.backend = backend
        self.model = model
        self._on_release = on_release
        self._released = False

    def release(self) -> None:
        """Give the model back. Synchronous and idempotent."""
        if not self._released:
            self._released = True
            self._on_release()

    def __enter__(self) -> Lease[B_co]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
