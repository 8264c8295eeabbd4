"""The placement policy: a pure function from (wanted model, residents, budgets) to a decision.

No clocks, no I/O, no torch: tests drive it from tables. The rules:

- placements are tried in the model's declared order of preference; the first that can be
  made to fit now (possibly by moving idle models) wins;
- at most ``max_resident_per_task`` models of one task are resident (offloaded ones don't count);
- a model with requests in flight, one still loading, or one resident for less than
  ``min_residency_s`` is never moved: the request waits instead;
- pinned models are never moved;
- to free GPU memory an idle model is offloaded (parked in host RAM, if it can be and RAM
  allows) rather than dropped; victims are taken least recently used first;
- to free host RAM, offloaded models go first (they are a cache), then idle CPU residents;
- when nothing could ever fit, the answer is :class:`Impossible` with the reason.
"""

from __future__ import annotations

import enum

import msgspec

from host.contract.spec import GiB, Placement, PlacementKind, Task


class ResidentState(enum.StrEnum):
    """A model's residency as the policy sees it."""

    BUSY = "busy"  # loading, unloading or relocating: counted, never moved
    RESIDENT = "resident"
    OFFLOADED = "offloaded"


class Resident(msgspec.Struct, frozen=True, kw_only=True):
    """A model that holds memory now."""

    model: str
    task: Task
    state: ResidentState
    gpu: int | None = None
    gpu_bytes: int = 0
    host_bytes: int = 0
    in_flight: int = 0
    last_used: float = 0.0
    loaded_at: float = 0.0
    pinned: bool = False
    offload_bytes: int | None = None  # host bytes once offloaded; None: cannot be offloaded


class Want(msgspec.Struct, frozen=True, kw_only=True):
    """The model a request needs admitted."""

    model: str
    task: Task
    placements: tuple[Placement, ...]


class Budgets(msgspec.Struct, frozen=True):
    """Usable bytes per GPU (index = CUDA device) and of host RAM."""

    gpus: tuple[int, ...]
    host: int


class Policy(msgspec.Struct, frozen=True, kw_only=True):
    """Tunable rules; ``now`` is the clock reading the residency ages are compared with."""

    max_resident_per_task: int = 1
    min_residency_s: float = 0.0
    now: float = 0.0


class Admit(msgspec.Struct, frozen=True, kw_only=True):
    """Load the model at ``placement`` after moving the named idle models."""

    placement: PlacementKind
    gpu: int | None
    gpu_bytes: int
    host_bytes: int
    offload: tuple[str, ...] = ()
    evict: tuple[str, ...] = ()


class Wait(msgspec.Struct, frozen=True, kw_only=True):
    """Memory is held by models that cannot move yet; ask again when one frees up."""

    reason: str
    blockers: tuple[str, ...]
    retry_at: float | None = None  # when a too-young blocker becomes movable


class Impossible(msgspec.Struct, frozen=True, kw_only=True):
    """No placement can ever fit the budgets (or only pinned models stand in the way)."""

    reason: str


Decision = Admit | Wait | Impossible


def gib(n: int) -> str:
    """Bytes as a short GiB string for messages."""
    return f"{n / GiB:.2f} GiB"


class _Trial:
    """Memory bookkeeping for one (placement, GPU) attempt."""

    def __init__(self, residents: list[Resident], budgets: Budgets, want: Want) -> None:
        self.gpu_used = [0] * len(budgets.gpus)
        self.host_used = 0
        for r in residents:
            if r.model == want.model:
                continue  # an offloaded copy of the wanted model is replaced by the admission
            if r.gpu is not None and r.gpu < len(self.gpu_used):
                self.gpu_used[r.gpu] += r.gpu_bytes
            self.host_used += r.host_bytes
        self.budgets = budgets
        self.offload: list[str] = []
        self.evict: list[str] = []
        self.moved: set[str] = set()

    def gpu_free(self, gpu: int) -> int:
        return self.budgets.gpus[gpu] - self.gpu_used[gpu]

    def host_free(self) -> int:
        return self.budgets.host - self.host_used

    def drop(self, r: Resident) -> None:
        self.moved.add(r.model)
        self.evict.append(r.model)
        if r.gpu is not None:
            self.gpu_used[r.gpu] -= r.gpu_bytes
        self.host_used -= r.host_bytes

    def park(self, r: Resident) -> bool:
        """Offload ``r`` to host RAM if it can be and fits; else report False."""
        if r.offload_bytes is None or r.gpu is None or r.state != ResidentState.RESIDENT:
            return False
        if r.offload_bytes - r.host_bytes > self.host_free():
            return False
        self.moved.add(r.model)
        self.offload.append(r.model)
        self.gpu_used[r.gpu] -= r.gpu_bytes
        self.host_used += r.offload_bytes - r.host_bytes
        return True

    def displace(self, r: Resident) -> None:
        if not self.park(r):
            self.drop(r)


def plan(want: Want, residents: list[Resident] | tuple[Resident, ...], budgets: Budgets, policy: Policy) -> Decision:
    """Decide how to admit ``want`` given who holds memory now."""
    residents = list(residents)
    others = [r for r in residents if r.model != want.model]
    lru = sorted(others, key=lambda r: r.last_used)

    def movable(r: Resident) -> bool:
        if r.pinned or r.in_flight or r.state == ResidentState.BUSY:
            return False
        return r.state == ResidentState.OFFLOADED or policy.now - r.loaded_at >= policy.min_residency_s

    def why_stuck(r: Resident) -> str:
        if r.pinned:
            return "pinned"
        if r.state == ResidentState.BUSY:
            return "loading or moving"
        if r.in_flight:
            return f"{r.in_flight} request(s) in flight"
        return "resident for less than the minimum residency time"

    waiting: dict[str, Resident] = {}
    reasons: list[str] = []

    # One-per-task rule (configurable): make room among the same task first.
    active = [r for r in lru if r.task == want.task and r.state != ResidentState.OFFLOADED]
    excess = len(active) - (policy.max_resident_per_task - 1)
    forced: list[Resident] = []
    if excess > 0:
        candidates = [r for r in active if movable(r)]
        if len(candidates) < excess:
            stuck = [r for r in active if not movable(r)]
            if len([r for r in stuck if not r.pinned]) + len(candidates) < excess:
                names = ", ".join(r.model for r in stuck if r.pinned)
                return Impossible(
                    reason=f"at most {policy.max_resident_per_task} {want.task} model(s) may be "
                    f"resident and pinned model(s) {names} hold the place(s)"
                )
            return _wait(want, [r for r in stuck if not r.pinned], why_stuck, policy)
        forced = candidates[:excess]

    for placement in want.placements:
        gpus: list[int | None] = [None] if placement.kind == PlacementKind.CPU else list(range(len(budgets.gpus)))
        if not gpus:
            reasons.append(f"{placement.kind}: no GPU is available")
            continue
        best: tuple[tuple[int, int], Admit] | None = None
        for gpu in gpus:
            trial = _Trial(residents, budgets, want)
            for r in forced:
                trial.displace(r)
            outcome = _fit(trial, placement, gpu, lru, movable, budgets)
            if isinstance(outcome, Admit):
                cost = (len(outcome.offload) + len(outcome.evict), -(trial.gpu_free(gpu) if gpu is not None else 0))
                if best is None or cost < best[0]:
                    best = (cost, outcome)
            elif isinstance(outcome, list):
                for r in outcome:
                    waiting[r.model] = r
            else:
                reasons.append(outcome)
        if best is not None:
            return best[1]

    if waiting:
        return _wait(want, list(waiting.values()), why_stuck, policy)
    return Impossible(reason=f"no placement of {want.model} fits: " + "; ".join(dict.fromkeys(reasons)))


def _fit(trial: _Trial, placement: Placement, gpu: int | None, lru: list[Resident], movable, budgets: Budgets):
    """Try one (placement, GPU): an :class:`Admit`, a list of blockers to wait for, or a reason string."""
    need_gpu = placement.gpu_bytes + (placement.flexible_bytes if placement.kind == PlacementKind.GPU else 0)
    if gpu is not None and need_gpu > budgets.gpus[gpu]:
        return f"{placement.kind} needs {gib(need_gpu)} on GPU {gpu}, whose budget is {gib(budgets.gpus[gpu])}"
    blockers: list[Resident] = []
    if gpu is not None:
        for r in lru:
            if trial.gpu_free(gpu) >= need_gpu:
                break
            if r.gpu == gpu and r.model not in trial.moved and r.gpu_bytes:
                if movable(r):
                    trial.displace(r)
                elif not r.pinned:  # pinned models never move: waiting for them is pointless
                    blockers.append(r)
        if trial.gpu_free(gpu) < need_gpu:
            held = sum(r.gpu_bytes for r in blockers)
            if trial.gpu_free(gpu) + held >= need_gpu:
                return blockers
            left = gib(trial.gpu_free(gpu) + held)
            return f"{placement.kind} needs {gib(need_gpu)} on GPU {gpu}; pinned models leave {left}"
    flex_on_gpu = 0
    if placement.kind == PlacementKind.HYBRID and gpu is not None:
        flex_on_gpu = max(0, min(placement.flexible_bytes, trial.gpu_free(gpu) - need_gpu))
    # A GPU placement counted its flexible bytes in need_gpu; the others keep what the GPU does not take.
    flex_in_host = 0 if placement.kind == PlacementKind.GPU else placement.flexible_bytes - flex_on_gpu
    need_host = placement.host_bytes + flex_in_host
    if need_host > budgets.host:
        return f"{placement.kind} needs {gib(need_host)} of host RAM, whose budget is {gib(budgets.host)}"
    # Host RAM: drop offloaded copies first (a cache), then idle CPU-side residents.
    order = sorted(lru, key=lambda r: (r.state != "offloaded",))
    for r in order:
        if trial.host_free() >= need_host:
            break
        if r.model in trial.moved or not r.host_bytes:
            continue
        if movable(r):
            trial.drop(r)
        elif not r.pinned:
            blockers.append(r)
    if trial.host_free() < need_host:
        held = sum(r.host_bytes for r in blockers if r.model not in trial.moved)
        if trial.host_free() + held >= need_host:
            return blockers
        return (
            f"{placement.kind} needs {gib(need_host)} of host RAM; pinned models leave {gib(trial.host_free() + held)}"
        )
    return Admit(
        placement=placement.kind,
        gpu=gpu,
        gpu_bytes=need_gpu + flex_on_gpu if gpu is not None else 0,
        host_bytes=need_host,
        offload=tuple(trial.offload),
        evict=tuple(trial.evict),
    )


def _wait(want: Want, stuck: list[Resident], why, policy: Policy) -> Wait:
    young = [
        r.loaded_at + policy.min_residency_s
        for r in stuck
        if not r.in_flight and r.state == ResidentState.RESIDENT and not r.pinned
    ]
    held = ", ".join(f"{r.model} ({why(r)})" for r in stuck)
    return Wait(
        reason=f"memory for {want.model} is held by {held}",
        blockers=tuple(r.model for r in stuck),
        retry_at=min(young) if young else None,
    )
