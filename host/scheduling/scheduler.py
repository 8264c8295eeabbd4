"""The scheduler: owns every model's residency and hands out leases.

All state lives on the event loop thread; blocking work (imports, weight loading,
offloading) runs in worker threads. Decisions come from :func:`host.scheduling.policy.plan`.

A request calls :meth:`Scheduler.acquire` and gets a :class:`Lease` that pins its model in
place until :meth:`Lease.release` (synchronous and idempotent, so a ``finally`` in a
cancelled stream can always run it). The lease is typed by the task's backend protocol
(``Lease[ChatBackend]`` for ``Task.CHAT``), which admission checks on the backend class.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import time
from typing import Any, Literal, overload

from host.contract import request_id
from host.contract.backend import (
    Backend,
    ChatBackend,
    EmbeddingBackend,
    Relocatable,
    RerankBackend,
    load_backend,
    relocate_backend,
)
from host.contract.config import SchedulerConfig
from host.contract.errors import (
    AdmissionTimeout,
    Conflict,
    InsufficientMemory,
    ModelLoadFailed,
    QueueFull,
    ShuttingDown,
)
from host.contract.spec import Grant, PlacementKind, Task
from host.metrics import NO_METRICS, Observer
from host.registry import ModelRegistry
from host.scheduling.gate import OPEN_GATE, WeightsGate
from host.scheduling.lease import Lease
from host.scheduling.policy import (
    Admit,
    Budgets,
    Impossible,
    Policy,
    Resident,
    ResidentState,
    Wait,
    Want,
    gib,
    plan,
)
from host.scheduling.slot import Slot, Waiter
from host.scheduling.status import ModelState, ModelStatus
from host.toolkit.weights import WeightsError

log = logging.getLogger("plughost.scheduler")


_BUSY = {ModelState.LOADING, ModelState.OFFLOADING, ModelState.UNLOADING}


class Scheduler:
    """Admits, swaps, offloads and unloads models so that requests fit the memory budgets."""

    def __init__(
        self,
        registry: ModelRegistry,
        budgets: Budgets,
        config: SchedulerConfig,
        clock: Any = time.monotonic,
        *,
        observer: Observer = NO_METRICS,
        weights: WeightsGate = OPEN_GATE,
    ) -> None:
        self.registry = registry
        self.observer = observer  # metrics: transitions and evictions (host.metrics)
        self.weights = weights  # weights not on disk: a 503, or a wait for their download (host.downloads)
        self.budgets = budgets
        self.config = config
        self._clock = clock
        self._slots = {m.spec.id: Slot(m) for m in registry}
        self._next_seq = 0
        self._kick_pending = False
        self._retry: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False

    # -- public API ---------------------------------------------------------------------
    @overload
    async def acquire(self, name: str, task: Literal[Task.CHAT]) -> Lease[ChatBackend]: ...
    @overload
    async def acquire(self, name: str, task: Literal[Task.EMBEDDING]) -> Lease[EmbeddingBackend]: ...
    @overload
    async def acquire(self, name: str, task: Literal[Task.RERANK]) -> Lease[RerankBackend]: ...
    @overload
    async def acquire(self, name: str, task: Task) -> Lease[Backend]: ...

    async def acquire(self, name: str, task: Task) -> Lease[Any]:
        """Wait until the model named ``name`` is resident and return a lease on it, typed by the
        backend protocol of ``task`` (``Lease[ChatBackend]`` for ``Task.CHAT``).

        Raises ``ModelNotFound``/``WrongTask`` for bad names, ``QueueFull`` (429) when the
        model's queue is full, ``AdmissionTimeout`` (503) when admission takes too long,
        ``ModelLoadFailed``/``InsufficientMemory`` when it cannot be loaded, ``WeightsNotReady``
        (503) when its weights are not on disk (or, with ``download.on_first_use``, waits for them).
        """
        if self._closing:
            raise ShuttingDown("plughost is shutting down")
        slot = self._slots[self.registry.resolve(name, task).spec.id]
        if slot.state == ModelState.RESIDENT and slot.drain_before is None and not slot.waiters:
            return self._lease(slot)
        if slot.state in (ModelState.AVAILABLE, ModelState.FAILED):
            await self.weights.ensure(slot.model)  # before queueing: a download is not admission
            if self._closing:
                raise ShuttingDown("plughost is shutting down")
        if len(slot.waiters) >= self.config.queue_size:
            raise QueueFull(
                f"{len(slot.waiters)} requests are already queued for '{slot.id}' (limit {self.config.queue_size}).",
                retry_after=2,
            )
        if slot.state == ModelState.FAILED:
            slot.state = ModelState.AVAILABLE  # a new request retries a failed load
        waiter = Waiter(self._next_seq, asyncio.get_running_loop().create_future())
        self._next_seq += 1
        slot.waiters.append(waiter)
        self._kick()
        try:
            return await asyncio.wait_for(asyncio.shield(waiter.future), self.config.admission_timeout_s)
        except TimeoutError:
            self._drop_waiter(slot, waiter)
            raise AdmissionTimeout(self._timeout_message(slot), retry_after=10) from None
        except asyncio.CancelledError:
            self._drop_waiter(slot, waiter)
            raise

    async def load(self, name: str) -> ModelStatus:
        """Load a model now (explicit ``/load``); returns its status once resident."""
        model = self.registry.get(name)
        lease = await self.acquire(model.spec.id, model.spec.task)
        lease.release()
        return self.status(model.spec.id)

    async def unload(self, name: str) -> ModelStatus:
        """Unload a model now (explicit ``/unload``); a busy or loading model is a conflict."""
        slot = self._slots[self.registry.get(name).spec.id]
        if slot.in_flight or slot.state in _BUSY:
            raise Conflict(f"'{slot.id}' is {slot.state} with {slot.in_flight} request(s) in flight; try again later.")
        if slot.holds_memory():
            await self._start_unload(slot)
        return self.status(slot.id)

    def status(self, model_id: str) -> ModelStatus:
        """The status of one model (by id)."""
        s = self._slots[model_id]
        return ModelStatus(
            id=s.id,
            task=s.model.spec.task,
            plugin=s.model.plugin,
            state=s.state,
            placement=s.grant.placement if s.grant and s.holds_memory() else None,
            device=(s.grant.device if s.state != ModelState.OFFLOADED else "cpu")
            if s.grant and s.holds_memory()
            else None,
            gpu_bytes=s.gpu_bytes,
            host_bytes=s.host_bytes,
            in_flight=s.in_flight,
            queued=len(s.waiters),
            last_used=s.last_used_wall,
            pinned=s.pinned,
            error=s.error,
            error_request_id=s.error_request_id if s.error is not None else None,
            keep_alive_s=s.model.keep_alive_s,
            expires_in_s=max(0.0, s.ttl_deadline - time.monotonic()) if s.ttl and s.ttl_deadline else None,
        )

    def pin(self, name: str, pinned: bool) -> ModelStatus:
        """Pin a model (never offloaded, unloaded for room or by its keep-alive) or unpin it; does not
        load it (``POST /v1/models/{id}/pin|unpin``)."""
        slot = self._slots[self.registry.get(name).spec.id]
        slot.pinned = pinned
        if pinned:
            self._cancel_ttl(slot)
        elif slot.state in (ModelState.RESIDENT, ModelState.OFFLOADED):
            self._arm_ttl(slot)
        self._kick()  # a request waiting for the pinned model's room may fit now
        return self.status(slot.id)

    def backend_of(self, model_id: str) -> Backend | None:
        """The loaded backend of a model (``None`` when not loaded); for metrics."""
        return self._slots[model_id].backend

    def snapshot(self) -> list[ModelStatus]:
        """Status of every model, in registry order."""
        return [self.status(mid) for mid in self._slots]

    @property
    def ready(self) -> bool:
        """Accepting work (not shutting down)."""
        return not self._closing

    async def preload(self) -> None:
        """Load every pinned model (called at start-up); failures are logged, not raised."""
        for slot in self._slots.values():
            if slot.pinned:
                try:
                    await self.load(slot.id)
                except Exception as exc:
                    log.error("preloading %s failed: %s", slot.id, exc)

    def begin_shutdown(self) -> None:
        """Refuse new work (``/health`` says 503) and fail queued requests; running ones go on."""
        self._closing = True
        for slot in self._slots.values():
            while slot.waiters:
                w = slot.waiters.popleft()
                if not w.future.done():
                    w.future.set_exception(ShuttingDown("plughost is shutting down"))
            self._cancel_ttl(slot)
        if self._retry:
            self._retry.cancel()

    def abort_running(self) -> None:
        """End every running generation now with a clean error (the shutdown deadline passed).

        Backends that can (an ``abort()`` method) fail their running sequences with
        ``ShuttingDown``: streams end with an error event and ``[DONE]``, others get a 503.
        """
        for slot in self._slots.values():
            abort = getattr(slot.backend, "abort", None)
            if slot.in_flight and callable(abort):
                log.warning("%s: shutdown deadline passed, cancelling %d request(s)", slot.id, slot.in_flight)
                abort()

    async def close(self, grace_s: float = 30.0) -> None:
        """Refuse new work, fail queued requests, let running ones finish (up to ``grace_s``),
        and unload every model."""
        self.begin_shutdown()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        deadline = self._clock() + grace_s
        while any(s.in_flight for s in self._slots.values()) and self._clock() < deadline:  # noqa: ASYNC110 - bounded grace poll
            await asyncio.sleep(0.05)
        for slot in self._slots.values():
            if slot.holds_memory() and slot.state not in _BUSY:
                await self._start_unload(slot)
            slot.shutdown()

    # -- leases ----------------------------------------------------------------------------
    def _lease(self, slot: Slot) -> Lease[Backend]:
        slot.in_flight += 1
        self._cancel_ttl(slot)
        assert slot.backend is not None  # only resident models are leased
        return Lease(slot.backend, slot.model, functools.partial(self._release, slot))

    def _release(self, slot: Slot) -> None:
        slot.in_flight -= 1
        slot.last_used = self._clock()
        slot.last_used_wall = time.time()
        if slot.in_flight == 0:
            self._arm_ttl(slot)
            self._kick()

    def _arm_ttl(self, slot: Slot) -> None:
        ttl = slot.model.keep_alive_s
        if ttl is not None and not self._closing and not slot.in_flight and not slot.waiters and not slot.pinned:
            self._cancel_ttl(slot)
            slot.ttl = asyncio.get_running_loop().call_later(ttl, self._expire, slot)
            slot.ttl_deadline = time.monotonic() + ttl

    def _cancel_ttl(self, slot: Slot) -> None:
        if slot.ttl:
            slot.ttl.cancel()
        slot.ttl = slot.ttl_deadline = None

    def _expire(self, slot: Slot) -> None:
        slot.ttl = slot.ttl_deadline = None
        if (
            slot.state in (ModelState.RESIDENT, ModelState.OFFLOADED)
            and not slot.in_flight
            and not slot.waiters
            and not slot.pinned
        ):
            log.info("%s idle for %.0fs: unloading", slot.id, slot.model.keep_alive_s)
            self._spawn(self._start_unload(slot))

    def _drop_waiter(self, slot: Slot, waiter: Waiter) -> None:
        with contextlib.suppress(ValueError):
            slot.waiters.remove(waiter)
        if waiter.future.done() and not waiter.future.cancelled() and waiter.future.exception() is None:
            waiter.future.result().release()  # granted just as the caller gave up
        else:
            waiter.future.cancel()
        self._kick()

    # -- the pump: apply the policy ---------------------------------------------------------
    def _kick(self) -> None:
        if not self._kick_pending:
            self._kick_pending = True
            asyncio.get_running_loop().call_soon(self._pump)

    def _pump(self) -> None:
        self._kick_pending = False
        if self._closing:
            return
        blocking: set[str] = set()
        pending = [
            s for s in self._slots.values() if s.waiters and s.state in (ModelState.AVAILABLE, ModelState.OFFLOADED)
        ]
        pending.sort(key=lambda s: s.waiters[0].seq)
        retry_at: float | None = None
        for slot in pending:
            if not slot.waiters or slot.state not in (ModelState.AVAILABLE, ModelState.OFFLOADED):
                continue  # an earlier decision in this pass moved it (evicted as a victim, say)
            decision = plan(self._want(slot), self._residents(), self.budgets, self._policy())
            if isinstance(decision, Admit):
                self._begin_admit(slot, decision)
            elif isinstance(decision, Wait):
                for name in decision.blockers:
                    blocking.add(name)
                    blocker = self._slots[name]
                    if blocker.drain_before is None:  # requests from now on wait until after the swap
                        blocker.drain_before = self._next_seq
                if decision.retry_at is not None:
                    retry_at = decision.retry_at if retry_at is None else min(retry_at, decision.retry_at)
            elif isinstance(decision, Impossible):
                self._fail_waiters(slot, InsufficientMemory(f"'{slot.id}' cannot be loaded: {decision.reason}"))
        for slot in self._slots.values():
            if slot.id not in blocking:
                slot.drain_before = None  # a model drains only while someone waits for its memory
        for slot in self._slots.values():
            if slot.state == ModelState.RESIDENT and slot.waiters:
                self._serve(slot)
        if retry_at is not None:
            if self._retry:
                self._retry.cancel()
            delay = max(0.0, retry_at - self._clock()) + 0.001
            self._retry = asyncio.get_running_loop().call_later(delay, self._kick)

    def _serve(self, slot: Slot) -> None:
        """Grant queued waiters of a resident model (only earlier arrivals while it drains)."""
        keep: collections.deque[Waiter] = collections.deque()
        while slot.waiters:
            w = slot.waiters.popleft()
            if w.future.done():
                continue
            if slot.drain_before is not None and w.seq >= slot.drain_before:
                keep.append(w)
                continue
            w.future.set_result(self._lease(slot))
        slot.waiters = keep

    def _want(self, slot: Slot) -> Want:
        spec = slot.model.spec
        return Want(model=spec.id, task=spec.task, placements=spec.placements)

    def _policy(self) -> Policy:
        return Policy(
            max_resident_per_task=self.config.max_resident_per_task,
            min_residency_s=self.config.min_residency_s,
            now=self._clock(),
        )

    def _residents(self) -> list[Resident]:
        """The policy's view of memory holders. Requests queued for a resident model count as in
        flight (anti-thrash: they are served before it may be moved), except those that arrived
        after the model started draining for a swap."""
        out = []
        for s in self._slots.values():
            if not s.holds_memory():
                continue
            state = (
                ResidentState.BUSY
                if s.state in _BUSY
                else ResidentState.OFFLOADED
                if s.state == ModelState.OFFLOADED
                else ResidentState.RESIDENT
            )
            busy = s.in_flight
            if s.state == ModelState.RESIDENT:
                busy += sum(1 for w in s.waiters if s.drain_before is None or w.seq < s.drain_before)
            elif s.state == ModelState.OFFLOADED:
                busy += len(s.waiters)  # wanted right now: never a victim
            out.append(
                Resident(
                    model=s.id,
                    task=s.model.spec.task,
                    state=state,
                    gpu=s.gpu,
                    gpu_bytes=s.gpu_bytes,
                    host_bytes=s.host_bytes,
                    in_flight=busy,
                    last_used=s.last_used,
                    loaded_at=s.loaded_at,
                    pinned=s.pinned,
                    offload_bytes=s.offloadable(),
                )
            )
        return out

    def _fail_waiters(self, slot: Slot, error: Exception) -> None:
        while slot.waiters:
            w = slot.waiters.popleft()
            if not w.future.done():
                w.future.set_exception(error)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- transitions ---------------------------------------------------------------------------
    def _begin_admit(self, slot: Slot, decision: Admit) -> None:
        """Book the memory synchronously (so the next decision sees it), then load in a task."""
        device = "cpu" if decision.gpu is None else f"cuda:{decision.gpu}"
        grant = Grant(
            placement=decision.placement, device=device, gpu_bytes=decision.gpu_bytes, host_bytes=decision.host_bytes
        )
        from_offload = slot.state == ModelState.OFFLOADED
        slot.state, slot.grant, slot.gpu = ModelState.LOADING, grant, decision.gpu
        slot.gpu_bytes, slot.host_bytes = decision.gpu_bytes, decision.host_bytes
        slot.error = None
        slot.load_request_id = slot.waiters[0].request_id if slot.waiters else request_id.current.get()
        victims = [self._start_offload(self._slots[name]) for name in decision.offload]
        victims += [self._start_unload(self._slots[name]) for name in decision.evict]
        for name in decision.offload:
            self.observer.evicted(name, "offload")
        for name in decision.evict:
            self.observer.evicted(name, "unload")
        self._spawn(self._admit(slot, grant, decision, victims, from_offload))

    async def _admit(self, slot: Slot, grant: Grant, decision: Admit, victims: list[Any], from_offload: bool) -> None:
        device = grant.device
        started = time.perf_counter()
        kind = "load"
        try:
            if victims:
                await asyncio.gather(*victims)
            started = time.perf_counter()  # the victims' moves are timed as their own transitions
            if from_offload and isinstance(slot.backend, Relocatable):
                kind = "reload"
                log.info("%s: moving back from host RAM to %s (%s)", slot.id, device, decision.placement)
                await slot.run(relocate_backend, slot.model.spec, slot.backend, grant)
            else:
                if slot.backend is not None:  # offloaded but cannot relocate: start afresh
                    await slot.run(slot.backend.unload)
                log.info(
                    "%s: loading on %s (%s, %s GPU / %s host)",
                    slot.id,
                    device,
                    decision.placement,
                    gib(decision.gpu_bytes),
                    gib(decision.host_bytes),
                )
                slot.backend = await slot.run(self._construct_and_load, slot, grant)
        except Exception as exc:
            log.exception("%s: load failed", slot.id)
            backend, slot.backend = slot.backend, None
            if backend is not None:
                await self._quiet_unload(slot, backend)
            self._clear(slot, ModelState.FAILED)
            # Clients see no exception text: it names weights paths and internals. The log has it all;
            # missing or broken weights still name the key to fix (not its value).
            cause = (
                f"its weights (models.{slot.id}.weights) are missing or not a usable model folder"
                if isinstance(exc, WeightsError)
                else "the load failed"
            )
            slot.error = f"{cause}; the server log has the details"
            slot.error_request_id = slot.load_request_id  # the log lines of the failure carry it
            self._fail_waiters(slot, ModelLoadFailed(f"Loading '{slot.id}' failed: {slot.error}."))
            self.observer.transition(slot.id, kind, time.perf_counter() - started, ok=False)
        else:
            self.observer.transition(slot.id, kind, time.perf_counter() - started)
            slot.state = ModelState.RESIDENT
            slot.loaded_at = slot.last_used = self._clock()
            log.info("%s: resident on %s after %.2fs", slot.id, device, time.perf_counter() - started)
            self._arm_ttl(slot)  # its requests may all have gone while it loaded
        finally:
            self._kick()

    def _construct_and_load(self, slot: Slot, grant: Grant) -> Backend:
        return load_backend(self.weights.spec_to_load(slot.model), grant, plugin=slot.model.plugin)

    def _start_offload(self, slot: Slot) -> Any:
        """Mark ``slot`` offloading now (so no other decision touches it); returns the move to await."""
        backend = slot.backend
        # The policy only offloads models whose backend is Relocatable (``offloadable()``).
        assert isinstance(backend, Relocatable) and slot.offloadable() is not None
        slot.state = ModelState.OFFLOADING
        grant = Grant(
            placement=PlacementKind.CPU, device="cpu", gpu_bytes=0, host_bytes=slot.offloadable() or 0, parked=True
        )
        return self._offload(slot, backend, grant)

    async def _offload(self, slot: Slot, backend: Relocatable, grant: Grant) -> None:
        log.info("%s: offloading to host RAM", slot.id)
        started = time.perf_counter()
        try:
            # The backend captured when the offload was decided: ``slot.backend`` is typed as
            # optional and re-reading it here would not say which backend is being moved.
            await slot.run(relocate_backend, slot.model.spec, backend, grant)
        except Exception:
            log.exception("%s: offload failed; unloading instead", slot.id)
            self.observer.transition(slot.id, "offload", time.perf_counter() - started, ok=False)
            await self._start_unload(slot)
            return
        self.observer.transition(slot.id, "offload", time.perf_counter() - started)
        slot.state, slot.grant, slot.gpu = ModelState.OFFLOADED, grant, None
        slot.gpu_bytes, slot.host_bytes = 0, grant.host_bytes
        self._arm_ttl(slot)
        self._kick()

    def _start_unload(self, slot: Slot) -> Any:
        """Detach the backend and mark ``slot`` unloading now; returns the unload to await."""
        backend, slot.backend = slot.backend, None
        slot.state = ModelState.UNLOADING
        self._cancel_ttl(slot)
        return self._unload(slot, backend)

    async def _unload(self, slot: Slot, backend: Backend | None) -> None:
        started = time.perf_counter()
        if backend is not None:
            await self._quiet_unload(slot, backend)
        self.observer.transition(slot.id, "unload", time.perf_counter() - started)
        self._clear(slot, ModelState.AVAILABLE)
        log.info("%s: unloaded", slot.id)
        self._kick()

    async def _quiet_unload(self, slot: Slot, backend: Backend) -> None:
        try:
            await slot.run(backend.unload)
        except Exception:
            log.exception("%s: unload raised", slot.id)

    def _clear(self, slot: Slot, state: ModelState) -> None:
        slot.state, slot.grant, slot.gpu = state, None, None
        slot.gpu_bytes = slot.host_bytes = 0
        slot.drain_before = None
        self._cancel_ttl(slot)

    def _timeout_message(self, slot: Slot) -> str:
        holders = [s.describe() for s in self._slots.values() if s.holds_memory() and s is not slot]
        held = "; ".join(holders) if holders else "nothing (the load itself is slow)"
        return (
            f"Timed out after {self.config.admission_timeout_s:g}s waiting to admit '{slot.id}' "
            f"({slot.state}). Memory is held by: {held}."
        )
