"""One model's residency record (:class:`Slot`) and a request waiting for its lease
(:class:`Waiter`): the scheduler's mutable state, on the event-loop thread only."""

from __future__ import annotations

import asyncio
import collections
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from host.contract import request_id
from host.contract.backend import Backend, Relocatable
from host.contract.spec import Grant
from host.registry import RegisteredModel
from host.scheduling.lease import Lease
from host.scheduling.policy import gib
from host.scheduling.status import ModelState


class Waiter:
    """A request waiting for a lease: its arrival order and the future its lease resolves."""

    __slots__ = ("future", "request_id", "seq")

    def __init__(self, seq: int, future: asyncio.Future[Lease[Backend]]) -> None:
        self.seq = seq
        self.future = future
        self.request_id = request_id.current.get()  # named by a failed load this request started


class Slot:
    """Mutable residency record of one model (event-loop thread only)."""

    def __init__(self, model: RegisteredModel) -> None:
        self.model = model
        self.state = ModelState.AVAILABLE
        self.backend: Backend | None = None
        self.grant: Grant | None = None
        self.gpu: int | None = None
        self.gpu_bytes = 0
        self.host_bytes = 0
        self.in_flight = 0
        self.waiters: collections.deque[Waiter] = collections.deque()
        self.last_used = 0.0  # monotonic
        self.last_used_wall: float | None = None
        self.loaded_at = 0.0
        self.error: str | None = None
        self.error_request_id: str | None = None  # the request whose admission started the failed load
        self.load_request_id: str | None = None
        self.pinned = model.pinned  # the config's value; POST /v1/models/{id}/pin|unpin changes it
        self.drain_before: int | None = None  # anti-thrash: only earlier arrivals are served
        self.ttl: asyncio.TimerHandle | None = None
        self.ttl_deadline: float | None = None  # time.monotonic() when the keep-alive timer fires
        self._executor: ThreadPoolExecutor | None = None

    @property
    def id(self) -> str:
        """The model's id."""
        return self.model.spec.id

    async def run(self, fn: Any, *args: Any) -> Any:
        """Run a blocking life-cycle call on this model's own thread (calls never overlap)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"plughost-{self.id}")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def shutdown(self) -> None:
        """Stop this model's life-cycle thread."""
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    def holds_memory(self) -> bool:
        """Whether the model holds memory (loaded, or on its way in or out)."""
        return self.state not in (ModelState.AVAILABLE, ModelState.FAILED)

    def offloadable(self) -> int | None:
        """Host bytes the model takes when offloaded, or ``None`` if it cannot be offloaded."""
        if self.model.spec.offload_bytes is None or not isinstance(self.backend, Relocatable):
            return None
        return self.model.spec.offload_bytes

    def describe(self) -> str:
        """One line for error messages: id, state, device, memory and requests in flight."""
        where = self.grant.device if self.grant else "-"
        busy = f", {self.in_flight} request(s) in flight" if self.in_flight else ""
        return f"{self.id} ({self.state} on {where}, {gib(self.gpu_bytes + self.host_bytes)}{busy})"
