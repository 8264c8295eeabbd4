"""``POST /v1/embeddings`` request and response bodies."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import Meta

from host.contract.domain import EmbeddingRequest
from host.contract.errors import InvalidRequest
from host.protocol.common import WireRequest

_TOKEN_IDS = {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}}
#: What ``input`` really takes (msgspec's union cannot hold several array types, so the Struct decodes
#: a wider type and :meth:`EmbeddingsRequest.to_domain` checks the rest): a non-empty string, or a
#: non-empty list of non-empty strings, of token ids, or of non-empty token-id lists.
INPUT_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "minLength": 1},
        {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
        _TOKEN_IDS,
        {"type": "array", "minItems": 1, "items": _TOKEN_IDS},
    ]
}


class EmbeddingsRequest(WireRequest, kw_only=True):
    """OpenAI's embeddings body plus extensions: ``input_type`` ("query"/"document"),
    ``instruction`` (the query task text) and ``truncate``."""

    model: str
    schema_rules: ClassVar[dict[str, Any]] = {"properties": {"input": INPUT_SCHEMA}}

    input: str | list[str | int | list[int]]
    # ``null`` (what generated SDKs send for "not given") means the default.
    encoding_format: Literal["float", "base64"] | None = "float"
    dimensions: Annotated[int, Meta(ge=1)] | None = None
    user: str | None = None
    input_type: Literal["query", "document", "passage", "search_query", "search_document"] | None = None
    instruction: str | None = None
    truncate: bool | None = None

    def to_domain(self, max_inputs: int) -> EmbeddingRequest:
        """Normalise ``input`` into texts or token-id lists and build the domain request."""
        texts: tuple[str, ...] | None = None
        ids: tuple[tuple[int, ...], ...] | None = None
        raw = self.input
        if isinstance(raw, str):
            texts = (raw,)
        elif not raw:
            raise InvalidRequest("'input' must not be empty.", param="input")
        elif all(isinstance(x, int) for x in raw):
            ids = (tuple(raw),)  # type: ignore[arg-type]
        elif all(isinstance(x, list) for x in raw):
            ids = tuple(tuple(x) for x in raw)  # type: ignore[arg-type]
        elif all(isinstance(x, str) for x in raw):
            texts = tuple(raw)  # type: ignore[arg-type]
        else:
            raise InvalidRequest(
                "'input' must be a string, a list of strings, a list of token ids or a list of token-id lists "
                "(not a mix).",
                param="input",
            )
        count = len(texts if texts is not None else ids or ())
        if count > max_inputs:
            raise InvalidRequest(f"'input' has {count} items; the limit is {max_inputs}.", param="input")
        for i, item in enumerate(texts if texts is not None else ids or ()):
            if len(item) == 0:
                raise InvalidRequest(f"input[{i}] is empty.", param="input")
        for i, row in enumerate(ids or ()):
            if any(t < 0 for t in row):
                raise InvalidRequest(f"input[{i}] holds a negative token id.", param="input")
        kind = "query" if self.input_type in ("query", "search_query") else "document"
        if self.instruction is not None and self.input_type is None:
            kind = "query"  # an instruction only makes sense for queries
        return EmbeddingRequest(
            model=self.model,
            texts=texts,
            token_ids=ids,
            input_type=kind,
            instruction=self.instruction,
            dimensions=self.dimensions,
            truncate=self.truncate,
        )


class EmbeddingData(msgspec.Struct):
    """One vector: a float list or a base64 string of little-endian float32."""

    index: int
    embedding: list[float] | str
    object: str = "embedding"


class EmbeddingUsage(msgspec.Struct):
    """Token accounting of an embeddings response."""

    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(msgspec.Struct):
    """The response body."""

    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage
    object: str = "list"
