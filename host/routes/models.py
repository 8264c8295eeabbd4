"""``GET /v1/models``, ``GET /v1/models/{id}``, explicit load/unload/pin, and ``GET /health``."""

from __future__ import annotations

from litestar import Response, get, post
from litestar.params import FromPath, FromQuery

from host.contract.errors import InvalidRequest, NotFound
from host.contract.spec import Task
from host.protocol.models import Health, ModelCard, ModelList
from host.registry import RegisteredModel
from host.routes.deps import RegistryDep, SchedulerDep, StartedDep
from host.scheduling.pool import ModelPool, Pinning, unload_when_idle
from host.scheduling.status import ModelState
from host.server.openapi import COMMON_ERRORS, MANAGE_ERRORS


def _card(model: RegisteredModel, scheduler: ModelPool, started: int) -> ModelCard:
    spec = model.spec
    context = spec.capabilities.context_length
    return ModelCard(
        id=spec.id,
        created=started,
        owned_by=model.plugin,
        task=spec.task,
        aliases=list(spec.aliases),
        description=spec.description,
        status=scheduler.status(spec.id),
        context_length=context,
        max_model_len=context,
        capabilities=spec.capabilities if spec.task == Task.CHAT else None,
    )


@get("/v1/models", responses=COMMON_ERRORS)
async def list_models(registry: RegistryDep, scheduler: SchedulerDep, started: StartedDep) -> ModelList:
    """Every declared model with its task and residency."""
    return ModelList(data=[_card(m, scheduler, started) for m in registry])


@get("/v1/models/{model_id:path}", responses=COMMON_ERRORS)
async def get_model(
    registry: RegistryDep, scheduler: SchedulerDep, started: StartedDep, model_id: FromPath[str]
) -> ModelCard:
    """One model (by id or alias; hub-style ids with a slash work too)."""
    return _card(registry.get(model_id.lstrip("/")), scheduler, started)


@post("/v1/models/{model_path:path}", status_code=200, responses=MANAGE_ERRORS)
async def manage_model(
    registry: RegistryDep,
    scheduler: SchedulerDep,
    started: StartedDep,
    model_path: FromPath[str],
    wait_s: FromQuery[float] = 0,
) -> ModelCard:
    """``POST /v1/models/{id}/load`` loads a model now (answers once it is resident);
    ``POST /v1/models/{id}/unload`` unloads it (409 while it serves requests; ``?wait_s=N`` first
    waits up to N seconds for them to finish); ``/pin`` and ``/unpin`` keep it where it is or let it go."""
    name, _, action = model_path.strip("/").rpartition("/")
    if action not in _ACTIONS or not name:
        raise NotFound(
            f"POST /v1/models/{model_path.strip('/')}: expected /v1/models/{{id}}/" + ", /".join(_ACTIONS) + "."
        )
    if not 0 <= wait_s <= _MAX_WAIT_S:
        raise InvalidRequest(f"wait_s must be between 0 and {_MAX_WAIT_S} seconds.", param="wait_s")
    model = registry.get(name)
    if action == "load":
        await scheduler.load(model.spec.id)
    elif action == "unload":
        await unload_when_idle(scheduler, model.spec.id, wait_s)
    elif isinstance(scheduler, Pinning):
        scheduler.pin(model.spec.id, action == "pin")
    else:
        raise NotFound(f"This server's models cannot be pinned at run time; set models.{model.spec.id}.pinned.")
    return _card(model, scheduler, started)


_ACTIONS = ("load", "unload", "pin", "unpin")
_MAX_WAIT_S = 600


@get("/health")
async def health(scheduler: SchedulerDep) -> Response[Health]:
    """Liveness and readiness, with the resident, loading and failed models (503 while shutting down)."""
    snap = scheduler.snapshot()
    ready = scheduler.ready
    body = Health(
        status="ok" if ready else "shutting_down",
        ready=ready,
        models=len(snap),
        resident=[s.id for s in snap if s.state == ModelState.RESIDENT],
        loading=[s.id for s in snap if s.state == ModelState.LOADING],
        failed=[s.id for s in snap if s.state == ModelState.FAILED],
    )
    return Response(body, status_code=200 if ready else 503)
