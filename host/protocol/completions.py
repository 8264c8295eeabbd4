"""``POST /v1/completions`` (OpenAI's legacy text completions) request and response bodies.

The prompt is used as is (no chat template). LlamaIndex's ``OpenAILike`` and many older clients
call this route.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from host.domain import ChatRequest, SamplingParams, TokenLogprob
from host.errors import InvalidRequest
from host.protocol.chat import ChatUsage, StreamOptions
from host.protocol.common import WireRequest
from host.protocol.tools import MAX_TOP_LOGPROBS

#: OpenAI's default ``max_tokens`` of this route.
DEFAULT_MAX_TOKENS = 16


class CompletionRequest(WireRequest, kw_only=True):
    """The request body: OpenAI's fields plus the ``top_k``/``repetition_penalty`` extensions."""

    model: str
    prompt: str | Annotated[list[str], Meta(min_length=1, max_length=64)]
    max_tokens: Annotated[int, Meta(ge=1)] | None = DEFAULT_MAX_TOKENS
    temperature: Annotated[float, Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, Meta(gt=0, le=1)] | None = None
    top_k: Annotated[int, Meta(ge=-1)] | None = None
    repetition_penalty: Annotated[float, Meta(gt=0, le=10)] | None = None
    presence_penalty: Annotated[float, Meta(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Meta(ge=-2, le=2)] | None = None
    stop: str | Annotated[list[str], Meta(max_length=4)] | None = None
    seed: int | None = None
    # Generated SDKs send ``null`` for every optional field they were not given: null means the default.
    n_: Annotated[int, Meta(ge=1, le=16)] | None = msgspec.field(default=1, name="n")
    best_of: Annotated[int, Meta(ge=1, le=16)] | None = None
    stream_: bool | None = msgspec.field(default=False, name="stream")
    stream_options: StreamOptions | None = None
    echo_: bool | None = msgspec.field(default=False, name="echo")
    logprobs: Annotated[int, Meta(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    suffix: str | None = None
    user: str | None = None

    @property
    def prompts(self) -> list[str]:
        """The prompts, one choice set each."""
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    @property
    def n(self) -> int:
        """Choices per prompt (``n``; default 1)."""
        return 1 if self.n_ is None else self.n_

    @property
    def stream(self) -> bool:
        """Whether to answer over SSE (``stream``; default false)."""
        return bool(self.stream_)

    @property
    def echo(self) -> bool:
        """Whether each choice starts with its prompt (``echo``; default false)."""
        return bool(self.echo_)

    def to_domain(self) -> list[ChatRequest]:
        """One domain request per prompt (raw prompts: no chat template)."""
        if self.suffix:
            raise InvalidRequest("suffix (fill-in-the-middle) is not supported.", param="suffix")
        if self.best_of is not None and self.best_of != self.n:
            raise InvalidRequest("best_of other than n is not supported.", param="best_of")
        if self.echo and self.logprobs is not None:
            # Scoring the prompt needs logits at every prompt position, which the engine does not keep.
            raise InvalidRequest("echo together with logprobs is not supported.", param="echo")
        for i, p in enumerate(self.prompts):
            if not p:
                raise InvalidRequest(
                    "prompt must not be empty.", param="prompt" if isinstance(self.prompt, str) else f"prompt[{i}]"
                )
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        if any(s == "" for s in stop):
            raise InvalidRequest("stop sequences must not be empty.", param="stop")
        sampling = SamplingParams(
            max_tokens=DEFAULT_MAX_TOKENS if self.max_tokens is None else self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=None if self.top_k in (None, -1, 0) else self.top_k,
            repetition_penalty=self.repetition_penalty,
            presence_penalty=self.presence_penalty or 0.0,
            frequency_penalty=self.frequency_penalty or 0.0,
            stop=stop,
            seed=self.seed,
        )
        return [
            ChatRequest(model=self.model, messages=(), prompt=p, sampling=sampling, top_logprobs=self.logprobs)
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
