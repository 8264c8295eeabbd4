"""Tests of host.toolkit.batcher.DynamicBatcher with pure-Python prepare/run functions (no torch)."""

from __future__ import annotations

import asyncio
import gc
import random
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence

import pytest

from host.contract.errors import InvalidRequest, QueueFull
from host.toolkit.batcher import BUDGET_CHUNK, BatcherClosed, Budget, DynamicBatcher

Item = tuple[str, int]  # (label, length in "tokens")


class Recorder:
    """prepare/run functions that record what they saw; ``run`` can be gated and poisoned."""

    def __init__(self) -> None:
        self.batches: list[list[Item]] = []
        self.prepared_chunks: list[list[Item]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.running = threading.Event()  # set while run() executes (blocked or not)
        self.prepare_during_run = threading.Event()
        self.lock = threading.Lock()

    def prepare(self, items: Sequence[Item]) -> list[Item]:
        if self.running.is_set():
            self.prepare_during_run.set()
        for label, _length in items:
            if label.startswith("bad-prepare"):
                raise InvalidRequest(f"{label} is invalid", param="input")
        with self.lock:
            self.prepared_chunks.append(list(items))
        return list(items)

    def run(self, batch: list[Item]) -> list[str]:
        self.running.set()
        try:
            assert self.gate.wait(10), "test gate never opened"
            with self.lock:
                self.batches.append(list(batch))
            if any(label.startswith("poison") for label, _ in batch):
                raise RuntimeError("poisoned batch")
            return [f"out:{label}" for label, _ in batch]
        finally:
            self.running.clear()


def length(item: Item) -> int:
    return item[1]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def make(recorder: Recorder) -> Iterator:
    made: list[DynamicBatcher] = []

    def build(**kwargs) -> DynamicBatcher:
        opts = dict(max_batch_tokens=1000, max_batch_size=32, name="test")
        opts.update(kwargs)
        batcher = DynamicBatcher(prepare=recorder.prepare, length=length, run=recorder.run, **opts)
        made.append(batcher)
        return batcher

    yield build
    recorder.gate.set()
    for b in made:
        b.close()


def items(prefix: str, lengths: Sequence[int]) -> list[Item]:
    return [(f"{prefix}{i}", n) for i, n in enumerate(lengths)]


async def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.002)


async def test_results_follow_input_order(make, recorder: Recorder) -> None:
    batcher = make()
    rng = random.Random(1)
    req = items("a", [rng.randint(1, 50) for _ in range(100)])
    out = await batcher.submit(req)
    assert out == [f"out:{label}" for label, _ in req]
    assert await batcher.submit([]) == []


async def test_batches_group_by_length_within_budget(make, recorder: Recorder) -> None:
    batcher = make(max_batch_tokens=400, max_batch_size=16)
    recorder.gate.clear()
    blocker = asyncio.ensure_future(batcher.submit([("blocker", 1)]))
    await wait_for(recorder.running.is_set)  # the compute thread is busy: the rest piles up
    rng = random.Random(7)
    lengths = [rng.randint(1, 100) for _ in range(300)]
    req = items("x", lengths)
    task = asyncio.ensure_future(batcher.submit(req))
    await wait_for(lambda: len(batcher._pending) == len(req))
    recorder.gate.set()
    out = await task
    await blocker
    assert out == [f"out:{label}" for label, _ in req]
    batches = [b for b in recorder.batches if b[0][0] != "blocker"]
    assert sum(len(b) for b in batches) == len(req)
    real = padded = 0
    for batch in batches:
        widest = max(n for _, n in batch)
        assert len(batch) <= 16
        assert len(batch) * widest <= 400
        real += sum(n for _, n in batch)
        padded += widest * len(batch)
    # Sorted by length, the padding waste is small; arrival-order chunks would waste ~50%.
    assert padded / real < 1.15, (padded, real)
    fifo_padded = sum(max(lengths[i : i + 4]) * len(lengths[i : i + 4]) for i in range(0, len(lengths), 4))
    assert fifo_padded / real > 1.3  # the comparison is meaningful
    stats = batcher.stats
    assert stats.real_tokens == real + 1 and stats.padded_tokens == padded + 1


async def test_over_long_item_runs_alone(make, recorder: Recorder) -> None:
    batcher = make(max_batch_tokens=100, max_batch_size=8)
    recorder.gate.clear()
    blocker = asyncio.ensure_future(batcher.submit([("blocker", 1)]))
    await wait_for(recorder.running.is_set)
    req = [("long", 500), ("s0", 5), ("s1", 5)]
    task = asyncio.ensure_future(batcher.submit(req))
    await wait_for(lambda: len(batcher._pending) == 3)
    recorder.gate.set()
    assert await task == ["out:long", "out:s0", "out:s1"]
    await blocker
    assert [("long", 500)] in recorder.batches
    assert [("s0", 5), ("s1", 5)] in recorder.batches


async def test_large_request_is_split_and_chunked(make, recorder: Recorder) -> None:
    batcher = make(max_batch_tokens=10_000, max_batch_size=16, prepare_chunk=100)
    req = items("big", [3] * 1000)
    out = await batcher.submit(req)
    assert out == [f"out:{label}" for label, _ in req]
    assert len(recorder.batches) >= 1000 // 16
    assert all(len(b) <= 16 for b in recorder.batches)
    assert len(recorder.prepared_chunks) == 10 and all(len(c) == 100 for c in recorder.prepared_chunks)


async def test_prepare_overlaps_compute(make, recorder: Recorder) -> None:
    batcher = make(max_batch_size=4)
    recorder.gate.clear()
    first = asyncio.ensure_future(batcher.submit(items("a", [5] * 4)))
    await wait_for(recorder.running.is_set)
    second = asyncio.ensure_future(batcher.submit(items("b", [5] * 4)))
    # The second request is tokenised while the first batch is still computing.
    await wait_for(recorder.prepare_during_run.is_set)
    recorder.gate.set()
    assert len(await first) == 4 and len(await second) == 4


async def test_concurrent_requests_share_batches(make, recorder: Recorder) -> None:
    batcher = make(max_batch_tokens=100_000, max_batch_size=64)
    rng = random.Random(3)
    recorder.gate.clear()
    blocker = asyncio.ensure_future(batcher.submit([("blocker", 1)]))
    await wait_for(recorder.running.is_set)
    reqs = [items(f"r{r}-", [rng.randint(1, 40) for _ in range(rng.randint(1, 6))]) for r in range(60)]
    tasks = [asyncio.ensure_future(batcher.submit(req)) for req in reqs]
    await wait_for(lambda: len(batcher._pending) == sum(map(len, reqs)))
    recorder.gate.set()
    outs = await asyncio.gather(*tasks)
    await blocker
    for req, out in zip(reqs, outs):
        assert out == [f"out:{label}" for label, _ in req]
    total = sum(map(len, reqs))
    assert batcher.stats.batches - 1 <= -(-total // 64)  # packed full, not one batch per request
    assert batcher.stats.max_batch_rows == 64
    assert batcher.queued == 0


async def test_many_concurrent_requests_unblocked(make) -> None:
    batcher = make(max_batch_tokens=500, max_batch_size=8)
    rng = random.Random(11)
    reqs = [items(f"q{r}-", [rng.randint(1, 60) for _ in range(rng.randint(1, 30))]) for r in range(200)]
    outs = await asyncio.gather(*(batcher.submit(req) for req in reqs))
    for req, out in zip(reqs, outs):
        assert out == [f"out:{label}" for label, _ in req]
    assert batcher.queued == 0


async def test_run_error_fails_only_affected_requests(make, recorder: Recorder) -> None:
    batcher = make(max_batch_size=1)  # one item per batch: requests never share a batch
    bad = asyncio.ensure_future(batcher.submit([("ok-a", 1), ("poison", 1), ("ok-b", 1)]))
    good = asyncio.ensure_future(batcher.submit(items("g", [2] * 5)))
    with pytest.raises(RuntimeError, match="poisoned"):
        await asyncio.wait_for(bad, 5)
    assert await asyncio.wait_for(good, 5) == [f"out:g{i}" for i in range(5)]
    # The worker survives and the failed request's remaining item was dropped.
    assert await batcher.submit([("after", 1)]) == ["out:after"]
    assert ("ok-b", 1) not in [x for b in recorder.batches for x in b]
    assert batcher.stats.failed_batches == 1
    assert batcher.queued == 0


async def test_shared_batch_failure_fails_every_request_in_it(make, recorder: Recorder) -> None:
    batcher = make()
    recorder.gate.clear()
    blocker = asyncio.ensure_future(batcher.submit([("blocker", 1)]))
    await wait_for(recorder.running.is_set)
    a = asyncio.ensure_future(batcher.submit([("poison", 3)]))
    b = asyncio.ensure_future(batcher.submit([("fine", 3)]))
    await wait_for(lambda: len(batcher._pending) == 2)
    recorder.gate.set()
    await blocker
    results = await asyncio.wait_for(asyncio.gather(a, b, return_exceptions=True), 5)
    assert all(isinstance(r, RuntimeError) for r in results)  # both were in the poisoned batch
    assert await batcher.submit([("later", 1)]) == ["out:later"]


async def test_prepare_error_fails_only_that_request(make) -> None:
    batcher = make()
    bad = asyncio.ensure_future(batcher.submit([("fine", 1), ("bad-prepare", 1)]))
    good = asyncio.ensure_future(batcher.submit([("fine2", 1)]))
    with pytest.raises(InvalidRequest, match="bad-prepare is invalid"):
        await asyncio.wait_for(bad, 5)
    assert await asyncio.wait_for(good, 5) == ["out:fine2"]
    assert batcher.queued == 0


async def test_length_mismatch_is_an_error_not_a_hang(recorder: Recorder) -> None:
    batcher = DynamicBatcher(
        prepare=recorder.prepare, length=length, run=lambda batch: [], max_batch_tokens=100, max_batch_size=4
    )
    try:
        with pytest.raises(RuntimeError, match="run returned 0 results"):
            await asyncio.wait_for(batcher.submit([("a", 1)]), 5)
    finally:
        batcher.close()


async def test_close_fails_pending_and_refuses_new(make, recorder: Recorder) -> None:
    batcher = make(max_batch_size=1)
    recorder.gate.clear()
    running = asyncio.ensure_future(batcher.submit([("first", 1)]))
    await wait_for(recorder.running.is_set)
    waiting = asyncio.ensure_future(batcher.submit([("second", 1), ("third", 1)]))
    await wait_for(lambda: len(batcher._pending) == 2)
    closer = threading.Thread(target=batcher.close)
    closer.start()
    with pytest.raises(BatcherClosed):
        await asyncio.wait_for(waiting, 5)
    recorder.gate.set()  # the batch in progress finishes and is delivered
    assert await asyncio.wait_for(running, 5) == ["out:first"]
    closer.join(5)
    assert not closer.is_alive()
    assert not any(t.is_alive() for t in batcher._threads)
    with pytest.raises(BatcherClosed):
        await batcher.submit([("late", 1)])
    batcher.close()  # idempotent


async def test_cancelled_request_is_dropped(make, recorder: Recorder) -> None:
    batcher = make(max_batch_size=2)
    recorder.gate.clear()
    blocker = asyncio.ensure_future(batcher.submit([("blocker", 1)]))
    await wait_for(recorder.running.is_set)
    doomed = asyncio.ensure_future(batcher.submit(items("gone", [1] * 10)))
    kept = asyncio.ensure_future(batcher.submit([("kept", 1)]))
    await wait_for(lambda: len(batcher._pending) == 11)
    doomed.cancel()
    await asyncio.sleep(0)
    assert batcher.queued == 1
    recorder.gate.set()
    assert await kept == ["out:kept"]
    await blocker
    ran = [label for b in recorder.batches for label, _ in b]
    assert not any(label.startswith("gone") for label in ran)


async def test_max_pending_gives_queue_full(make, recorder: Recorder) -> None:
    batcher = make(max_pending=10)
    recorder.gate.clear()
    blocker = asyncio.ensure_future(batcher.submit([("blocker", 1)]))
    await wait_for(recorder.running.is_set)
    first = asyncio.ensure_future(batcher.submit(items("f", [1] * 8)))
    await wait_for(lambda: batcher.queued == 8)
    with pytest.raises(QueueFull) as info:
        await batcher.submit(items("over", [1] * 5))
    assert info.value.status == 429 and info.value.retry_after
    recorder.gate.set()
    assert len(await first) == 8
    await blocker
    # An empty batcher accepts even a request larger than the bound (it is never starved).
    assert len(await batcher.submit(items("huge", [1] * 50))) == 50


def test_invalid_limits_rejected(recorder: Recorder) -> None:
    with pytest.raises(ValueError):
        DynamicBatcher(prepare=recorder.prepare, length=length, run=recorder.run, max_batch_tokens=0, max_batch_size=1)


def test_cut_batches_bounds_and_overhead() -> None:
    from host.toolkit.batcher import cut_batches

    lengths = sorted([1, 1, 2, 2, 2, 10, 10, 11, 50, 300])
    groups = cut_batches(lengths, max_batch_tokens=100, max_batch_size=4)
    assert [list(g) for g in groups] == [[0, 1, 2, 3], [4, 5, 6, 7], [8], [9]]
    assert [i for g in groups for i in g] == list(range(len(lengths)))
    # With a small per-batch overhead, rows are not padded from 2 to 10 tokens (3 rows x 8 > 5).
    groups = cut_batches(lengths, max_batch_tokens=1000, max_batch_size=64, overhead_tokens=5)
    assert [[lengths[i] for i in g] for g in groups] == [[1, 1, 2, 2, 2], [10, 10, 11], [50], [300]]
    # A large overhead packs everything the budget allows.
    groups = cut_batches(lengths, max_batch_tokens=10_000, max_batch_size=64, overhead_tokens=10_000)
    assert [list(g) for g in groups] == [list(range(10))]
    assert cut_batches([], max_batch_tokens=10, max_batch_size=2) == []


def test_cut_batches_with_a_batch_cost() -> None:
    """A backend's own cost of a batch replaces rows x longest as the one measure of the budget."""
    from host.toolkit.batcher import cut_batches

    lengths = [1, 1, 1, 1, 1, 1]
    extra = [0, 0, 5, 0, 5, 0]  # e.g. states each row holds besides its padded tokens

    def cost(rows: range) -> int:
        return len(rows) * max(lengths[i] for i in rows) + sum(extra[i] for i in rows)

    def new_cost() -> Callable[[int], int]:
        added: list[int] = []

        def add(i: int) -> int:
            added.append(i)
            return cost(range(added[0], i + 1))

        return add

    groups = cut_batches(lengths, max_batch_tokens=8, max_batch_size=64, cost=new_cost)
    assert [list(g) for g in groups] == [[0, 1, 2], [3, 4, 5]]  # rows x longest alone would take all six
    assert all(cost(g) <= 8 for g in groups)
    # An item alone over the budget still forms a batch of its own.
    assert [list(g) for g in cut_batches([1, 1], max_batch_tokens=1, max_batch_size=4, cost=lambda: lambda i: 99)] == [
        [0],
        [1],
    ]


async def test_overhead_splits_pending_items_by_length(make, recorder: Recorder) -> None:
    batcher = make(max_batch_tokens=10_000, max_batch_size=64, batch_overhead_tokens=8)
    recorder.gate.clear()
    blocker = asyncio.ensure_future(batcher.submit([("blocker", 1)]))
    await wait_for(recorder.running.is_set)
    req = items("m", [5, 60, 5, 61, 6, 60])
    task = asyncio.ensure_future(batcher.submit(req))
    await wait_for(lambda: len(batcher._pending) == 6)
    recorder.gate.set()
    assert await task == [f"out:{label}" for label, _ in req]
    await blocker
    shapes = sorted(sorted(n for _, n in b) for b in recorder.batches[1:])
    assert shapes == [[5, 5, 6], [60, 60, 61]]


# -- a request's token budget (issue 26) --------------------------------------------------------------


async def test_a_request_over_its_budget_fails_before_any_batch_runs(make, recorder: Recorder) -> None:
    batcher = make(prepare_chunk=256)
    budget = Budget(100, lambda counted: InvalidRequest(f"over: {counted}", param="input"))
    with pytest.raises(InvalidRequest, match=f"^over: {10 * BUDGET_CHUNK}$"):
        await batcher.submit(items("big", [10] * 200), budget)
    assert recorder.batches == []  # nothing of it ran
    # it stopped preparing once over: after its first chunk of BUDGET_CHUNK items
    assert [len(c) for c in recorder.prepared_chunks] == [BUDGET_CHUNK]
    assert batcher.queued == 0
    # a request within its budget runs, in order; so does one without a budget
    within = items("ok", [10] * 70)
    assert await batcher.submit(within, Budget(700, budget.error)) == [f"out:{label}" for label, _ in within]
    assert await batcher.submit(items("free", [10] * 200)) == [f"out:free{i}" for i in range(200)]


async def test_a_budget_counts_tokens_not_lengths(recorder: Recorder) -> None:
    batcher = DynamicBatcher(
        prepare=recorder.prepare,
        length=length,
        run=recorder.run,
        tokens=lambda item: item[1] * 10,
        max_batch_tokens=1000,
        max_batch_size=32,
    )
    try:
        with pytest.raises(InvalidRequest):
            await batcher.submit(items("x", [5, 5, 5]), Budget(100, lambda n: InvalidRequest(str(n))))
        assert await batcher.submit(items("y", [5, 5]), Budget(100, lambda n: InvalidRequest(str(n)))) == [
            "out:y0",
            "out:y1",
        ]
    finally:
        batcher.close()


async def test_a_request_over_its_budget_is_freed_at_once(make, recorder: Recorder) -> None:
    # Issue 26: its held-back items pointed back at it, a cycle that only a full garbage collection
    # frees; rejected 25 MB rerank requests grew the server by 32-59 MB each.
    class Held(list):  # a weakly referenceable item
        pass

    batcher = make(prepare_chunk=256)
    first = Held(("held0", 10))
    alive = weakref.ref(first)
    request = [first, *(Held((f"held{i}", 10)) for i in range(1, 200))]
    gc.disable()
    try:
        try:
            await batcher.submit(request, Budget(500, lambda n: InvalidRequest(str(n))))  # over in its 2nd chunk
        except InvalidRequest as exc:
            exc.__traceback__ = None  # as the HTTP error edge does (host.routes.errors)
        del request, first
        recorder.prepared_chunks.clear()
        assert alive() is None
    finally:
        gc.enable()
