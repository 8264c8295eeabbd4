"""``POST /v1/rerank`` (and ``/rerank``, ``/v2/rerank`` for RAG clients that post there)."""

from __future__ import annotations

import uuid

from litestar import post
from litestar.params import JSONBody

from host.contract.spec import Task
from host.protocol.rerank import RerankBody, RerankResponse, RerankResultItem, RerankUsage
from host.routes.deps import ConfigDep, MetricsDep, SchedulerDep
from host.server.openapi import MODEL_ERRORS, WireBody


@post(
    ["/v1/rerank", "/rerank", "/v2/rerank"],
    status_code=200,
    dto=WireBody[RerankBody],
    return_dto=None,
    responses=MODEL_ERRORS,
)
async def rerank(
    data: JSONBody[RerankBody], scheduler: SchedulerDep, config: ConfigDep, metrics: MetricsDep
) -> RerankResponse:
    """Score documents against the query; results sorted by score, highest first."""
    body = data
    domain, limit = body.to_domain(config.server.max_rerank_documents)
    with await scheduler.acquire(domain.model, Task.RERANK) as lease:
        result = await lease.backend.rerank(domain)
    metrics.tokens(lease.model.spec.id, result.prompt_tokens)
    order = sorted(range(len(result.scores)), key=lambda i: result.scores[i], reverse=True)
    if limit is not None:
        order = order[:limit]
    results = [
        RerankResultItem(
            index=i,
            score=result.scores[i],
            relevance_score=result.scores[i],
            document=domain.documents[i] if body.return_documents is not False else None,
        )
        for i in order
    ]
    usage = RerankUsage(prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens)
    return RerankResponse(model=lease.model.spec.id, results=results, usage=usage, id=f"rerank-{uuid.uuid4().hex}")
