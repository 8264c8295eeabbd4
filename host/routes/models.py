"""``GET /v1/models``, ``GET /v1/models/{id}``, explicit load/unload/pin/pull, and ``GET /health``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post, route
from litestar.enums import HttpMethod
from litestar.params import FromPath, FromQuery, Parameter
from litestar.response import ServerSentEvent

from host.contract.errors import InvalidRequest, NotFound
from host.contract.spec import Task
from host.downloads.manager import Downloads
from host.downloads.pull import PullProgress
from host.protocol.models import Download, Health, ModelCard, ModelList
from host.registry import RegisteredModel
from host.routes.deps import DownloadsDep, RegistryDep, SchedulerDep, StartedDep
from host.scheduling.pool import ModelPool, Pinning, unload_when_idle
from host.scheduling.status import ModelState
from host.server.openapi import COMMON_ERRORS, MANAGE_ERRORS

_ACTIONS = ("load", "unload", "pin", "unpin", "pull")
_MAX_WAIT_S = 600


def _card(model: RegisteredModel, scheduler: ModelPool, started: int, downloads: Downloads) -> ModelCard:
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
        weights=downloads.info(model),
    )


@get("/v1/models", responses=COMMON_ERRORS)
async def list_models(
    registry: RegistryDep, scheduler: SchedulerDep, started: StartedDep, downloads: DownloadsDep
) -> ModelList:
    """Every declared model with its task, residency and weights (on disk, downloading, absent)."""
    return ModelList(data=[_card(m, scheduler, started, downloads) for m in registry])


class OneModel(Controller):
    """``GET /v1/models/{id}`` and ``POST /v1/models/{id}/load|unload|pin|unpin|pull``: one route.

    Its own ``OPTIONS`` answer: Litestar builds a path's automatic one when the path's first handler
    is registered, so its ``Allow`` listed only that handler's method while a 405 listed both (and
    two handlers with different parameter names were two routes).
    """

    path = "/v1/models/{model_id:path}"

    @route(http_method=HttpMethod.OPTIONS, status_code=204, include_in_schema=False)
    async def allowed(self, request: Request[Any, Any, Any]) -> Response[None]:
        """``Allow``: every method of this path."""
        methods = sorted(request.app.route_handler_method_map[self.path])
        return Response(None, status_code=204, headers={"Allow": ", ".join(methods)})

    @get(responses=COMMON_ERRORS)
    async def get_model(
        self,
        registry: RegistryDep,
        scheduler: SchedulerDep,
        started: StartedDep,
        downloads: DownloadsDep,
        model_id: FromPath[str],
    ) -> ModelCard:
        """One model (by id or alias; hub-style ids with a slash work too)."""
        return _card(registry.get(model_id.lstrip("/")), scheduler, started, downloads)

    @post(status_code=200, responses=MANAGE_ERRORS)
    async def manage_model(
        self,
        registry: RegistryDep,
        scheduler: SchedulerDep,
        started: StartedDep,
        downloads: DownloadsDep,
        model_id: FromPath[str],
        stream: FromQuery[bool] = False,
        # The bounds stated in the schema too (Litestar drops a bound of 0 from its own translation).
        wait_s: Annotated[float, Parameter(schema_extra={"minimum": 0, "maximum": _MAX_WAIT_S})] = 0,
    ) -> Response[Any]:
        """``POST /v1/models/{id}/load`` loads a model now (answers once it is resident);
        ``POST /v1/models/{id}/unload`` unloads it (409 while it serves requests; ``?wait_s=N`` first
        waits up to N seconds for them to finish); ``/pin`` and ``/unpin`` keep it where it is or let it go;
        ``POST /v1/models/{id}/pull`` downloads its weights in the background: 202 with the card at once,
        or with ``?stream=true`` an SSE stream of progress events until ``done`` (100 %) or ``failed``."""
        name, _, action = model_id.strip("/").rpartition("/")
        if action not in _ACTIONS or not name:
            raise NotFound(
                f"POST /v1/models/{model_id.strip('/')}: expected /v1/models/{{id}}/" + ", /".join(_ACTIONS) + "."
            )
        if not 0 <= wait_s <= _MAX_WAIT_S:
            raise InvalidRequest(f"wait_s must be between 0 and {_MAX_WAIT_S} seconds.", param="wait_s")
        model = registry.get(name)
        if action == "pull":
            return _pull(model, scheduler, started, downloads, stream)
        if action == "load":
            await scheduler.load(model.spec.id)
        elif action == "unload":
            await unload_when_idle(scheduler, model.spec.id, wait_s)
        elif isinstance(scheduler, Pinning):
            scheduler.pin(model.spec.id, action == "pin")
        else:
            raise NotFound(f"This server's models cannot be pinned at run time; set models.{model.spec.id}.pinned.")
        return Response(_card(model, scheduler, started, downloads))


def _pull(
    model: RegisteredModel, scheduler: ModelPool, started: int, downloads: Downloads, stream: bool
) -> Response[Any]:
    if model.weights_ref is None:
        raise InvalidRequest(
            f"The weights of '{model.spec.id}' are a local folder or a demo model (models.{model.spec.id}.weights); "
            f"there is nothing to pull.",
            code="nothing_to_pull",
        )
    already = downloads.store.installed(model.weights_ref) is not None
    job = None if already else downloads.start(model)
    if not stream:
        return Response(_card(model, scheduler, started, downloads), status_code=200 if already else 202)

    async def events() -> AsyncIterator[str]:
        if job is None:
            info = downloads.info(model)
            size = info.bytes or 0
            yield msgspec.json.encode(
                PullProgress(
                    model=model.spec.id, repo=info.repo or "", state="done", source=info.source,
                    revision=info.commit or info.revision, total_bytes=size, done_bytes=size, percent=100.0,
                    folder=info.path,
                )
            ).decode()  # fmt: skip
            return
        async for progress in job.updates():
            yield msgspec.json.encode(progress).decode()

    return ServerSentEvent(events(), status_code=200)


@get("/health")
async def health(scheduler: SchedulerDep, downloads: DownloadsDep) -> Response[Health]:
    """Liveness and readiness, with the resident, loading and failed models and the running downloads
    (503 while shutting down)."""
    snap = scheduler.snapshot()
    ready = scheduler.ready
    body = Health(
        status="ok" if ready else "shutting_down",
        ready=ready,
        models=len(snap),
        resident=[s.id for s in snap if s.state == ModelState.RESIDENT],
        loading=[s.id for s in snap if s.state == ModelState.LOADING],
        failed=[s.id for s in snap if s.state == ModelState.FAILED],
        downloading=[
            Download(
                id=job.model.spec.id,
                repo=job.ref.repo,
                percent=job.progress.percent,
                done_bytes=job.progress.done_bytes,
                total_bytes=job.progress.total_bytes,
            )
            for job in downloads.active()
        ],
    )
    return Response(body, status_code=200 if ready else 503)
