"""Validated, transport-free requests and results that backends work with.

Routes turn wire structs into these once; backends never see HTTP or JSON.
"""

from __future__ import annotations

from typing import Any

import msgspec


class ToolCall(msgspec.Struct, frozen=True, kw_only=True):
    """A function call: made by the model (``index`` counts the calls of a choice) or replayed in history.

    ``arguments`` is a JSON text (OpenAI's wire form), normally an object.
    """

    index: int = 0
    id: str
    name: str
    arguments: str


class ChatMessage(msgspec.Struct, frozen=True):
    """One turn of a conversation; ``content`` is plain text (text parts already joined).

    Assistant turns may carry ``tool_calls`` (``content`` then often empty) and, replayed from an
    earlier answer, the model's ``reasoning`` (OpenAI-compatible servers' ``reasoning_content`` /
    ``reasoning`` on an assistant message; ``None``: none was sent; a thinking model's chat template
    decides whether it is shown again); ``role == "tool"`` turns carry a call's result in
    ``content`` and the call's id in ``tool_call_id``.
    """

    role: str
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    reasoning: str | None = None


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


class Tool(msgspec.Struct, frozen=True, kw_only=True):
    """A function the model may call; ``parameters`` is its arguments' JSON schema (an object schema).

    ``strict``: the client asked for OpenAI's strict mode (arguments exactly as the schema says)."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool = False


class ToolChoice(msgspec.Struct, frozen=True, kw_only=True):
    """``mode``: "auto" (the model decides), "none" (text only), "required" (at least one call of any
    tool) or "function" (a call of ``name``). ``parallel``: more than one call is allowed."""

    mode: str = "auto"
    name: str | None = None
    parallel: bool = True


class OutputFormat(msgspec.Struct, frozen=True, kw_only=True):
    """``kind``: "text", "json_object" (any JSON object) or "json_schema" (JSON valid against ``schema``;
    ``strict``: the client asked for OpenAI's strict mode)."""

    kind: str = "text"
    schema: dict[str, Any] | None = None
    strict: bool = False


class ChatRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A chat completion to generate (one choice).

    ``prompt`` set means a raw completion (``/v1/completions``): the text is the whole prompt, no
    chat template, and ``messages`` is empty (and no reasoning is parsed). ``top_logprobs`` set
    (0..20) asks for the log probability of each generated token and that many alternatives.

    ``thinking`` is the request's own thinking switch, already resolved from the wire (``True``/
    ``False``: think first / answer at once); ``None`` means the request did not decide, and the
    backend applies its model's rules (Qwen3: a ``/think`` or ``/no_think`` in the last user
    message, then the model's configured default, then the chat template's own). Models that
    cannot think ignore it. ``thinking_budget`` caps the tokens of the think block: when it is
    spent the backend closes the block and the model answers (``None``: the model's default, no
    cap unless configured). ``sampling.max_tokens`` counts thinking tokens too.

    ``choices`` counts the generations of the whole client request this one belongs to (``n``,
    times the prompts of a legacy completion): bounds on a request's total output apply to all of
    them together.
    """

    model: str
    messages: tuple[ChatMessage, ...]
    sampling: SamplingParams = msgspec.field(default_factory=SamplingParams)
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice = msgspec.field(default_factory=ToolChoice)
    output: OutputFormat = msgspec.field(default_factory=OutputFormat)
    top_logprobs: int | None = None
    prompt: str | None = None
    thinking: bool | None = None
    thinking_budget: int | None = None
    choices: int = 1


class TopLogprob(msgspec.Struct, frozen=True):
    """A candidate token: its text, its UTF-8 bytes and its log probability."""

    token: str
    bytes: list[int]
    logprob: float


class TokenLogprob(msgspec.Struct, frozen=True):
    """A generated token's log probability and the ``top`` candidates at its position (best first)."""

    token: str
    bytes: list[int]
    logprob: float
    top: list[TopLogprob]


class ChatDelta(msgspec.Struct, kw_only=True):
    """A piece of generated text. The last delta of a generation carries ``finish_reason``
    ("stop", "length" or "tool_calls") and the token counts.

    ``text`` is the answer (OpenAI's ``content``); ``reasoning`` is the model's thinking, split out
    of the generated text (the think block's text without its tags: what the wire sends as
    ``reasoning_content`` and ``reasoning``); a delta may carry either or both, or neither.
    ``reasoning_tokens`` (last delta) is how many of ``completion_tokens`` the think block took,
    its tags included (``usage.completion_tokens_details.reasoning_tokens``). ``tool_calls`` are
    completed calls parsed from the answer; ``logprobs`` covers the tokens generated since the
    previous delta (when the request asked for them), thinking tokens included; ``stop_sequence``
    is the stop string of ``SamplingParams.stop`` that ended the generation, when one did (the last
    delta; Anthropic's Messages API reports it).
    """

    text: str = ""
    reasoning: str = ""
    finish_reason: str | None = None
    stop_sequence: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    tool_calls: list[ToolCall] = msgspec.field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None


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
    """One score in [0, 1] per document, in the order given.

    ``raw_scores``, when the model has them, are the scores before they were mapped into [0, 1]
    (a reranker's logit or logit margin), in the same order; ``None`` when it has none.
    """

    scores: list[float]
    prompt_tokens: int
    raw_scores: list[float] | None = None
