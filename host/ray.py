"""plughost on a Ray Serve cluster: ``serve run host.ray:build_app config=plugins.yaml``.

The only module of ``host`` that imports ray (the optional extra ``plughost[ray]``). Every
declared model becomes a deployment (:class:`ModelReplica`) whose replicas load the plugin's
backend with the resources its declaration asks for (:mod:`host.cluster`). The ingress
deployment runs the same Litestar app as one machine (``create_app``), with a
:class:`RayModelPool` in place of the scheduler: its leases call the model deployments through
deployment handles, streamed for chat. See docs/deployment.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import ray
from litestar import Litestar
from ray import serve
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from host.app import create_app
from host.cluster import (
    INGRESS_CPUS,
    INGRESS_MAX_ONGOING,
    ReplicaPlan,
    deployment_options,
    model_state,
    replica_plan,
    replicas_at_start,
    shortfall,
)
from host.contract.backend import Backend, PromptTokens, load_backend, no_prompt_tokens
from host.contract.config import ConfigError, HostConfig, load_config
from host.contract.domain import ChatDelta, ChatRequest, EmbeddingRequest, EmbeddingResult, RerankRequest, RerankResult
from host.contract.errors import BackendError, Conflict, ModelLoadFailed, PlughostError, QueueFull, ShuttingDown
from host.contract.spec import Grant, Task
from host.plugins import make_plugin_manager
from host.registry import ModelRegistry, build_registry
from host.scheduling.budgets import resolve_budgets
from host.scheduling.lease import Lease
from host.scheduling.status import ModelState, ModelStatus

log = logging.getLogger("plughost.ray")

#: A request whose replica died is sent again (to another replica) this many times.
RETRIES = 2
#: How often the ingress reads the deployments' replica states for ``GET /v1/models``.
STATUS_PERIOD_S = 1.0


def build_app(args: Mapping[str, str]) -> serve.Application:
    """The application builder of ``serve run host.ray:build_app config=plugins.yaml``.

    ``config`` names the file (default ``$PLUGHOST_CONFIG``, else ``./plugins.yaml``, as on one machine);
    ``wait_for_resources=true`` deploys even when the cluster cannot place every replica now (an
    autoscaler adds nodes), instead of refusing.
    """
    wait = args.get("wait_for_resources", "false").lower() in ("1", "true", "yes")
    return application(load_config(args.get("config")), wait_for_resources=wait)


def application(config: HostConfig, *, wait_for_resources: bool = False) -> serve.Application:
    """The Serve application of ``config``: one deployment per declared model, and the ingress.

    Unless ``wait_for_resources``, a cluster that cannot place every replica (fewer logical CPUs or
    GPUs than they ask for) is refused with a :class:`ConfigError` that says what is asked, what is
    there and how to fix it: Ray would keep the replicas pending, and ``serve run`` wait, forever.
    """
    registry = build_registry(make_plugin_manager(config), config)
    gpus = resolve_budgets(config).gpus
    gpu_size = gpus[0] if gpus else None
    handles: dict[str, Any] = {}
    plans: dict[str, ReplicaPlan] = {}
    demand: dict[str, tuple[ReplicaPlan, int]] = {}
    for model in registry:
        plan = replica_plan(model.spec, gpu_size)
        plans[model.spec.id] = plan
        options = deployment_options(model, config, plan)
        demand[model.spec.id] = (plan, replicas_at_start(options))
        log.info("%s: deployment %s, %s", model.spec.id, options["name"], plan.actor_options())
        handles[model.spec.id] = _deployment(ModelReplica).options(**options).bind(config, model.spec.id, plan.grant)
    if not wait_for_resources:
        problem = shortfall(demand, _cluster_resources())
        if problem is not None:
            raise ConfigError(problem)
    return (
        _deployment(Ingress)
        .options(ray_actor_options={"num_cpus": INGRESS_CPUS}, max_ongoing_requests=INGRESS_MAX_ONGOING)
        .bind(config, handles, plans)
    )


def _cluster_resources() -> dict[str, float]:
    """``ray.cluster_resources()`` of the cluster the application will be deployed to.

    ``serve run`` calls the builder before it connects to Ray; connect here as it would (its
    ``--address``, ``--runtime-env``, ``--working-dir``, read from its command line), so that it finds
    Ray connected and deploys where this looked."""
    if not ray.is_initialized():
        import click
        from ray.dashboard.modules.dashboard_sdk import parse_runtime_env_args

        context = click.get_current_context(silent=True)
        params = context.params if context is not None else {}
        runtime_env = parse_runtime_env_args(
            runtime_env=params.get("runtime_env"),
            runtime_env_json=params.get("runtime_env_json"),
            working_dir=params.get("working_dir"),
        )
        ray.init(address=params.get("address"), namespace="serve", runtime_env=runtime_env)
    return {k: float(v) for k, v in ray.cluster_resources().items()}


def _deployment(decorated: object) -> serve.Deployment:
    """A ``@serve.deployment`` class as what it is at run time (type checkers see the class)."""
    assert isinstance(decorated, serve.Deployment)
    return decorated


@serve.deployment
class ModelReplica:
    """One replica of a model: builds the registry from the same ``plugins.yaml`` as the ingress
    (so plugin folders are importable here too) and loads the model's backend with its grant."""

    def __init__(self, config: HostConfig, model_id: str, grant: Grant) -> None:
        self.model = build_registry(make_plugin_manager(config), config).get(model_id)
        started = time.perf_counter()
        self.backend: Any = load_backend(self.model.spec, grant, plugin=self.model.plugin)
        log.info("%s: replica loaded on %s in %.2fs", model_id, grant.device, time.perf_counter() - started)

    def ready(self) -> bool:
        """Answers once a replica is up (``POST /load`` scales from zero through it)."""
        return True

    async def generate(self, request: ChatRequest) -> AsyncIterator[ChatDelta]:
        """Stream the chat completion (called with ``handle.options(stream=True)``)."""
        async for delta in self.backend.generate(request):
            yield delta

    async def prompt_ids(self, request: ChatRequest) -> list[int]:
        """The prompt's token ids (``/v1/messages/count_tokens``)."""
        if not isinstance(self.backend, PromptTokens):
            raise no_prompt_tokens(self.model.spec.id)
        return await self.backend.prompt_ids(request)

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        """Embed the inputs."""
        return await self.backend.embed(request)

    async def rerank(self, request: RerankRequest) -> RerankResult:
        """Score the documents."""
        return await self.backend.rerank(request)

    def __del__(self) -> None:
        backend: Backend | None = getattr(self, "backend", None)
        if backend is not None:
            backend.unload()


def _client_error(model_id: str, exc: BaseException) -> BaseException:
    """The plughost error a handle call's failure means for the client (``exc`` when it passes as is)."""
    if isinstance(exc, RayTaskError):
        cause = exc.cause
        if isinstance(cause, PlughostError):
            return cause  # the backend's own verdict (a prompt too long, say): same status as one machine
        if isinstance(cause, (BackPressureError, DeploymentUnavailableError, RayActorError)):
            return _client_error(model_id, cause)
        return BackendError(f"{model_id}: {type(cause).__name__}: {cause}")
    if isinstance(exc, BackPressureError):
        retry = exc.retry_after_s if getattr(exc, "retry_after_s", None) else 2
        return QueueFull(f"Too many requests are queued for '{model_id}': {exc}", retry_after=retry)
    if isinstance(exc, DeploymentUnavailableError):
        return ModelLoadFailed(f"'{model_id}' has no healthy deployment: {exc}")
    if isinstance(exc, RayActorError):
        return ModelLoadFailed(f"'{model_id}': its replicas kept dying ({type(exc).__name__}); try again later.")
    return exc


class RemoteBackend:
    """A model's backend as the routes see it, calling the model's deployment through its handle.

    A request whose replica died before answering is sent again (embeddings and rerank are pure
    functions of their input; a stream only before its first delta), so losing a replica costs
    latency, not errors.
    """

    def __init__(self, model_id: str, handle: DeploymentHandle) -> None:
        self.model_id = model_id
        self._handle = handle
        self._stream = handle.options(stream=True)

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        """Embed through a replica."""
        return await self._unary("embed", request)

    async def prompt_ids(self, request: ChatRequest) -> list[int]:
        """A chat prompt's token ids, from a replica (its backend's 400 if it cannot count)."""
        return await self._unary("prompt_ids", request)

    async def rerank(self, request: RerankRequest) -> RerankResult:
        """Rerank through a replica."""
        return await self._unary("rerank", request)

    async def _unary(self, method: str, request: Any) -> Any:
        for attempt in range(RETRIES + 1):
            try:
                return await getattr(self._handle, method).remote(request)
            except RayActorError as exc:
                if attempt == RETRIES:
                    raise _client_error(self.model_id, exc) from None
                log.warning("%s.%s: replica died (%s); sending again", self.model_id, method, type(exc).__name__)
            except (RayTaskError, BackPressureError, DeploymentUnavailableError) as exc:
                raise _client_error(self.model_id, exc) from None
        raise AssertionError("unreachable")

    async def generate(self, request: ChatRequest) -> AsyncIterator[ChatDelta]:
        """Stream deltas from a replica; closing this generator cancels the replica's generation."""
        for attempt in range(RETRIES + 1):
            stream = self._stream.generate.remote(request)
            assert isinstance(stream, DeploymentResponseGenerator)  # stream=True handle
            started = False
            try:
                async for delta in stream:
                    started = True
                    yield delta
                return
            except RayActorError as exc:
                if started or attempt == RETRIES:
                    raise _client_error(self.model_id, exc) from None
                log.warning("%s.generate: replica died before answering; sending again", self.model_id)
            except (RayTaskError, BackPressureError, DeploymentUnavailableError) as exc:
                raise _client_error(self.model_id, exc) from None
            finally:
                stream.cancel()  # a no-op once finished; stops the replica when the client left


class RayModelPool:
    """The model pool of the ingress: leases call the model deployments; the state shown by
    ``GET /v1/models`` comes from ``serve.status()`` (read every :data:`STATUS_PERIOD_S`)."""

    def __init__(
        self, registry: ModelRegistry, handles: Mapping[str, DeploymentHandle], plans: Mapping[str, ReplicaPlan]
    ) -> None:
        self.registry = registry
        self._backends = {mid: RemoteBackend(mid, handle) for mid, handle in handles.items()}
        self._handles = dict(handles)
        self._plans = dict(plans)
        self._deployments: dict[str, tuple[str | None, dict[str, int]]] = {}
        self._closing = False
        self._poller: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        """Accepting work (not shutting down)."""
        return not self._closing

    async def acquire(self, name: str, task: Task) -> Lease[Any]:
        """A lease on the deployment of model ``name`` (``ModelNotFound``/``WrongTask`` as on one
        machine). Nothing is pinned: Serve routes each call to a replica, so releasing is a no-op."""
        if self._closing:
            raise ShuttingDown("plughost is shutting down")
        model = self.registry.resolve(name, task)
        return Lease[Any](self._backends[model.spec.id], model, _nothing)

    async def load(self, name: str) -> ModelStatus:
        """Wait until the model has a running replica (scaling it from zero if it had none)."""
        model = self.registry.get(name)
        try:
            await self._handles[model.spec.id].ready.remote()
        except (RayActorError, RayTaskError, DeploymentUnavailableError, BackPressureError) as exc:
            raise _client_error(model.spec.id, exc) from None
        await self._refresh()
        return self.status(model.spec.id)

    async def unload(self, name: str) -> ModelStatus:
        """Serve's autoscaler owns the replicas: unloading by hand is a conflict that says what to do."""
        model = self.registry.get(name)
        raise Conflict(
            f"On Ray Serve the replicas of '{model.spec.id}' are managed by Serve: set "
            f"models.{model.spec.id}.autoscaling.min_replicas: 0 to let it scale to zero when idle."
        )

    def status(self, model_id: str) -> ModelStatus:
        """The deployment's state in the single-machine vocabulary, with its running replicas."""
        model = self.registry.get(model_id)
        plan = self._plans[model.spec.id]
        deployment_status, replicas = self._deployments.get(model.spec.id, (None, {}))
        state = model_state(deployment_status, replicas)
        holds = state in (ModelState.RESIDENT, ModelState.LOADING)
        return ModelStatus(
            id=model.spec.id,
            task=model.spec.task,
            plugin=model.plugin,
            state=state,
            placement=plan.grant.placement if holds else None,
            device=plan.grant.device if holds else None,
            gpu_bytes=plan.grant.gpu_bytes if holds else 0,
            host_bytes=plan.grant.host_bytes if holds else 0,
            in_flight=0,
            queued=0,
            last_used=None,
            pinned=model.pinned,
            error="deployment failed; see `serve status`" if state == ModelState.FAILED else None,
            replicas=replicas.get("RUNNING", 0),
        )

    def snapshot(self) -> list[ModelStatus]:
        """Status of every model, in registry order."""
        return [self.status(m.spec.id) for m in self.registry]

    async def preload(self) -> None:
        """Read the replica states once, then keep them fresh in the background."""
        await self._refresh()
        self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def close(self) -> None:
        """Refuse new work; the replicas belong to Serve and stay."""
        self._closing = True
        if self._poller is not None:
            self._poller.cancel()

    async def _poll(self) -> None:
        while not self._closing:
            await asyncio.sleep(STATUS_PERIOD_S)
            try:
                await self._refresh()
            except Exception:
                log.warning("reading serve.status() failed", exc_info=True)

    async def _refresh(self) -> None:
        self._deployments = await asyncio.to_thread(_deployment_states, self._handles)


def _nothing() -> None:
    pass


def _deployment_states(handles: Mapping[str, DeploymentHandle]) -> dict[str, tuple[str | None, dict[str, int]]]:
    """(status, replica counts by state) of each model's deployment, from ``serve.status()``."""
    app_name = serve.get_replica_context().app_name
    application = serve.status().applications.get(app_name)
    deployments = application.deployments if application is not None else {}
    out: dict[str, tuple[str | None, dict[str, int]]] = {}
    for model_id, handle in handles.items():
        found = deployments.get(handle.deployment_name)
        if found is not None:
            out[model_id] = (_name(found.status), {_name(k): v for k, v in found.replica_states.items()})
    return out


def _name(value: Any) -> str:
    return str(getattr(value, "value", value))  # Serve's str enums, or plain strings


@serve.deployment
@serve.ingress()
class Ingress:
    """The HTTP entry: plughost's Litestar app, built on the replica, with a :class:`RayModelPool`."""

    def __init__(
        self, config: HostConfig, handles: Mapping[str, DeploymentHandle], plans: Mapping[str, ReplicaPlan]
    ) -> None:
        self._config = config
        self._handles = handles
        self._plans = plans

    def __serve_build_asgi_app__(self) -> Litestar:
        return create_app(self._config, pool=lambda registry: RayModelPool(registry, self._handles, self._plans))


__all__ = ["Ingress", "ModelReplica", "RayModelPool", "application", "build_app"]
