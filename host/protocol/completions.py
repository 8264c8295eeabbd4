"""``POST /v1/completions`` (OpenAI's legacy text completions) request and response bodies.

The prompt is used as is (no chat template). LlamaIndex's ``OpenAILike`` and many older clients
call this route.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import msgspec
from msgspec import Meta

from host.contract.domain import ChatRequest, TokenLogprob
from host.contract.errors import InvalidRequest
from host.protocol.chat import ChatUsage
from host.protocol.common import GenerationRequest
from host.protocol.tools import MAX_TOP_LOGPROBS

#: OpenAI's default ``max_tokens`` of this route.
DEFAULT_MAX_TOKENS = 16


#: A prompt: never empty.
Prompt = Annotated[str, Meta(min_length=1)]

#: Cross-field rules of :meth:`CompletionRequest.to_domain`, stated in its JSON schema.
COMPLETION_SCHEMA_RULES: dict[str, Any] = {
    "allOf": [
        # best_of is not supported: the schema allows null; the server also takes a value equal to n
        {"properties": {"best_of": {"type": "null"}}},
        # echo with logprobs is not supported
        {
            "if": {"properties": {"echo": {"const": True}}, "required": ["echo"]},
            "then": {"properties": {"logprobs": {"type": "null"}}},
        },
    ]
}


class CompletionRequest(GenerationRequest, kw_only=True):
    """The request body: the shared sampling fields plus prompts, ``best_of``, ``echo``, ``logprobs``.

    ``suffix`` (fill-in-the-middle) is not supported: empty or null. ``best_of`` is accepted only
    equal to ``n``; ``echo`` and ``logprobs`` do not go together.
    """

    schema_rules: ClassVar[dict[str, Any]] = COMPLETION_SCHEMA_RULES

    prompt: Prompt | Annotated[list[Prompt], Meta(min_length=1, max_length=64)]
    max_tokens: Annotated[int, Meta(ge=1)] | None = DEFAULT_MAX_TOKENS
    best_of: Annotated[int, Meta(ge=1, le=16)] | None = None
    echo_: bool | None = msgspec.field(default=False, name="echo")
    logprobs: Annotated[int, Meta(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    suffix: Annotated[str, Meta(max_length=0)] | None = None

    @property
    def prompts(self) -> list[str]:
        """The prompts, one choice set each."""
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    @property
    def echo(self) -> bool:
        """Whether each choice starts with its prompt (``echo``; default false)."""
        return bool(self.echo_)

    def to_domain(self) -> list[ChatRequest]:
        """One domain request per prompt (raw prompts: no chat template)."""
        if self.best_of is not None and self.best_of != self.n:
            raise InvalidRequest("best_of other than n is not supported.", param="best_of")
        if self.echo and self.logprobs is not None:
            # Scoring the prompt needs logits at every prompt position, which the engine does not keep.
            raise InvalidRequest("echo together with logprobs is not supported.", param="echo")
        sampling = self.sampling(DEFAULT_MAX_TOKENS if self.max_tokens is None else self.max_tokens)
        choices = len(self.prompts) * self.n
        return [
            ChatRequest(
                model=self.model, messages=(), prompt=p, sampling=sampling, top_logprobs=self.logprobs, choices=choices
            )
            for p in self.prompts
        ]


class LegacyLogprobs(msgspec.Struct, kw_only=True):
    """The legacy logprobs object: parallel lists, one entry per token."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


def legacy_logprobs(items: list[TokenLogprob], offset: int) -> LegacyLogprobs:
    """Domain token logprobs → the legacy form; ``offset`` is where the first token's text starts."""
    offsets = []
    for t in items:
        offsets.append(offset)
        offset += len(t.token)
    return LegacyLogprobs(
        tokens=[t.token for t in items],
        token_logprobs=[t.logprob for t in items],
        top_logprobs=[_top(t) for t in items],
        text_offset=offsets,
    )


def _top(t: TokenLogprob) -> dict[str, float]:
    # Distinct tokens can share a text (byte fragments all read "\ufffd"): keep the likeliest.
    top: dict[str, float] = {}
    for c in t.top:
        top.setdefault(c.token, c.logprob)
    return top


class CompletionChoice(msgspec.Struct, kw_only=True):
    """One choice (``index`` = prompt index x n + choice)."""

    index: int
    text: str
    logprobs: LegacyLogprobs | None = None
    finish_reason: str | None = None


class Completion(msgspec.Struct, kw_only=True):
    """The response, and (with ``usage`` null and one choice) each streamed chunk."""

    id: str
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: ChatUsage | None = None
    object: str = "text_completion"
    system_fingerprint: str | None = None
