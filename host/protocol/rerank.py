"""``POST /v1/rerank`` (also ``/rerank`` and ``/v2/rerank``) request and response bodies.

Two response dialects share the request body (the rule is documented in docs/api.md):

- the seed's: a ``/v1/rerank`` request that sends neither ``top_n`` nor ``return_documents``
  (``top_k`` or no limit) gets ``document`` as a bare string, as the seed API answered;
- Cohere's (also Jina's and vLLM's): ``/rerank``, ``/v2/rerank``, or a request that sends ``top_n``
  or ``return_documents``, gets ``document: {"text": ...}``, which the Cohere SDK, litellm's
  ``cohere`` and ``hosted_vllm`` providers and Jina clients read.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from host.contract.domain import RerankRequest
from host.contract.errors import InvalidRequest
from host.protocol.common import WireRequest

#: The paths whose answers always take Cohere's document shape.
COHERE_PATHS = ("/rerank", "/v2/rerank")


class DocumentObject(msgspec.Struct, kw_only=True):
    """A document sent as ``{"text": ...}`` (Cohere / Jina style)."""

    text: str


class RerankBody(WireRequest, kw_only=True):
    """The contract's ``{model, query, documents, top_k}`` plus what RAG clients send:
    ``top_n`` (alias of ``top_k``), ``return_documents``, documents as objects, ``instruction``,
    and ``raw_scores`` (TEI's name: the model's scores before they are mapped into [0, 1])."""

    model: str
    query: Annotated[str, Meta(pattern=r"\S", description="not empty, not only white space")]
    documents: Annotated[list[str | DocumentObject], Meta(min_length=1)]
    top_k: Annotated[int, Meta(ge=1)] | None = None
    top_n: Annotated[int, Meta(ge=1)] | None = None
    return_documents: bool | None = None  # null: the default (true)
    raw_scores: bool | None = None
    instruction: str | None = None
    max_chunks_per_doc: int | None = None

    def to_domain(self, max_documents: int) -> tuple[RerankRequest, int | None]:
        """Build the domain request; also returns the result limit (``None``: all documents)."""
        if len(self.documents) > max_documents:
            raise InvalidRequest(
                f"'documents' has {len(self.documents)} items; the limit is {max_documents}.", param="documents"
            )
        limit = self.top_n if self.top_n is not None else self.top_k
        docs = tuple(d if isinstance(d, str) else d.text for d in self.documents)
        return RerankRequest(model=self.model, query=self.query, documents=docs, instruction=self.instruction), limit

    def document_objects(self, path: str) -> bool:
        """Whether the answer takes Cohere's ``document: {"text": ...}`` (see the module docstring)."""
        return path in COHERE_PATHS or self.top_n is not None or self.return_documents is not None


class RerankResultItem(msgspec.Struct, omit_defaults=True):
    """One scored document. ``score`` and ``relevance_score`` carry the same value; ``document`` is
    the text (the seed's dialect) or ``{"text": ...}`` (Cohere's)."""

    index: int
    score: float
    relevance_score: float
    document: str | DocumentObject | None = None


class RerankUsage(msgspec.Struct):
    """Token accounting of a rerank response."""

    prompt_tokens: int
    total_tokens: int


class RerankResponse(msgspec.Struct):
    """The response body: results sorted by score, highest first."""

    model: str
    results: list[RerankResultItem]
    usage: RerankUsage
    id: str | None = None
    object: str = "rerank"
