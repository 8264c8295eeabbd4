"""``POST /v1/rerank`` (and ``/rerank``, ``/v2/rerank`` for RAG clients that post there)."""

from __future__ import annotations

import uuid

from litestar import Request, post

from host.errors import decode_body
from host.protocol.rerank import RerankBody, RerankResponse, RerankResultItem, RerankUsage
from host.routes.deps import ConfigDep, SchedulerDep
from host.spec import Task


@post(["/v1/rerank", "/rerank", "/v2/rerank"], status_code=200)
async def rerank(request: Request, scheduler: SchedulerDep, config: ConfigDep) -> RerankResponse:
    """Score documents against the query; results sorted by score, highest first."""
    body = decode_body(await request.body(), RerankBody)
    domain, limit = body.to_domain(config.server.max_rerank_documents)
    with await scheduler.acquire(domain.model, Task.RERANK) as lease:
        result = await lease.backend.rerank(domain)
    order = sorted(range(len(result.scores)), key=lambda i: result.scores[i], reverse=True)
    if limit is not None:
        order = order[:limit]
    results = [
        RerankResultItem(
            index=i,
            score=result.scores[i],
            relevance_score=result.scores[i],
            document=domain.documents[i] if body.return_documents else None,
        )
        for i in order
    ]
    usage = RerankUsage(prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens)
    return RerankResponse(model=lease.model.spec.id, results=results, usage=usage, id=f"rerank-{uuid.uuid4().hex}")
