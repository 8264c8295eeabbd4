"""``POST /v1/rerank`` (also ``/rerank`` and ``/v2/rerank``) request and response bodies."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from host.contract.domain import RerankRequest
from host.contract.errors import InvalidRequest
from host.protocol.common import WireRequest


class DocumentObject(msgspec.Struct, kw_only=True):
    """A document sent as ``{"text": ...}`` (Cohere / Jina style)."""

    text: str


class RerankBody(WireRequest, kw_only=True):
    """The contract's ``{model, query, documents, top_k}`` plus what RAG clients send:
    ``top_n`` (alias of ``top_k``), ``return_documents``, documents as objects, ``instruction``."""

    model: str
    query: Annotated[str, Meta(pattern=r"\S", description="not empty, not only white space")]
    documents: Annotated[list[str | DocumentObject], Meta(min_length=1)]
    top_k: Annotated[int, Meta(ge=1)] | None = None
    top_n: Annotated[int, Meta(ge=1)] | None = None
    return_documents: bool | None = True  # null: the default (true)
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


class RerankResultItem(msgspec.Struct, omit_defaults=True):
    """One scored document. ``score`` and ``relevance_score`` carry the same value."""

    index: int
    score: float
    relevance_score: float
    document: str | None = None


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
