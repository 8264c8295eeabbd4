"""Table tests of the pure placement policy ``plan()``."""

from __future__ import annotations

import pytest

from host.contract.spec import GiB, Placement, PlacementKind, Task
from host.scheduling.policy import (
    Admit,
    Budgets,
    Impossible,
    Policy,
    Resident,
    ResidentState,
    Wait,
    Want,
    plan,
)

GPU, HYB, CPU = PlacementKind.GPU, PlacementKind.HYBRID, PlacementKind.CPU
R = ResidentState


def gpu(n: float) -> Placement:
    return Placement(kind=GPU, gpu_bytes=int(n * GiB))


def cpu(n: float) -> Placement:
    return Placement(kind=CPU, host_bytes=int(n * GiB))


def hybrid(min_gpu: float, flexible: float, host: float = 0) -> Placement:
    return Placement(
        kind=HYB, gpu_bytes=int(min_gpu * GiB), flexible_bytes=int(flexible * GiB), host_bytes=int(host * GiB)
    )


def res(
    model: str,
    task: Task,
    *,
    on: int | None = 0,
    g: float = 0,
    h: float = 0,
    busy: int = 0,
    used: float = 0,
    loaded: float = -100,
    pinned: bool = False,
    off: float | None = None,
    state: ResidentState = R.RESIDENT,
) -> Resident:
    return Resident(
        model=model,
        task=task,
        state=state,
        gpu=on,
        gpu_bytes=int(g * GiB),
        host_bytes=int(h * GiB),
        in_flight=busy,
        last_used=used,
        loaded_at=loaded,
        pinned=pinned,
        offload_bytes=None if off is None else int(off * GiB),
    )


def want(model: str, task: Task, *placements: Placement) -> Want:
    return Want(model=model, task=task, placements=placements)


ONE_GPU = Budgets(gpus=(int(16 * GiB),), host=int(32 * GiB))
TWO_GPU = Budgets(gpus=(int(8 * GiB), int(8 * GiB)), host=int(32 * GiB))
NO_GPU = Budgets(gpus=(), host=int(16 * GiB))
C, E, K = Task.CHAT, Task.EMBEDDING, Task.RERANK

# (name, want, residents, budgets, policy kwargs, expected)
CASES = [
    (
        "fits on an empty GPU",
        want("e", E, gpu(2), cpu(2)),
        [],
        ONE_GPU,
        {},
        Admit(placement=GPU, gpu=0, gpu_bytes=2 * GiB, host_bytes=0),
    ),
    (
        "fits beside others of other tasks",
        want("e", E, gpu(2)),
        [res("c", C, g=10), res("k", K, g=2)],
        ONE_GPU,
        {},
        Admit(placement=GPU, gpu=0, gpu_bytes=2 * GiB, host_bytes=0),
    ),
    (
        "no GPU: falls to cpu placement",
        want("e", E, gpu(2), cpu(3)),
        [],
        NO_GPU,
        {},
        Admit(placement=CPU, gpu=None, gpu_bytes=0, host_bytes=3 * GiB),
    ),
    (
        "evicts the least recently used idle model",
        want("x", C, gpu(8)),
        [res("old", E, g=5, used=1), res("new", K, g=5, used=9)],
        ONE_GPU,
        {"max_resident_per_task": 9},
        Admit(placement=GPU, gpu=0, gpu_bytes=8 * GiB, host_bytes=0, evict=("old",)),
    ),
    (
        "offloads instead of evicting when it can",
        want("x", C, gpu(8)),
        [res("old", E, g=5, used=1, off=5), res("new", K, g=5, used=9)],
        ONE_GPU,
        {"max_resident_per_task": 9},
        Admit(placement=GPU, gpu=0, gpu_bytes=8 * GiB, host_bytes=0, offload=("old",)),
    ),
    (
        "offload needs host room, else evicts",
        want("x", C, gpu(8)),
        [res("old", E, g=5, used=1, off=5), res("fat", K, on=None, h=30, used=9, busy=1), res("n", K, g=5, used=9)],
        ONE_GPU,
        {"max_resident_per_task": 9},
        Admit(placement=GPU, gpu=0, gpu_bytes=8 * GiB, host_bytes=0, evict=("old",)),
    ),
    (
        "busy model is never touched: wait",
        want("x", C, gpu(8)),
        [res("b", E, g=12, busy=2)],
        ONE_GPU,
        {},
        Wait(reason="memory for x is held by b (2 request(s) in flight)", blockers=("b",)),
    ),
    (
        "busy model blocks the GPU but cpu placement fits now",
        want("x", C, gpu(8), cpu(8)),
        [res("b", E, g=12, busy=2)],
        ONE_GPU,
        {},
        Admit(placement=CPU, gpu=None, gpu_bytes=0, host_bytes=8 * GiB),
    ),
    (
        "one model per task: the idle one of the same task goes",
        want("e2", E, gpu(1)),
        [res("e1", E, g=1, used=5), res("c", C, g=1, used=1)],
        ONE_GPU,
        {},
        Admit(placement=GPU, gpu=0, gpu_bytes=1 * GiB, host_bytes=0, evict=("e1",)),
    ),
    (
        "one model per task: offloaded copies don't count",
        want("e2", E, gpu(1)),
        [res("e1", E, on=None, h=1, state=R.OFFLOADED)],
        ONE_GPU,
        {},
        Admit(placement=GPU, gpu=0, gpu_bytes=1 * GiB, host_bytes=0),
    ),
    (
        "one model per task: busy same-task model → wait",
        want("e2", E, gpu(1)),
        [res("e1", E, g=1, busy=1)],
        ONE_GPU,
        {},
        Wait(reason="memory for e2 is held by e1 (1 request(s) in flight)", blockers=("e1",)),
    ),
    (
        "one model per task, configurable to two",
        want("e2", E, gpu(1)),
        [res("e1", E, g=1)],
        ONE_GPU,
        {"max_resident_per_task": 2},
        Admit(placement=GPU, gpu=0, gpu_bytes=1 * GiB, host_bytes=0),
    ),
    (
        "pinned model of the same task: impossible",
        want("e2", E, gpu(1)),
        [res("e1", E, g=1, pinned=True)],
        ONE_GPU,
        {},
        Impossible(reason="at most 1 embedding model(s) may be resident and pinned model(s) e1 hold the place(s)"),
    ),
    (
        "pinned model stays; the other idle one goes",
        want("x", C, gpu(8)),
        [res("p", E, g=6, pinned=True, used=0), res("k", K, g=6, used=5)],
        ONE_GPU,
        {},
        Admit(placement=GPU, gpu=0, gpu_bytes=8 * GiB, host_bytes=0, evict=("k",)),
    ),
    (
        "pinned model holding the GPU: impossible, not a wait",
        want("x", C, gpu(8)),
        [res("p", E, g=10, pinned=True)],
        ONE_GPU,
        {},
        Impossible(reason="no placement of x fits: gpu needs 8.00 GiB on GPU 0; pinned models leave 6.00 GiB"),
    ),
    (
        "too young to evict: wait with a retry time",
        want("x", C, gpu(8)),
        [res("y", E, g=12, loaded=9)],
        ONE_GPU,
        {"min_residency_s": 5, "now": 10},
        Wait(
            reason="memory for x is held by y (resident for less than the minimum residency time)",
            blockers=("y",),
            retry_at=14,
        ),
    ),
    (
        "loading model is never touched",
        want("x", C, gpu(8)),
        [res("l", E, g=12, state=R.BUSY)],
        ONE_GPU,
        {},
        Wait(reason="memory for x is held by l (loading or moving)", blockers=("l",)),
    ),
    (
        "bigger than any GPU and than RAM: impossible with a reason",
        want("x", C, gpu(40), cpu(64)),
        [],
        ONE_GPU,
        {},
        Impossible(
            reason="no placement of x fits: gpu needs 40.00 GiB on GPU 0, whose budget is 16.00 GiB; "
            "cpu needs 64.00 GiB of host RAM, whose budget is 32.00 GiB"
        ),
    ),
    (
        "no GPU at all and gpu-only model: impossible",
        want("x", E, gpu(1)),
        [],
        NO_GPU,
        {},
        Impossible(reason="no placement of x fits: gpu: no GPU is available"),
    ),
    (
        "two GPUs: picks the one that needs no eviction",
        want("x", C, gpu(5)),
        [res("a", E, on=0, g=6, used=1), res("b", K, on=1, g=2, used=2)],
        TWO_GPU,
        {},
        Admit(placement=GPU, gpu=1, gpu_bytes=5 * GiB, host_bytes=0),
    ),
    (
        "two GPUs: evicts on the cheaper one",
        want("x", C, gpu(7)),
        [res("a", E, on=0, g=6, used=1), res("b", K, on=1, g=6, busy=1)],
        TWO_GPU,
        {},
        Admit(placement=GPU, gpu=0, gpu_bytes=7 * GiB, host_bytes=0, evict=("a",)),
    ),
    (
        "hybrid: min on GPU, flexible fills the rest of the GPU, remainder in RAM",
        want("c", C, gpu(12), hybrid(2, 10, host=1)),
        [res("e", E, g=8, busy=1)],
        ONE_GPU,
        {},
        Admit(placement=HYB, gpu=0, gpu_bytes=8 * GiB, host_bytes=5 * GiB),
    ),
    (
        "re-admission of an offloaded copy frees its host bytes",
        want("c", C, gpu(4)),
        [res("c", C, on=None, h=4, state=R.OFFLOADED), res("big", K, on=None, h=28, busy=1)],
        ONE_GPU,
        {},
        Admit(placement=GPU, gpu=0, gpu_bytes=4 * GiB, host_bytes=0),
    ),
    (
        "host RAM: offloaded copies are dropped first",
        want("x", C, cpu(20)),
        [res("o", E, on=None, h=10, state=R.OFFLOADED, used=9), res("r", K, on=None, h=10, used=1)],
        Budgets(gpus=(), host=int(30 * GiB)),
        {},
        Admit(placement=CPU, gpu=None, gpu_bytes=0, host_bytes=20 * GiB, evict=("o",)),
    ),
]


@pytest.mark.parametrize(("name", "w", "residents", "budgets", "kwargs", "expected"), CASES, ids=[c[0] for c in CASES])
def test_plan(name, w, residents, budgets, kwargs, expected) -> None:
    assert plan(w, residents, budgets, Policy(**kwargs)) == expected


def test_plan_is_pure() -> None:
    residents = [res("old", E, g=5, used=1, off=5), res("new", K, g=5, used=9)]
    before = list(residents)
    first = plan(want("x", C, gpu(8)), residents, ONE_GPU, Policy(max_resident_per_task=9))
    assert plan(want("x", C, gpu(8)), residents, ONE_GPU, Policy(max_resident_per_task=9)) == first
    assert residents == before
