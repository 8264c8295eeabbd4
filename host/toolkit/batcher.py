"""Dynamic batching for embedding-style backends (embeddings, rerank): pre / core / post.

Modelled on Infinity's ``batch_handler``. Work flows through three stages:

1. **submit** (event loop): a request hands over its items and awaits one future.
2. **prepare** (the batcher's prepare thread): ``prepare(items)`` turns raw items into
   prepared ones (tokenisation, validation), one chunk of at most ``prepare_chunk`` items at a
   time, and adds them to the pending pool. An exception fails that request only.
3. **core** (the batcher's compute thread): repeatedly takes ONE batch out of the pool and calls
   ``run(batch)`` (the forward pass, pooling, normalisation). Results are written back to their
   request by index; a request's future resolves when its last item is done.

Because stages 2 and 3 run on different threads, tokenising the next work overlaps the forward
pass of the current batch (tokenizers and torch release the GIL while they work).

How a batch is chosen. The compute thread looks at a window of the oldest pending items (at
most ``window`` of them), sorts it by ``length`` and cuts it greedily into batches whose padded
size — ``rows × longest row`` — stays within ``max_batch_tokens``, whose rows stay within
``max_batch_size`` and, given ``batch_overhead_tokens``, whose padding stays below the cost of a
separate forward pass (:func:`cut_batches`); it runs the batch that holds the oldest item. Length
grouping keeps padding waste low; always serving the oldest item's batch means no item starves.
A single item longer than ``max_batch_tokens`` runs in a batch of its own. Items of concurrent
requests share batches, and a request's items may be spread over many batches: ``submit``
always returns the results in the order of the items it was given.

A request may carry a token budget (``submit(items, budget=...)``): its items are then held back
until all of them are prepared (in chunks of at most ``BUDGET_CHUNK``), their ``tokens`` counted
as they are, and the request fails with the budget's error as soon as the count is over it — before
any batch of it runs. Requests without a budget start running while the rest is still prepared.

Failures never hang a future: an exception from ``run`` fails exactly the requests that had an
item in that batch (their other items are dropped) and the worker goes on; :meth:`DynamicBatcher.close`
stops both threads and fails every request still waiting. A request whose awaiting task is
cancelled (client gone) has its pending items dropped.

``submit`` never ends while one of its items is inside a running ``run`` call: a failure is
delivered, and a cancellation re-raised, only once that batch has finished. A caller that holds a
model lease around ``submit`` thus releases it only after the model has stopped working for it,
so the weights are never unloaded or moved under a running batch. ``max_pending`` bounds the items waiting
in the batcher: beyond it ``submit`` raises :class:`~host.contract.errors.QueueFull` (429).

The batcher is torch-free: ``prepare``/``length``/``run`` are plain callables, so it is tested
with pure-Python functions (``tests/test_batching.py``). Results must not depend on which batch
an item lands in: that is the ``run`` function's job (left padding, per-row positions); the
batcher's part is never to reorder results within a request.

Example::

    batcher = DynamicBatcher(prepare=tokenise, length=len, run=forward,
                             max_batch_tokens=16384, max_batch_size=64, name="embed")
    vectors = await batcher.submit(["first text", "second text"])
    ...
    batcher.close()
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from host.contract.backend import BatcherStats
from host.contract.errors import QueueFull, ShuttingDown

log = logging.getLogger("plughost.batching")

Item = TypeVar("Item")
Prepared = TypeVar("Prepared")
Result = TypeVar("Result")


#: Items per ``prepare`` call of a request with a budget: an over-budget request is found out after
#: tokenising at most this many items past its budget.
BUDGET_CHUNK = 32


@dataclass(frozen=True)
class Budget:
    """A request's bound on its prepared items' ``tokens`` in all; ``error(counted)`` is raised when
    the count goes over ``tokens`` (``counted``: the tokens counted so far)."""

    tokens: int
    error: Callable[[int], BaseException]


class BatcherClosed(ShuttingDown):
    """The batcher was closed (the model is being unloaded) before the request finished (503)."""


def cut_batches(
    lengths: Sequence[int],
    *,
    max_batch_tokens: int,
    max_batch_size: int,
    overhead_tokens: int | None = None,
    cost: Callable[[], Callable[[int], int]] | None = None,
) -> list[range]:
    """Cut items sorted by ascending ``lengths`` into consecutive batches (as index ranges).

    A batch grows while its cost stays within ``max_batch_tokens`` and its rows within
    ``max_batch_size``. The cost of a batch is ``rows × longest`` or, given ``cost``, what a
    fresh ``add = cost()`` returns for each index added to the batch (the batch's tokens so far:
    a backend whose batch holds more than its padded rows, such as shared key/value states,
    budgets it in one place, in O(1) per item). With ``overhead_tokens`` (the fixed
    cost of one forward pass, in tokens' worth of compute) a batch also ends before its
    padding — ``rows × longest - Σ lengths`` — would exceed that cost: padding is pure waste,
    so a batch pads no more than a separate pass would cost. On a CPU that cost is small
    (evenly long batches win); on a GPU it is large and batches stay full. ``None``: bounded
    by the budgets only. An item longer than the token budget forms a batch of its own.
    """
    batches: list[range] = []
    start, total = 0, 0
    add = cost() if cost is not None else None
    for i, n in enumerate(lengths):
        rows = i - start
        grown = (rows + 1) * n if add is None else add(i)
        if rows and (
            rows + 1 > max_batch_size
            or grown > max_batch_tokens
            or (overhead_tokens is not None and (rows + 1) * n - (total + n) > overhead_tokens)
        ):
            batches.append(range(start, i))
            start, total = i, 0
            if cost is not None:
                add = cost()
                add(i)
        total += n
    if start < len(lengths):
        batches.append(range(start, len(lengths)))
    return batches


class _Request:
    """One ``submit`` call: its items, the future its caller awaits, and the results so far."""

    __slots__ = (
        "budget",
        "counted",
        "done",
        "failure",
        "future",
        "idle",
        "items",
        "loop",
        "queued",
        "remaining",
        "results",
        "running",
        "seq",
        "staged",
    )

    def __init__(
        self,
        seq: int,
        items: list[Any],
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[list[Any]],
        budget: Budget | None = None,
    ) -> None:
        self.seq = seq
        self.items = items
        self.loop = loop
        self.future = future
        self.budget = budget
        self.counted = 0  # tokens of the items prepared so far (requests with a budget)
        self.staged: list[_Entry] = []  # prepared items held back until all are (requests with a budget)
        self.results: list[Any] = [None] * len(items)
        self.remaining = len(items)  # items without a result yet
        self.queued = len(items)  # items not yet taken into a batch (counted in max_pending)
        self.done = False  # resolved, failed or cancelled: its pending items are dropped
        self.running = 0  # items inside the batch being run now
        self.failure: BaseException | None = None  # delivered once ``running`` is back to 0
        self.idle: asyncio.Future[None] | None = None  # a cancelled submit waits on it for its batch


class _Entry:
    """One prepared item waiting for the compute thread."""

    __slots__ = ("index", "length", "order", "prepared", "request")

    def __init__(self, request: _Request, index: int, prepared: Any, length: int, order: int) -> None:
        self.request = request
        self.index = index
        self.prepared = prepared
        self.length = length
        self.order = order  # global arrival order of items (request order, then index)


async def _outlive_cancellation(idle: asyncio.Future[None]) -> None:
    """Wait for ``idle`` even if the waiting task is cancelled again (the batch cannot be stopped)."""
    while not idle.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(idle)


def _resolve(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    """Set a future's outcome on its loop thread (a cancelled future is left alone)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


class DynamicBatcher(Generic[Item, Prepared, Result]):
    """Groups items of concurrent requests into length-sorted, token-budgeted batches.

    :param prepare: ``prepare(items) -> prepared`` (same length and order), run on the prepare
        thread, possibly on a slice of a request's items (so items should carry whatever an
        error message needs, such as their index in the request). Raise
        :class:`~host.contract.errors.InvalidRequest` for bad input: it fails that request only.
    :param length: the cost of a prepared item in tokens (its padded width in a batch).
    :param tokens: what a prepared item counts against a request's :class:`Budget` (default ``length``;
        e.g. the whole prompt where ``length`` leaves out a part that runs apart).
    :param cost: ``cost()`` starts a batch's cost: a function that takes the batch's next
        prepared item and returns the tokens of the batch so far, bounded by ``max_batch_tokens``
        (default ``rows × longest length``); see :func:`cut_batches`.
    :param run: ``run(batch) -> results`` (same length and order), run on the compute thread.
    :param max_batch_tokens: bound on ``rows × longest row`` of a batch.
    :param max_batch_size: bound on the rows of a batch.
    :param batch_overhead_tokens: the fixed cost of one ``run`` call in tokens' worth of work:
        a batch is cut before its padding would cost more (see :func:`cut_batches`).
        ``None``: batches are bounded by the budgets only.
    :param max_pending: bound on items queued in the batcher; beyond it ``submit`` raises
        :class:`~host.contract.errors.QueueFull`. ``None``: unbounded.
    :param prepare_chunk: items handed to one ``prepare`` call (large requests are cut so that
        their first batches can run while the rest is still being tokenised).
    :param window: how many of the oldest pending items a batch is chosen from
        (default ``8 × max_batch_size``).
    :param name: names the two threads (``<name>-prepare``, ``<name>-compute``) and log lines.

    ``max_batch_tokens``, ``max_batch_size`` and ``batch_overhead_tokens`` are read for every
    batch, so a backend may change them while serving (e.g. after moving between GPU and CPU).
    """

    def __init__(
        self,
        *,
        prepare: Callable[[Sequence[Item]], Sequence[Prepared]],
        length: Callable[[Prepared], int],
        run: Callable[[list[Prepared]], Sequence[Result]],
        tokens: Callable[[Prepared], int] | None = None,
        cost: Callable[[], Callable[[Prepared], int]] | None = None,
        max_batch_tokens: int,
        max_batch_size: int,
        batch_overhead_tokens: int | None = None,
        max_pending: int | None = None,
        prepare_chunk: int = 256,
        window: int | None = None,
        name: str = "batcher",
    ) -> None:
        if max_batch_tokens < 1 or max_batch_size < 1 or prepare_chunk < 1:
            raise ValueError("max_batch_tokens, max_batch_size and prepare_chunk must be >= 1")
        self._prepare = prepare
        self._length = length
        self._tokens = tokens or length
        self._run = run
        self._cost = cost
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.batch_overhead_tokens = batch_overhead_tokens
        self.max_pending = max_pending
        self.prepare_chunk = prepare_chunk
        self.window = window if window is not None else 8 * max_batch_size
        self.name = name
        self.stats = BatcherStats()
        # One lock guards everything below; the two conditions wake the two threads.
        self._lock = threading.Lock()
        self._to_prepare: collections.deque[_Request] = collections.deque()
        self._prepare_ready = threading.Condition(self._lock)
        self._pending: list[_Entry] = []  # arrival order
        self._compute_ready = threading.Condition(self._lock)
        self._queued_items = 0  # items submitted and not yet taken into a batch (or dropped)
        self._closed = False
        self._seq = itertools.count()
        self._order = itertools.count()
        self._threads = [
            threading.Thread(target=self._prepare_loop, name=f"{name}-prepare", daemon=True),
            threading.Thread(target=self._compute_loop, name=f"{name}-compute", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    # -- public API ----------------------------------------------------------------------------
    async def submit(self, items: Sequence[Item], budget: Budget | None = None) -> list[Result]:
        """Process ``items`` (in as many batches as needed) and return their results in order.

        Raises what ``prepare`` or ``run`` raised for this request, the error of its ``budget``
        (before any of its batches runs), :class:`QueueFull` when the batcher is over
        ``max_pending``, :class:`BatcherClosed` once it is closed.
        """
        items = list(items)
        if not items:
            return []
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        with self._lock:
            if self._closed:
                raise BatcherClosed(f"{self.name}: the model is being unloaded; retry the request.")
            if (
                self.max_pending is not None
                and self._queued_items
                and self._queued_items + len(items) > self.max_pending
            ):
                raise QueueFull(
                    f"{self.name}: {self._queued_items} inputs are already waiting "
                    f"(limit {self.max_pending}); retry later.",
                    retry_after=1,
                )
            request = _Request(next(self._seq), items, loop, future, budget)
            self._queued_items += len(items)
            self.stats.requests += 1
            self._to_prepare.append(request)
            self._prepare_ready.notify()
        try:
            return await future
        except asyncio.CancelledError:
            with self._lock:
                self._finish(request)  # drop its pending items; nobody waits for them
                if request.running:
                    request.idle = loop.create_future()
            if request.idle is not None:
                await _outlive_cancellation(request.idle)
            raise

    def close(self) -> None:
        """Stop both threads and fail every unfinished request with :class:`BatcherClosed`.

        Waits for a batch that is running to end (its results are discarded if its requests
        were failed). Idempotent; callable from any thread.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            doomed = {id(r): r for r in self._to_prepare}
            doomed.update((id(e.request), e.request) for e in self._pending)
            self._to_prepare.clear()
            self._pending.clear()
            self._prepare_ready.notify_all()
            self._compute_ready.notify_all()
        error = self._closed_error()
        for request in doomed.values():
            self._fail(request, error)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=60)

    def _closed_error(self) -> BatcherClosed:
        return BatcherClosed(f"{self.name}: the model was unloaded before the request finished; retry it.")

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    @property
    def queued(self) -> int:
        """Items submitted and not yet taken into a batch."""
        return self._queued_items

    # -- the prepare stage ----------------------------------------------------------------------
    def _prepare_loop(self) -> None:
        while True:
            with self._lock:
                while not self._to_prepare and not self._closed:
                    self._prepare_ready.wait()
                if self._closed:
                    return
                request = self._to_prepare.popleft()
            self._prepare_request(request)
            del request  # not held (with its items) while the thread waits for the next one

    def _prepare_request(self, request: _Request) -> None:
        step = self.prepare_chunk if request.budget is None else min(self.prepare_chunk, BUDGET_CHUNK)
        for start in range(0, len(request.items), step):
            if request.done:
                request.staged = []
                return
            if self._closed:  # close() did not see this request: it was being prepared
                self._fail(request, self._closed_error())
                return
            chunk = request.items[start : start + step]
            try:
                prepared = list(self._prepare(chunk))
                if len(prepared) != len(chunk):
                    raise RuntimeError(f"prepare returned {len(prepared)} items for {len(chunk)}")
                lengths = [int(self._length(p)) for p in prepared]
                if request.budget is not None:
                    request.counted += sum(int(self._tokens(p)) for p in prepared)
            except BaseException as exc:
                self._fail(request, exc)
                return
            if request.budget is not None and request.counted > request.budget.tokens:
                self._fail(request, request.budget.error(request.counted))  # not raised: no frames held
                return
            entries = [_Entry(request, start + i, p, n, 0) for i, (p, n) in enumerate(zip(prepared, lengths))]
            last = start + step >= len(request.items)
            if request.budget is not None and not last:
                request.staged.extend(entries)  # none runs before all are counted
                continue
            entries, request.staged = request.staged + entries, []
            with self._lock:
                if not request.done and not self._closed:
                    for entry in entries:
                        entry.order = next(self._order)
                    self._pending.extend(entries)
                    self._compute_ready.notify()
                    continue
            if self._closed:
                self._fail(request, self._closed_error())
            return

    # -- the core stage -------------------------------------------------------------------------
    def _compute_loop(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    self._compute_ready.wait()
                if self._closed:
                    return
                batch = self._take_batch()
            if batch:
                self._run_batch(batch)
            del batch  # not held (with its requests' items) while the thread waits for the next one

    def _take_batch(self) -> list[_Entry]:
        """Remove and return the next batch (lock held); see the module docstring."""
        live = [e for e in self._pending if not e.request.done]
        window = live[: self.window]
        if not window:
            self._pending = []
            return []
        oldest = window[0]
        ordered = sorted(window, key=lambda e: (e.length, e.order))
        cost = self._cost

        def new_cost() -> Callable[[int], int]:
            assert cost is not None
            add = cost()
            return lambda i: add(ordered[i].prepared)

        groups = cut_batches(
            [e.length for e in ordered],
            max_batch_tokens=self.max_batch_tokens,
            max_batch_size=self.max_batch_size,
            overhead_tokens=self.batch_overhead_tokens,
            cost=None if cost is None else new_cost,
        )
        chosen = next(group for group in ([ordered[i] for i in g] for g in groups) if any(e is oldest for e in group))
        taken = {id(e) for e in chosen}
        self._pending = [e for e in live if id(e) not in taken]
        for entry in chosen:
            entry.request.queued -= 1
            entry.request.running += 1
        self._queued_items -= len(chosen)
        return chosen

    def _run_batch(self, batch: list[_Entry]) -> None:
        started = time.perf_counter()
        try:
            results = list(self._run([e.prepared for e in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"run returned {len(results)} results for a batch of {len(batch)}")
        except BaseException as exc:
            log.warning("%s: a batch of %d failed: %r", self.name, len(batch), exc)
            self.stats.failed_batches += 1
            self._stopped(batch)
            for request in {id(e.request): e.request for e in batch}.values():
                self._fail(request, exc)
            return
        longest = max(e.length for e in batch)
        stats = self.stats
        stats.run_seconds += time.perf_counter() - started
        stats.batches += 1
        stats.items += len(batch)
        stats.real_tokens += sum(e.length for e in batch)
        stats.padded_tokens += longest * len(batch)
        stats.max_batch_rows = max(stats.max_batch_rows, len(batch))
        self._stopped(batch)
        finished: list[_Request] = []
        with self._lock:
            for entry, result in zip(batch, results):
                request = entry.request
                if request.done:
                    continue
                request.results[entry.index] = result
                request.remaining -= 1
                if request.remaining == 0:
                    request.done = True
                    finished.append(request)
        for request in finished:
            self._deliver(request, request.results, None)

    def _stopped(self, batch: list[_Entry]) -> None:
        """The batch's ``run`` has returned: deliver what waited for it (failures, cancelled submits)."""
        idle: list[_Request] = []
        with self._lock:
            for entry in batch:
                request = entry.request
                request.running -= 1
                if not request.running and request.done:
                    idle.append(request)
        for request in dict.fromkeys(idle):
            if request.failure is not None:
                self._deliver(request, None, request.failure)
            if request.idle is not None:
                with contextlib.suppress(RuntimeError):
                    request.loop.call_soon_threadsafe(_resolve, request.idle, None, None)

    # -- completion -----------------------------------------------------------------------------
    def _finish(self, request: _Request) -> bool:
        """Mark ``request`` done and drop its queued items (lock held); False if it already was."""
        if request.done:
            return False
        request.done = True
        request.staged = []  # its entries point back at it: a cycle that would wait for a full GC
        if any(e.request is request for e in self._pending):
            self._pending = [e for e in self._pending if e.request is not request]
        with contextlib.suppress(ValueError):
            self._to_prepare.remove(request)
        self._queued_items -= request.queued
        request.queued = 0
        return True

    def _fail(self, request: _Request, error: BaseException) -> None:
        """Fail ``request``; while a batch runs items of it, the failure waits for that batch."""
        with self._lock:
            first = self._finish(request)
            if first and request.running:
                request.failure = error  # delivered by _stopped
                return
        if first:
            self._deliver(request, None, error)

    def _deliver(self, request: _Request, value: Any, error: BaseException | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            request.loop.call_soon_threadsafe(_resolve, request.future, value, error)
