"""The batched-backend base (host.toolkit.batched) with a pure-Python plugin: permit, errors, budgets."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence

import pytest

from host.contract.errors import BackendError, InvalidRequest
from host.contract.spec import Grant, PlacementKind, Task
from host.testing.fakes import fake_spec
from host.toolkit.batched import BatchBudgets, BatchedBackend, ModelNotLoaded
from host.toolkit.batcher import BatcherClosed

CPU = Grant(placement=PlacementKind.CPU, device="cpu", gpu_bytes=0, host_bytes=1 << 30)
GPU = Grant(placement=PlacementKind.GPU, device="cuda:0", gpu_bytes=1 << 30, host_bytes=0)


class Upper(BatchedBackend[str, str, str]):
    """Upper-cases words. ``gate`` (when set) holds every batch until it is opened; words starting
    with ``boom`` fail their batch; empty words are a client mistake."""

    kind = "upper"

    def __init__(self) -> None:
        super().__init__(fake_spec("upper", Task.EMBEDDING))
        self.gate: threading.Event | None = None
        self.running = threading.Event()  # set while a batch is inside run()
        self.ran: list[list[str]] = []
        self.events: list[str] = []
        self.moved_to: list[str] = []
        self.budgets_by_device = {
            "cpu": BatchBudgets(max_batch_tokens=8, max_batch_size=2),
            "gpu": BatchBudgets(max_batch_tokens=1000, max_batch_size=100),
        }

    def load_model(self, grant: Grant) -> None:
        self.events.append(f"load {grant.device}")

    def unload_model(self) -> None:
        self.events.append("unload")

    def move_model(self, grant: Grant) -> None:
        self.moved_to.append(grant.device)

    def prepare(self, items: Sequence[str]) -> list[str]:
        for item in items:
            if not item:
                if self.gate is not None:  # found while an earlier batch runs (the compute thread has it)
                    self.running.wait(10)
                raise InvalidRequest("an empty word", param="input")
        return list(items)

    def length(self, prepared: str) -> int:
        return len(prepared)

    def run(self, batch: list[str]) -> list[str]:
        self.running.set()
        try:
            if self.gate is not None:
                self.gate.wait(10)
            self.ran.append(list(batch))
            if any(word.startswith("boom") for word in batch):
                raise ValueError("the forward pass blew up")
            return [word.upper() for word in batch]
        finally:
            self.events.append("batch done")
            self.running.clear()

    async def shout(self, words: Sequence[str]) -> list[str]:
        return await self.submit(words)


@pytest.fixture
def upper() -> Iterator[Upper]:
    backend = Upper()
    backend.load(CPU)
    yield backend
    backend.unload()


async def _until(condition: threading.Event) -> None:
    assert await asyncio.to_thread(condition.wait, 10)


async def test_results_in_order_across_batches(upper: Upper) -> None:
    words = ["a", "bbb", "cc", "dddd", "e"]
    assert await upper.shout(words) == [w.upper() for w in words]
    assert len(upper.ran) > 1  # the CPU budget (2 rows) cut it


async def test_a_cancelled_request_returns_only_after_its_batch_has_stopped(upper: Upper) -> None:
    """The permit: a client that goes away mid-batch does not release its lease under the batch."""
    upper.gate = threading.Event()
    task = asyncio.ensure_future(upper.shout(["abc", "de", "fgh"]))
    await _until(upper.running)
    task.cancel()
    await asyncio.sleep(0.2)
    assert not task.done()  # still waiting for the batch that runs its items
    task.cancel()  # a second cancellation does not cut the wait short either
    await asyncio.sleep(0.1)
    assert not task.done()
    upper.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert upper.events[-1] == "batch done"
    assert len(upper.ran) == 1  # the items not yet in a batch were dropped


async def test_a_failing_batch_fails_only_its_own_requests(upper: Upper, caplog: pytest.LogCaptureFixture) -> None:
    good, bad = await asyncio.gather(upper.shout(["ok", "fine"]), upper.shout(["boom"]), return_exceptions=True)
    assert good == ["OK", "FINE"]
    assert isinstance(bad, BackendError) and bad.status == 500
    # The client learns which model failed, not the exception (issue 12, finding 7): the log has it.
    assert "upper" in str(bad) and "blew up" not in str(bad) and "ValueError" not in str(bad)
    assert "the forward pass blew up" in caplog.text
    assert await upper.shout(["again"]) == ["AGAIN"]  # the backend still serves


async def test_client_mistakes_stay_4xx(upper: Upper) -> None:
    with pytest.raises(InvalidRequest) as info:
        await upper.shout(["fine", ""])
    assert info.value.status == 400


async def test_a_late_failure_waits_for_the_running_batch_of_its_request() -> None:
    """A client mistake found in a later chunk, while an earlier batch of the same request runs,
    is reported only once that batch has stopped."""
    upper = Upper()
    upper.load(GPU)
    try:
        assert upper.batcher is not None
        upper.batcher.prepare_chunk = 2
        upper.gate = threading.Event()
        task = asyncio.ensure_future(upper.shout(["aa", "bb", "cc", ""]))
        await _until(upper.running)
        await asyncio.sleep(0.2)  # the second chunk is prepared (and fails) meanwhile
        assert not task.done()
        assert upper.batcher.stats.items == 0
        upper.gate.set()
        with pytest.raises(InvalidRequest):
            await task
        assert "batch done" in upper.events
    finally:
        upper.unload()


async def test_relocation_changes_the_budgets(upper: Upper) -> None:
    assert upper.batcher is not None
    assert (upper.batcher.max_batch_tokens, upper.batcher.max_batch_size) == (8, 2)
    upper.relocate(GPU)
    assert upper.moved_to == ["cuda:0"] and upper.grant == GPU
    assert (upper.batcher.max_batch_tokens, upper.batcher.max_batch_size) == (1000, 100)
    words = [f"w{i}" for i in range(10)]
    assert await upper.shout(words) == [w.upper() for w in words]
    assert upper.batcher.stats.max_batch_rows == 10  # one batch under the GPU budget
    upper.relocate(CPU)
    assert (upper.batcher.max_batch_tokens, upper.batcher.max_batch_size) == (8, 2)


async def test_unload_then_requests_fail_clearly_and_load_again() -> None:
    upper = Upper()
    upper.load(CPU)
    upper.unload()
    assert upper.events == ["load cpu", "unload"] and upper.batcher is None and upper.grant is None
    with pytest.raises(ModelNotLoaded, match="not loaded"):
        await upper.shout(["x"])
    with pytest.raises(ModelNotLoaded):
        upper.relocate(GPU)
    upper.load(CPU)
    try:
        assert await upper.shout(["x"]) == ["X"]
    finally:
        upper.unload()


async def test_unload_waits_for_the_running_batch() -> None:
    upper = Upper()
    upper.load(CPU)
    upper.gate = threading.Event()
    task = asyncio.ensure_future(upper.shout(["ab", "cd", "ef", "gh"]))
    await _until(upper.running)
    unloading = asyncio.ensure_future(asyncio.to_thread(upper.unload))
    await asyncio.sleep(0.2)
    assert "unload" not in upper.events  # the weights stay while the batch runs
    upper.gate.set()
    await unloading
    assert upper.events[-2:] == ["batch done", "unload"]
    with pytest.raises(BatcherClosed):  # its items not yet run were failed, after its batch ended
        await asyncio.wait_for(task, 10)


def test_the_host_core_stays_torch_free_at_import() -> None:
    """Only backends import host.toolkit.torch_utils: every other host module loads without torch."""
    import pkgutil
    import subprocess
    import sys

    import host

    modules = sorted(
        m.name
        for m in pkgutil.walk_packages(host.__path__, "host.")
        if m.name != "host.toolkit.torch_utils" and not m.name.startswith("host.testing")
    )
    code = f"import sys; [__import__(m) for m in {modules!r}]; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
