"""Cohere's ``POST /v2/embed``: request and response bodies, and the embedding types.

``input_type`` maps onto the embedding models' query/document split (``search_query`` gets the
model's query instruction; ``search_document``, ``classification`` and ``clustering`` none, unless
``instruction`` asks for one, as Qwen3-Embedding's own evaluation embeds symmetric tasks).
``embedding_types`` are computed from the model's L2-normalised float32 vectors:

- ``float``: the vector; ``base64``: its little-endian float32 bytes in base64;
- ``binary`` / ``ubinary``: one bit per dimension (1 where the value is positive), packed eight to
  a byte, most significant bit first; ``ubinary`` as unsigned bytes, ``binary`` as signed ones
  (byte − 128), as Cohere and sentence-transformers define them;
- ``int8`` / ``uint8``: one byte per dimension, ``round(x · 32 · √d)`` clipped to [−128, 127]
  (``uint8``: that + 128). A fixed scale for every vector of a model (not a per-batch range), so
  dot products between quantised vectors keep their order; a unit vector's components are about
  ``1/√d``, so the scale spends ±4 standard deviations on the byte's range.
"""

from __future__ import annotations

import base64
import uuid
from typing import Annotated, Any, ClassVar, Literal

import msgspec
import numpy as np
from msgspec import Meta

from host.contract.domain import EmbeddingRequest
from host.contract.errors import InvalidRequest
from host.protocol.common import WireRequest

EmbeddingType = Literal["float", "int8", "uint8", "binary", "ubinary", "base64"]
InputType = Literal["search_document", "search_query", "classification", "clustering"]
#: int8/uint8: this many quantisation steps per 1/√d (see the module docstring).
INT8_STEPS_PER_SIGMA = 32


class CohereEmbedRequest(WireRequest, kw_only=True):
    """Cohere's v2 embed body (texts only), with plughost's ``instruction`` extension."""

    # What to_domain refuses, stated in the schema (the fields stay typed so that its 400s say why).
    schema_rules: ClassVar[dict[str, Any]] = {
        "properties": {
            "images": {"type": "null", "description": "not supported: the models here embed text only"},
            "inputs": {"type": "null", "description": "not supported: the models here embed text only"},
            "max_tokens": {"type": "null", "description": "not supported: truncate 'END' cuts over-long inputs"},
            "truncate": {"enum": ["NONE", "END", None], "description": "'START' is not supported"},
        }
    }

    model: str
    texts: Annotated[list[Annotated[str, Meta(min_length=1)]], Meta(min_length=1)]
    input_type: InputType
    embedding_types: Annotated[list[EmbeddingType], Meta(min_length=1)] | None = None
    truncate: Literal["NONE", "END", "START"] | None = None
    output_dimension: Annotated[int, Meta(ge=1)] | None = None
    max_tokens: int | None = None
    images: list[Any] | None = None
    inputs: list[Any] | None = None
    instruction: str | None = None

    def to_domain(self, max_inputs: int) -> EmbeddingRequest:
        """Validate what the schema cannot say and build the domain request."""
        for field in ("images", "inputs"):
            if getattr(self, field) is not None:
                raise InvalidRequest(f"'{field}' is not supported: the models here embed text only.", param=field)
        if self.max_tokens is not None:
            raise InvalidRequest(
                "'max_tokens' is not supported; inputs over the model's limit are cut with truncate 'END'.",
                param="max_tokens",
            )
        if self.truncate == "START":
            raise InvalidRequest("truncate 'START' is not supported; use 'END' or 'NONE'.", param="truncate")
        if len(self.texts) > max_inputs:
            raise InvalidRequest(f"'texts' has {len(self.texts)} items; the limit is {max_inputs}.", param="texts")
        query = self.input_type == "search_query" or self.instruction is not None
        return EmbeddingRequest(
            model=self.model,
            texts=tuple(self.texts),
            input_type="query" if query else "document",
            instruction=self.instruction,
            dimensions=self.output_dimension,
            truncate=self.truncate != "NONE",  # Cohere's default is END
        )


class Embeddings(msgspec.Struct, omit_defaults=True):
    """``embeddings``: one list per requested type, one entry per text."""

    float_: list[list[float]] | None = msgspec.field(default=None, name="float")
    int8: list[list[int]] | None = None
    uint8: list[list[int]] | None = None
    binary: list[list[int]] | None = None
    ubinary: list[list[int]] | None = None
    base64: list[str] | None = None


class BilledUnits(msgspec.Struct):
    """Tokens read."""

    input_tokens: int


class ApiVersion(msgspec.Struct):
    """The API version answered."""

    version: str = "2"


class ResponseMeta(msgspec.Struct):
    """``meta``: the API version and the tokens billed."""

    billed_units: BilledUnits
    api_version: ApiVersion = msgspec.field(default_factory=ApiVersion)


class CohereEmbedResponse(msgspec.Struct):
    """``embeddings_by_type``, Cohere's v2 answer."""

    id: str
    embeddings: Embeddings
    texts: list[str]
    meta: ResponseMeta
    response_type: str = "embeddings_by_type"


def embed_response(body: CohereEmbedRequest, vectors: Any, prompt_tokens: int) -> CohereEmbedResponse:
    """The answer from the model's normalised vectors ([n, d] float32)."""
    floats = np.asarray(vectors, dtype=np.float32)
    types = body.embedding_types or ["float"]
    out = Embeddings()
    for kind in dict.fromkeys(types):
        if kind == "float":
            out.float_ = floats.tolist()
        elif kind == "base64":
            le = floats.astype("<f4", copy=False)
            out.base64 = [base64.b64encode(row.tobytes()).decode("ascii") for row in le]
        elif kind == "ubinary":
            out.ubinary = np.packbits(floats > 0, axis=1).tolist()  # most significant bit first
        elif kind == "binary":
            out.binary = (np.packbits(floats > 0, axis=1).astype(np.int16) - 128).tolist()
        else:
            signed = int8(floats)
            if kind == "int8":
                out.int8 = signed.tolist()
            else:
                out.uint8 = (signed.astype(np.int16) + 128).tolist()
    return CohereEmbedResponse(
        id=str(uuid.uuid4()),
        embeddings=out,
        texts=list(body.texts),
        meta=ResponseMeta(billed_units=BilledUnits(input_tokens=prompt_tokens)),
    )


def int8(vectors: np.ndarray) -> np.ndarray:
    """``round(x · 32 · √d)`` clipped to the int8 range (see the module docstring)."""
    scale = INT8_STEPS_PER_SIGMA * np.sqrt(vectors.shape[1])
    return np.clip(np.rint(vectors * scale), -128, 127).astype(np.int8)
