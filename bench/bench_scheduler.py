"""Scheduler benchmark: overhead per acquire/release, and offload-tier re-admission vs a cold load.

    .venv/bin/python bench/bench_scheduler.py [--ops 100000] [--shape tiny|0.6b]

Part 1 uses fake backends (pure scheduler cost). Part 2 uses the real embed_qwen3 backend on a
random-weight Qwen3 model: a cold load (read from disk, build the model) against re-admission
from the offload tier (``relocate``: the weights are already in host RAM). On a machine without
CUDA both placements are in host RAM, so relocation is a host-to-host move; with a GPU it is the
host-to-device copy the offload tier exists for.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from host.contract.spec import GiB, Grant, PlacementKind, Task
from host.plugins import make_plugin_manager
from host.registry import build_registry
from host.scheduling.policy import Budgets
from host.scheduling.scheduler import Scheduler
from host.testing.fakes import FakePlugin, fake_spec
from host.testing.pytest_plugin import make_config


async def overhead(ops: int) -> tuple[float, float]:
    """Microseconds per acquire+release: uncontended, and with 16 concurrent clients."""
    config = make_config()
    registry = build_registry(make_plugin_manager(config, extra=[FakePlugin([fake_spec("e", Task.EMBEDDING)])]), config)
    scheduler = Scheduler(registry, Budgets(gpus=(), host=16 * GiB), config.scheduler)
    (await scheduler.acquire("e", Task.EMBEDDING)).release()  # load once
    start = time.perf_counter()
    for _ in range(ops):
        (await scheduler.acquire("e", Task.EMBEDDING)).release()
    single = (time.perf_counter() - start) / ops * 1e6

    async def client(n: int) -> None:
        for _ in range(n):
            lease = await scheduler.acquire("e", Task.EMBEDDING)
            await asyncio.sleep(0)
            lease.release()

    start = time.perf_counter()
    await asyncio.gather(*(client(ops // 16) for _ in range(16)))
    loop_cost = time.perf_counter() - start
    start = time.perf_counter()

    async def baseline(n: int) -> None:
        for _ in range(n):
            await asyncio.sleep(0)

    await asyncio.gather(*(baseline(ops // 16) for _ in range(16)))
    contended = (loop_cost - (time.perf_counter() - start)) / (ops // 16 * 16) * 1e6
    await scheduler.close()
    return single, contended


def readmission(shape_name: str, repeats: int = 3) -> tuple[float, float]:
    """Seconds for a cold load vs re-admission from the offload tier (median of ``repeats``).

    Re-admission is ``relocate`` from a parked grant back to a serving one: the weights are
    already in host RAM, so no file is read and no model is built.
    """
    import torch

    from embed_qwen3.demo import TINY
    from host.contract.backend import import_backend
    from host.demo.shapes import QWEN3_0_6B_SHAPE, TINY_QWEN3

    torch.set_num_threads(1)
    shape = QWEN3_0_6B_SHAPE if shape_name == "0.6b" else TINY_QWEN3
    folder = TINY.with_shape(shape).folder()
    config = make_config(
        {
            "plugins": {"paths": [str(Path(__file__).resolve().parents[1] / "plugins")]},
            "models": {"Qwen3-Embedding-0.6B": {"weights": str(folder)}},
        }
    )
    spec = build_registry(make_plugin_manager(config), config).get("Qwen3-Embedding-0.6B").spec
    backend_class = import_backend(spec.backend)
    serve = Grant(placement=PlacementKind.CPU, device="cpu", gpu_bytes=0, host_bytes=spec.placements[-1].host_bytes)
    park = Grant(
        placement=PlacementKind.CPU, device="cpu", gpu_bytes=0, host_bytes=spec.offload_bytes or 0, parked=True
    )
    cold, warm = [], []
    for _ in range(repeats):
        backend = backend_class(spec)
        start = time.perf_counter()
        backend.load(serve)
        cold.append(time.perf_counter() - start)
        backend.relocate(park)
        start = time.perf_counter()
        backend.relocate(serve)
        warm.append(time.perf_counter() - start)
        backend.unload()
    return statistics.median(cold), statistics.median(warm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=100_000)
    parser.add_argument("--shape", choices=["tiny", "0.6b"], default="0.6b")
    parser.add_argument("--skip-readmission", action="store_true")
    args = parser.parse_args()
    single, contended = asyncio.run(overhead(args.ops))
    print(f"scheduler overhead, fast path (resident model): {single:.2f} us per acquire+release ({args.ops} ops)")
    print(f"scheduler overhead, 16 concurrent clients:      {contended:.2f} us per acquire+release")
    if not args.skip_readmission:
        cold, warm = readmission(args.shape)
        print(
            f"embed_qwen3 ({args.shape} shape): cold load {cold * 1000:.1f} ms, "
            f"re-admission from offload tier {warm * 1000:.1f} ms ({cold / max(warm, 1e-9):.0f}x faster)"
        )


if __name__ == "__main__":
    main()
