"""``POST /v1/rerank``, and ``/rerank``, ``/v2/rerank`` for the clients of Cohere's API (Cohere's
SDK v2, Jina, vLLM, litellm, RAG clients that drop the ``/v1``): one service, two document shapes
(:mod:`host.protocol.rerank`)."""

from __future__ import annotations

import uuid

from litestar import post
from litestar.params import JSONBody

from host.contract.config import HostConfig
from host.contract.errors import InvalidRequest
from host.contract.spec import Task
from host.metrics import Observer
from host.protocol.rerank import (
    COHERE_PATHS,
    DocumentObject,
    RerankBody,
    RerankResponse,
    RerankResultItem,
    RerankUsage,
)
from host.routes.deps import ConfigDep, MetricsDep, SchedulerDep
from host.scheduling.pool import ModelPool
from host.server.openapi import MODEL_ERRORS, WireBody


@post("/v1/rerank", status_code=200, dto=WireBody[RerankBody], return_dto=None, responses=MODEL_ERRORS)
async def rerank(
    data: JSONBody[RerankBody], scheduler: SchedulerDep, config: ConfigDep, metrics: MetricsDep
) -> RerankResponse:
    """Score documents against the query; results sorted by score, highest first. ``document`` is
    the seed's bare string unless the request sends ``top_n`` or ``return_documents`` (then ``{"text"}``)."""
    return await _rerank(data, data.document_objects("/v1/rerank"), scheduler, config, metrics)


@post(list(COHERE_PATHS), status_code=200, dto=WireBody[RerankBody], return_dto=None, responses=MODEL_ERRORS)
async def rerank_cohere(
    data: JSONBody[RerankBody], scheduler: SchedulerDep, config: ConfigDep, metrics: MetricsDep
) -> RerankResponse:
    """Cohere's, Jina's and vLLM's rerank: the same scores, ``document`` as ``{"text": ...}``."""
    return await _rerank(data, True, scheduler, config, metrics)


async def _rerank(
    body: RerankBody, objects: bool, scheduler: ModelPool, config: HostConfig, metrics: Observer
) -> RerankResponse:
    domain, limit = body.to_domain(config.server.max_rerank_documents)
    with await scheduler.acquire(domain.model, Task.RERANK) as lease:
        result = await lease.backend.rerank(domain)
    metrics.tokens(lease.model.spec.id, result.prompt_tokens)
    scores = result.scores
    if body.raw_scores:
        if result.raw_scores is None:
            raise InvalidRequest(f"The model '{lease.model.spec.id}' has no raw scores.", param="raw_scores")
        scores = result.raw_scores
    order = sorted(range(len(scores)), key=lambda i: scores[i], reverse=True)
    if limit is not None:
        order = order[:limit]
    keep = body.return_documents is not False
    results = [
        RerankResultItem(
            index=i,
            score=scores[i],
            relevance_score=scores[i],
            document=(DocumentObject(text=domain.documents[i]) if objects else domain.documents[i]) if keep else None,
        )
        for i in order
    ]
    usage = RerankUsage(prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens)
    return RerankResponse(model=lease.model.spec.id, results=results, usage=usage, id=f"rerank-{uuid.uuid4().hex}")
