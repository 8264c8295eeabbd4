"""The cluster plan (host.cluster): a model's Ray resources, deployment options and state, all
from its declaration and ``plugins.yaml``; and how host.ray turns handle failures into plughost
errors and re-sends a request whose replica died. No Ray instance is started here."""

from __future__ import annotations

from typing import Any

import pytest

from host.cluster import (
    INGRESS_MAX_ONGOING,
    MODEL_MAX_ONGOING,
    deployment_name,
    deployment_options,
    gpu_share,
    model_state,
    replica_plan,
    replicas_at_start,
    resource_demand,
    shortfall,
)
from host.contract.config import ConfigError, config_from_dict
from host.contract.spec import GiB, MiB, ModelSpec, Placement, PlacementKind, Task
from host.registry import RegisteredModel
from host.scheduling.status import ModelState

GPU = Placement(kind=PlacementKind.GPU, gpu_bytes=2 * GiB, host_bytes=256 * MiB)
HYBRID = Placement(kind=PlacementKind.HYBRID, gpu_bytes=1 * GiB, host_bytes=256 * MiB, flexible_bytes=10 * GiB)
CPU = Placement(kind=PlacementKind.CPU, host_bytes=3 * GiB)


def spec(*placements: Placement, model_id: str = "m") -> ModelSpec:
    return ModelSpec(id=model_id, task=Task.EMBEDDING, backend="x.y:Z", placements=placements)


@pytest.mark.parametrize(
    ("placements", "gpu_size", "kind", "num_gpus", "gpu_bytes", "host_bytes"),
    [
        # no GPU in the cluster: the CPU placement, its RAM reserved as Ray `memory`
        ((GPU, CPU), None, "cpu", 0.0, 0, 3 * GiB),
        ((GPU, CPU), 0, "cpu", 0.0, 0, 3 * GiB),
        # an 80 GiB GPU: a fractional share, rounded up to 1/100
        ((GPU, CPU), 80 * GiB, "gpu", 0.03, 2 * GiB, 256 * MiB),
        ((GPU, CPU), 2 * GiB, "gpu", 1.0, 2 * GiB, 256 * MiB),
        # too small for the GPU placement: next declared one
        ((GPU, CPU), 1 * GiB, "cpu", 0.0, 0, 3 * GiB),
        # hybrid: the flexible part fills the GPU, the rest stays in host RAM
        ((GPU, HYBRID, CPU), 1536 * MiB, "hybrid", 1.0, 1536 * MiB, 256 * MiB + 10 * GiB - 512 * MiB),
        ((HYBRID, CPU), 80 * GiB, "hybrid", 0.14, 11 * GiB, 256 * MiB),
    ],
)
def test_replica_plan_from_declarations(placements, gpu_size, kind, num_gpus, gpu_bytes, host_bytes) -> None:
    plan = replica_plan(spec(*placements), gpu_size)
    assert plan.grant.placement == kind
    assert plan.grant.device == ("cpu" if kind == "cpu" else "cuda:0")
    assert (plan.num_gpus, plan.grant.gpu_bytes, plan.grant.host_bytes) == (num_gpus, gpu_bytes, host_bytes)
    assert plan.memory == host_bytes and plan.num_cpus == 1.0
    options = plan.actor_options()
    assert options["num_gpus"] == num_gpus and options["memory"] == host_bytes


def test_a_model_that_fits_nowhere_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"models\.big\.placements: .*gpu.*without GPUs"):
        replica_plan(spec(GPU, model_id="big"), None)
    with pytest.raises(ConfigError, match=r"one GPU of 1\.0 GiB"):
        replica_plan(spec(GPU, model_id="big"), GiB)


@pytest.mark.parametrize(("used", "size", "share"), [(1, 100, 0.01), (50, 100, 0.5), (501, 1000, 0.51), (7, 5, 1.0)])
def test_gpu_share_rounds_up(used: int, size: int, share: float) -> None:
    assert gpu_share(used, size) == share


def options_for(models: dict[str, Any], **registered: Any) -> dict[str, Any]:
    config = config_from_dict({"models": {"m": models}, "scheduler": {"queue_size": 7}})
    model = RegisteredModel(spec=spec(CPU), plugin="p", **registered)
    return deployment_options(model, config, replica_plan(model.spec, None))


def test_deployment_options_replicas_and_limits() -> None:
    assert options_for({}) == {
        "name": "m",
        "ray_actor_options": {"num_cpus": 1.0, "num_gpus": 0.0, "memory": 3 * GiB},
        "max_ongoing_requests": MODEL_MAX_ONGOING,
        "max_queued_requests": 7,  # scheduler.queue_size: the single machine's 429 threshold
        "num_replicas": 1,
    }
    assert options_for({"replicas": 3})["num_replicas"] == 3
    assert MODEL_MAX_ONGOING > 5 and INGRESS_MAX_ONGOING >= MODEL_MAX_ONGOING  # Serve's default (5) starves batching


def test_deployment_options_autoscaling_and_keep_alive() -> None:
    options = options_for({"autoscaling": {"min_replicas": 0, "max_replicas": 4}}, keep_alive_s=120.0)
    assert "num_replicas" not in options
    assert options["autoscaling_config"] == {
        "min_replicas": 0,
        "max_replicas": 4,
        "target_ongoing_requests": 2.0,
        "downscale_to_zero_delay_s": 120.0,
    }
    with pytest.raises(ConfigError, match=r"models\.m: pinned: true needs autoscaling\.min_replicas >= 1"):
        options_for({"autoscaling": {"min_replicas": 0, "max_replicas": 2}}, pinned=True)


@pytest.mark.parametrize(
    ("section", "error"),
    [
        ({"replicas": 0}, r"models\.m\.replicas: Expected `int` >= 1"),
        ({"replicas": 2, "autoscaling": {}}, r"models\.m: set either replicas .* or autoscaling"),
        ({"autoscaling": {"min_replicas": 3, "max_replicas": 2}}, r"models\.m\.autoscaling: min_replicas \(3\)"),
        ({"autoscaling": {"max_replica": 2}}, r"models\.m\.autoscaling\.max_replica: unknown key"),
        ({"autoscaling": {"target_ongoing_requests": 0}}, r"autoscaling\.target_ongoing_requests: Expected"),
    ],
)
def test_replica_keys_are_checked_and_errors_name_them(section: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        config_from_dict({"models": {"m": section}})


@pytest.mark.parametrize(
    ("status", "replicas", "state"),
    [
        ("HEALTHY", {"RUNNING": 2}, ModelState.RESIDENT),
        ("UPDATING", {"RUNNING": 1, "STARTING": 1}, ModelState.RESIDENT),  # a replacement starting
        ("UPSCALING", {"STARTING": 1}, ModelState.LOADING),  # scaling from zero
        ("HEALTHY", {}, ModelState.AVAILABLE),  # scaled to zero
        ("DOWNSCALING", {"STOPPING": 1}, ModelState.UNLOADING),
        ("DEPLOY_FAILED", {"STARTING": 1}, ModelState.FAILED),
        ("UNHEALTHY", {}, ModelState.FAILED),
        (None, {}, ModelState.AVAILABLE),  # not reported yet
    ],
)
def test_model_state_from_replica_states(status: str | None, replicas: dict[str, int], state: ModelState) -> None:
    assert model_state(status, replicas) == state


def test_replicas_at_start_and_the_resources_they_ask_for() -> None:
    assert replicas_at_start({"num_replicas": 3}) == 3
    assert replicas_at_start({"autoscaling_config": {"min_replicas": 0, "max_replicas": 4}}) == 1
    assert replicas_at_start({"autoscaling_config": {"min_replicas": 2, "max_replicas": 4}}) == 2
    cpu, gpu = replica_plan(spec(CPU), None), replica_plan(spec(GPU), 80 * GiB)
    assert resource_demand({"a": (cpu, 2), "b": (gpu, 1)}) == {"CPU": 0.5 + 1 + 1 + 1, "GPU": 0.03}


def test_a_cluster_too_small_is_refused_with_what_is_asked_found_and_the_fix() -> None:
    cpu = replica_plan(spec(CPU), None)
    demand = {"chat": (cpu, 1), "embed": (cpu, 2)}  # 0.5 + 1 + 2 = 3.5 logical CPUs
    assert shortfall(demand, {"CPU": 4.0}) is None
    message = shortfall(demand, {"CPU": 2.0, "memory": 1e9})
    assert message is not None
    assert "ask for 3.5 logical CPUs (Ingress 0.5, chat 1 × 1, embed 2 × 1)" in message
    assert "the Ray cluster has 2;" in message and "wait forever" in message
    assert "ray start --head --num-cpus=8" in message and "docs/deployment.md" in message
    assert "wait_for_resources=true" in message
    gpu = replica_plan(spec(GPU), 80 * GiB)
    message = shortfall({"g": (gpu, 40)}, {"CPU": 64.0, "GPU": 1.0})
    assert message is not None and "ask for 1.2 GPUs (g 40 × 0.03)" in message and "has 1;" in message


def test_deployment_names() -> None:
    assert deployment_name("Qwen3-Embedding-0.6B") == "Qwen3-Embedding-0.6B"
    assert deployment_name("Qwen/Qwen3 Embedding#1") == "Qwen--Qwen3_Embedding_1"


class ScriptedHandle:
    """Stands in for a DeploymentHandle whose calls fail or answer as scripted (the retry rule
    under test is ours; tests/test_ray.py kills a real replica)."""

    def __init__(self, *outcomes: Any) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    def options(self, **_: Any) -> ScriptedHandle:
        return self

    @property
    def embed(self) -> ScriptedHandle:
        return self

    async def remote(self, request: Any) -> Any:
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


async def test_a_request_whose_replica_died_is_sent_again() -> None:
    from ray.exceptions import ActorDiedError

    from host.ray import RETRIES, RemoteBackend

    handle = ScriptedHandle(ActorDiedError(), "vectors")
    assert await RemoteBackend("m", handle).embed(None) == "vectors" and handle.calls == 2  # type: ignore[arg-type]

    from host.contract.errors import ModelLoadFailed

    dead = ScriptedHandle(*[ActorDiedError() for _ in range(RETRIES + 1)])
    with pytest.raises(ModelLoadFailed, match="replicas kept dying"):
        await RemoteBackend("m", dead).embed(None)  # type: ignore[arg-type]
    assert dead.calls == RETRIES + 1


def test_handle_failures_become_plughost_errors() -> None:
    from ray.exceptions import RayTaskError
    from ray.serve.exceptions import BackPressureError

    from host.contract.errors import BackendError, InvalidRequest, QueueFull
    from host.ray import _client_error

    verdict = InvalidRequest("too long", param="messages", code="context_length_exceeded")
    assert _client_error("m", RayTaskError("embed", "tb", verdict)) is verdict
    full = _client_error("m", BackPressureError(num_queued_requests=7, max_queued_requests=7))
    assert isinstance(full, QueueFull) and full.status == 429 and full.headers() == {"Retry-After": "2"}
    queued_remotely = _client_error("m", RayTaskError("embed", "tb", BackPressureError(3, 3, retry_after_s=5)))
    assert isinstance(queued_remotely, QueueFull) and queued_remotely.headers() == {"Retry-After": "5"}
    crash = _client_error("m", RayTaskError("embed", "tb", ZeroDivisionError("boom")))
    assert isinstance(crash, BackendError) and "ZeroDivisionError: boom" in crash.message


def test_only_host_ray_imports_ray() -> None:
    import ast
    import subprocess
    import sys
    from pathlib import Path

    host = Path(__file__).resolve().parents[1] / "host"
    importers = []
    for path in sorted(host.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            if any(n == "ray" or n.startswith("ray.") for n in names):
                importers.append(path.relative_to(host.parent).as_posix())
    assert sorted(set(importers)) == ["host/ray.py"]
    # And the single-machine app's import graph does not pull it in indirectly.
    code = "import sys, host.app, host.cluster, host.cli; assert 'ray' not in sys.modules, 'ray imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
