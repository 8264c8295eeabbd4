"""``POST /tokenize`` and ``POST /detokenize`` (vLLM's): any model whose backend has the
:class:`~host.contract.tokenizing.Tokenizing` capability, whatever its task; others answer 400."""

from __future__ import annotations

from typing import Any

from litestar import post
from litestar.params import JSONBody

from host.contract.errors import InvalidRequest
from host.contract.tokenizing import Tokenizing
from host.protocol.tokenize import DetokenizeBody, DetokenizeResponse, TokenizeBody, TokenizeResponse
from host.registry import ModelRegistry
from host.routes.deps import RegistryDep, SchedulerDep
from host.scheduling.lease import Lease
from host.scheduling.pool import ModelPool
from host.server.openapi import MODEL_ERRORS, WireBody


@post("/tokenize", status_code=200, dto=WireBody[TokenizeBody], return_dto=None, responses=MODEL_ERRORS)
async def tokenize(data: JSONBody[TokenizeBody], scheduler: SchedulerDep, registry: RegistryDep) -> TokenizeResponse:
    """Token ids of a prompt, or of chat messages rendered by the model's template."""
    domain = data.to_domain()
    with await _acquire(scheduler, registry, data.model) as lease:
        result = await lease.backend.tokenize(domain)
    strs = result.token_strs if data.return_token_strs else None
    context = lease.model.spec.capabilities.context_length
    return TokenizeResponse(count=len(result.tokens), max_model_len=context, tokens=result.tokens, token_strs=strs)


@post("/detokenize", status_code=200, dto=WireBody[DetokenizeBody], return_dto=None, responses=MODEL_ERRORS)
async def detokenize(
    data: JSONBody[DetokenizeBody], scheduler: SchedulerDep, registry: RegistryDep
) -> DetokenizeResponse:
    """The text of token ids."""
    with await _acquire(scheduler, registry, data.model) as lease:
        return DetokenizeResponse(prompt=await lease.backend.detokenize(data.tokens))


async def _acquire(scheduler: ModelPool, registry: ModelRegistry, name: str) -> Lease[Any]:
    """A lease on ``name`` under its own task; a 400 unless its backend can tokenise (the backend, not its
    class, is asked: on Ray Serve the lease's backend is a remote one)."""
    model = registry.get(name)
    lease: Lease[Any] = await scheduler.acquire(model.spec.id, model.spec.task)
    if not isinstance(lease.backend, Tokenizing):
        lease.release()
        raise InvalidRequest(f"The model '{model.spec.id}' does not expose its tokenizer.", param="model")
    return lease
