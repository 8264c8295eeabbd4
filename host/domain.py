"""Validated, transport-free requests and results that backends work with.

Routes turn wire structs into these once; backends never see HTTP or JSON.
"""

from __future__ import annotations

from typing import Any

import msgspec


class ChatMessage(msgspec.Struct, frozen=True):
    """One turn of a conversation; ``content`` is plain text (text parts already joined)."""

    role: str
    content: str


class SamplingParams(msgspec.Struct, frozen=True, kw_only=True):
    """How to generate. ``None`` means: the model's own generation_config default.

    ``temperature == 0`` means greedy decoding. Penalties follow OpenAI semantics;
    ``repetition_penalty`` is the multiplicative one of transformers (1.0 = off).
    """

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


class ChatRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A chat completion to generate (one choice)."""

    model: str
    messages: tuple[ChatMessage, ...]
    sampling: SamplingParams = msgspec.field(default_factory=SamplingParams)


class ChatDelta(msgspec.Struct, kw_only=True):
    """A piece of generated text. The last delta of a generation carries ``finish_reason``
    ("stop" or "length") and the token counts."""

    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


class EmbeddingRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Inputs to embed: texts, or pre-tokenised ids (exactly one of the two is set).

    ``input_type`` is ``"query"`` (gets the model's instruction) or ``"document"`` (none).
    ``dimensions`` asks for a truncated (Matryoshka) vector; ``truncate`` allows cutting
    inputs longer than the model's limit instead of rejecting them.
    """

    model: str
    texts: tuple[str, ...] | None = None
    token_ids: tuple[tuple[int, ...], ...] | None = None
    input_type: str = "document"
    instruction: str | None = None
    dimensions: int | None = None
    truncate: bool | None = None


class EmbeddingResult(msgspec.Struct, kw_only=True):
    """One L2-normalised float32 vector per input (a 2-D array-like of shape [n, d])."""

    vectors: Any
    prompt_tokens: int


class RerankRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Score each document's relevance to the query."""

    model: str
    query: str
    documents: tuple[str, ...]
    instruction: str | None = None


class RerankResult(msgspec.Struct, kw_only=True):
    """One score in [0, 1] per document, in the order given."""

    scores: list[float]
    prompt_tokens: int
