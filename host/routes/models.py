"""``GET /v1/models``, ``GET /v1/models/{id}``, explicit load/unload, and ``GET /health``."""

from __future__ import annotations

from litestar import get, post
from litestar.datastructures import State
from litestar.params import FromPath

from host.protocol.models import Health, ModelCard, ModelList
from host.registry import RegisteredModel
from host.scheduling.scheduler import ModelState


def _card(state: State, model: RegisteredModel) -> ModelCard:
    spec = model.spec
    return ModelCard(
        id=spec.id, created=state.started, owned_by=model.plugin, task=spec.task, aliases=list(spec.aliases),
        description=spec.description, status=state.scheduler.status(spec.id),
    )


@get("/v1/models")
async def list_models(state: State) -> ModelList:
    """Every declared model with its task and residency."""
    return ModelList(data=[_card(state, m) for m in state.registry])


@get("/v1/models/{model_id:str}")
async def get_model(state: State, model_id: FromPath[str]) -> ModelCard:
    """One model (by id or alias)."""
    return _card(state, state.registry.get(model_id))


@post("/v1/models/{model_id:str}/load", status_code=200)
async def load_model(state: State, model_id: FromPath[str]) -> ModelCard:
    """Load a model now; answers once it is resident."""
    model = state.registry.get(model_id)
    await state.scheduler.load(model.spec.id)
    return _card(state, model)


@post("/v1/models/{model_id:str}/unload", status_code=200)
async def unload_model(state: State, model_id: FromPath[str]) -> ModelCard:
    """Unload a model now (409 while it serves requests)."""
    model = state.registry.get(model_id)
    await state.scheduler.unload(model.spec.id)
    return _card(state, model)


@get("/health")
async def health(state: State) -> Health:
    """Liveness and readiness, with the resident, loading and failed models."""
    snap = state.scheduler.snapshot()
    ready = state.scheduler.ready
    return Health(
        status="ok" if ready else "shutting_down",
        ready=ready,
        models=len(snap),
        resident=[s.id for s in snap if s.state == ModelState.RESIDENT],
        loading=[s.id for s in snap if s.state == ModelState.LOADING],
        failed=[s.id for s in snap if s.state == ModelState.FAILED],
    )
