"""Cohere's ``POST /v2/embed`` (the Cohere SDK's ``ClientV2.embed``) over the embedding models."""

from __future__ import annotations

from litestar import post
from litestar.params import JSONBody

from host.contract.errors import InvalidRequest
from host.contract.spec import Task
from host.protocol.cohere_embed import CohereEmbedRequest, CohereEmbedResponse, embed_response
from host.routes.deps import ConfigDep, MetricsDep, SchedulerDep
from host.server.openapi import MODEL_ERRORS, WireBody


@post("/v2/embed", status_code=200, dto=WireBody[CohereEmbedRequest], return_dto=None, responses=MODEL_ERRORS)
async def cohere_embed(
    data: JSONBody[CohereEmbedRequest], scheduler: SchedulerDep, config: ConfigDep, metrics: MetricsDep
) -> CohereEmbedResponse:
    """Embed ``texts`` for an ``input_type``, in each of ``embedding_types`` (Cohere's v2 API)."""
    domain = data.to_domain(config.server.max_embedding_inputs)
    with await scheduler.acquire(domain.model, Task.EMBEDDING) as lease:
        try:
            result = await lease.backend.embed(domain)
        except InvalidRequest as exc:
            if exc.param == "input":  # the backend names OpenAI's field; Cohere's is ``texts``
                exc.param = "texts"
            raise
    metrics.tokens(lease.model.spec.id, result.prompt_tokens)
    return embed_response(data, result.vectors, result.prompt_tokens)
