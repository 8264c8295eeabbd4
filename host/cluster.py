"""What a declared model asks of a Ray Serve cluster, computed from its declaration.

Pure functions, no ray import (``host.ray`` applies them): the replica's resource request and
:class:`~host.contract.spec.Grant` from the plugin's placements, the deployment options from
``plugins.yaml``, and the ``GET /v1/models`` state from Serve's replica states.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import msgspec

from host.contract.config import ConfigError, HostConfig
from host.contract.spec import Grant, ModelSpec, Placement, PlacementKind
from host.registry import RegisteredModel
from host.scheduling.status import ModelState

#: Requests one model replica works on at once: the backends batch concurrent requests, so a
#: replica takes many (Serve's default, 5, would starve the batchers). Override per deployment
#: in a Serve config file (``max_ongoing_requests``).
MODEL_MAX_ONGOING = 64
#: Requests one ingress replica (the HTTP app, async, no model) works on at once.
INGRESS_MAX_ONGOING = 1024
#: CPUs requested by each model replica (its torch threads, tokenisation) and by the ingress.
REPLICA_CPUS = 1.0
INGRESS_CPUS = 0.5


class ReplicaPlan(msgspec.Struct, frozen=True, kw_only=True):
    """One model replica's Ray resource request and the grant its backend loads with.

    ``num_gpus`` is the share of one GPU (Ray packs several fractional replicas on a GPU);
    ``memory`` is the host RAM in bytes Ray reserves for the replica.
    """

    grant: Grant
    num_cpus: float
    num_gpus: float
    memory: int

    def actor_options(self) -> dict[str, Any]:
        """``ray_actor_options`` of the replica's deployment."""
        options: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.memory:
            options["memory"] = self.memory
        return options


def gpu_share(gpu_bytes: int, gpu_size: int) -> float:
    """The fraction of one GPU of ``gpu_size`` bytes that ``gpu_bytes`` take, rounded up to 1/100."""
    return min(1.0, math.ceil(100 * gpu_bytes / gpu_size) / 100)


def replica_plan(spec: ModelSpec, gpu_size: int | None, *, num_cpus: float = REPLICA_CPUS) -> ReplicaPlan:
    """The first declared placement that fits one GPU of ``gpu_size`` bytes (``None`` or 0: the
    cluster's replicas get no GPU, so the CPU placement). A hybrid placement puts as much of its
    flexible bytes on the GPU as fit. Raises :class:`ConfigError` when nothing fits."""
    for placement in spec.placements:
        plan = _plan(placement, gpu_size, num_cpus)
        if plan is not None:
            return plan
    declared = ", ".join(f"{p.kind}" for p in spec.placements)
    where = f"one GPU of {gpu_size / 2**30:.1f} GiB" if gpu_size else "a cluster without GPUs (budgets.gpus)"
    raise ConfigError(f"models.{spec.id}.placements: none of the declared placements ({declared}) fits {where}")


def _plan(placement: Placement, gpu_size: int | None, num_cpus: float) -> ReplicaPlan | None:
    if placement.kind == PlacementKind.CPU:
        host = placement.total_bytes
        grant = Grant(placement=PlacementKind.CPU, device="cpu", gpu_bytes=0, host_bytes=host)
        return ReplicaPlan(grant=grant, num_cpus=num_cpus, num_gpus=0.0, memory=host)
    if not gpu_size or placement.gpu_bytes > gpu_size:
        return None
    if placement.kind == PlacementKind.GPU:
        on_gpu, host = placement.gpu_bytes + placement.flexible_bytes, placement.host_bytes
        if on_gpu > gpu_size:
            return None
    else:  # hybrid: the flexible part fills the GPU, the rest goes to host RAM
        on_gpu = min(gpu_size, placement.gpu_bytes + placement.flexible_bytes)
        host = placement.host_bytes + placement.flexible_bytes - (on_gpu - placement.gpu_bytes)
    # Ray makes the assigned GPU the replica's only visible device: it is always cuda:0 there.
    grant = Grant(placement=placement.kind, device="cuda:0", gpu_bytes=on_gpu, host_bytes=host)
    return ReplicaPlan(grant=grant, num_cpus=num_cpus, num_gpus=gpu_share(on_gpu, gpu_size), memory=host)


_NAME = re.compile(r"[^A-Za-z0-9._-]")


def deployment_name(model_id: str) -> str:
    """A Serve deployment name for a model id (hub-style ids keep their shape, ``/`` becomes ``--``)."""
    return _NAME.sub("_", model_id.replace("/", "--"))


def deployment_options(model: RegisteredModel, config: HostConfig, plan: ReplicaPlan) -> dict[str, Any]:
    """``Deployment.options(...)`` of one model: its name, resources, replica count or autoscaling,
    and its request limits (the single-machine queue size becomes Serve's ``max_queued_requests``)."""
    own = config.model(model.spec.id)
    options: dict[str, Any] = {
        "name": deployment_name(model.spec.id),
        "ray_actor_options": plan.actor_options(),
        "max_ongoing_requests": MODEL_MAX_ONGOING,
        "max_queued_requests": config.scheduler.queue_size,
    }
    scaling = own.autoscaling
    if scaling is None:
        options["num_replicas"] = own.replicas or 1
        return options
    if model.pinned and scaling.min_replicas == 0:
        raise ConfigError(f"models.{model.spec.id}: pinned: true needs autoscaling.min_replicas >= 1")
    autoscaling: dict[str, Any] = {
        "min_replicas": scaling.min_replicas,
        "max_replicas": scaling.max_replicas,
        "target_ongoing_requests": scaling.target_ongoing_requests,
    }
    if model.keep_alive_s is not None:  # idle this long before the last replica goes
        autoscaling["downscale_to_zero_delay_s"] = model.keep_alive_s
    options["autoscaling_config"] = autoscaling
    return options


_STARTING = ("STARTING", "UPDATING", "RECOVERING", "PENDING_MIGRATION")


def model_state(deployment_status: str | None, replica_states: Mapping[str, int]) -> ModelState:
    """A deployment's state in the single-machine vocabulary: a running replica is ``resident``,
    starting ones ``loading``, stopping ones ``unloading``, none at all (scaled to zero)
    ``available``, a failed deployment ``failed``."""
    if replica_states.get("RUNNING", 0):
        return ModelState.RESIDENT
    if deployment_status in ("DEPLOY_FAILED", "UNHEALTHY"):
        return ModelState.FAILED
    if any(replica_states.get(s, 0) for s in _STARTING):
        return ModelState.LOADING
    if replica_states.get("STOPPING", 0):
        return ModelState.UNLOADING
    return ModelState.AVAILABLE


def replicas_at_start(options: Mapping[str, Any]) -> int:
    """Replicas a model deployment needs placed to serve: its fixed count, or its autoscaling minimum
    (at least one: a model scaled to zero needs a replica on its first request)."""
    scaling = options.get("autoscaling_config")
    if scaling is None:
        return int(options.get("num_replicas", 1))
    return max(1, int(scaling["min_replicas"]))


def resource_demand(deployments: Mapping[str, tuple[ReplicaPlan, int]]) -> dict[str, float]:
    """Logical CPUs and GPUs the application asks Ray for: the ingress, plus each model's replicas
    (``deployments``: model id → (its replica plan, replicas at start))."""
    cpus = INGRESS_CPUS + sum(plan.num_cpus * n for plan, n in deployments.values())
    gpus = sum(plan.num_gpus * n for plan, n in deployments.values())
    return {"CPU": cpus, "GPU": gpus}


def shortfall(deployments: Mapping[str, tuple[ReplicaPlan, int]], found: Mapping[str, float]) -> str | None:
    """Why a Ray cluster with ``found`` resources (``ray.cluster_resources()``) can never place every
    replica, with the fix; ``None`` when it can. Ray would keep such replicas pending forever."""
    demand = resource_demand(deployments)
    lower = "lower models.<id>.replicas / autoscaling.min_replicas"
    if demand["CPU"] > found.get("CPU", 0):
        resource, key, unit = "CPU", "num_cpus", "logical CPUs"
        parts = [f"Ingress {INGRESS_CPUS:g}"]
        fix = (
            "Start Ray with more logical CPUs and deploy there (`ray start --head --num-cpus=8`, then "
            "`serve run --address 127.0.0.1:6379 host.ray:build_app config=plugins.yaml`; see docs/deployment.md, "
            f'"A local run"), or {lower}.'
        )
    elif demand["GPU"] > found.get("GPU", 0):
        resource, key, unit, parts = "GPU", "num_gpus", "GPUs", []
        fix = f"Deploy to a cluster with more GPUs, or {lower}."
    else:
        return None
    parts += [f"{mid} {n} × {getattr(plan, key):g}" for mid, (plan, n) in deployments.items() if getattr(plan, key)]
    return (
        f"plughost on Ray Serve: the replicas ask for {demand[resource]:g} {unit} ({', '.join(parts)}), but the Ray "
        f"cluster has {found.get(resource, 0):g}; the ones that do not fit would wait forever. {fix} If an autoscaler "
        "adds nodes on demand, pass wait_for_resources=true to build_app."
    )
