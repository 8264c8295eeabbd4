"""Wire pieces shared by several routes."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from host.contract.domain import SamplingParams
from host.contract.errors import InvalidRequest


class WireRequest(msgspec.Struct, kw_only=True):
    """Base of request bodies: unknown fields are accepted and ignored (clients send extras)."""


class StreamOptions(msgspec.Struct, kw_only=True):
    """``stream_options``: ``include_usage`` adds a final usage chunk (``null``: false)."""

    include_usage: bool | None = False


class GenerationRequest(WireRequest, kw_only=True):
    """The sampling and streaming fields ``/v1/chat/completions`` and ``/v1/completions`` share:
    OpenAI's, plus the ``top_k``/``repetition_penalty`` extensions."""

    model: str
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
    stream_: bool | None = msgspec.field(default=False, name="stream")
    stream_options: StreamOptions | None = None
    user: str | None = None

    @property
    def n(self) -> int:
        """How many choices to generate (``n``; default 1)."""
        return 1 if self.n_ is None else self.n_

    @property
    def stream(self) -> bool:
        """Whether to answer over SSE (``stream``; default false)."""
        return bool(self.stream_)

    def sampling(self, max_tokens: int | None) -> SamplingParams:
        """The domain sampling parameters (``top_k`` -1 or 0: off; empty stop sequences are a 400)."""
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        if any(s == "" for s in stop):
            raise InvalidRequest("stop sequences must not be empty.", param="stop")
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=None if self.top_k in (None, -1, 0) else self.top_k,
            repetition_penalty=self.repetition_penalty,
            presence_penalty=self.presence_penalty or 0.0,
            frequency_penalty=self.frequency_penalty or 0.0,
            stop=stop,
            seed=self.seed,
        )
