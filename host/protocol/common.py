"""Wire pieces shared by several routes."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from host.contract.domain import SamplingParams


class WireRequest(msgspec.Struct, kw_only=True):
    """Base of request bodies: unknown fields are accepted and ignored (clients send extras)."""


class StreamOptions(msgspec.Struct, kw_only=True):
    """``stream_options``: ``include_usage`` adds a final usage chunk (``null``: false)."""

    include_usage: bool | None = False


#: Temperatures below this are greedy decoding (vLLM's ``_SAMPLING_EPS``): dividing logits by a
#: subnormal temperature (1e-40, 5e-324) overflows them to infinity.
GREEDY_BELOW = 1e-5
#: The documented range of ``repetition_penalty`` (transformers' multiplicative penalty; 1 is off).
#: Below the minimum, dividing a logit by it overflows float32 (1e-300 made the distribution NaN).
REPETITION_PENALTY_RANGE = (0.01, 10.0)
#: A stop sequence: never empty (an empty one would stop before the first token).
StopString = Annotated[str, Meta(min_length=1)]


class GenerationRequest(WireRequest, kw_only=True):
    """The sampling and streaming fields ``/v1/chat/completions`` and ``/v1/completions`` share:
    OpenAI's, plus the ``top_k``/``repetition_penalty`` extensions.

    ``temperature`` below 1e-5 is greedy (0); ``top_p`` 0 keeps only the likeliest token;
    ``top_k`` -1 or 0 is off; ``repetition_penalty`` is 0.01 to 10 (1 is off).
    """

    model: str
    temperature: Annotated[float, Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    top_k: Annotated[int, Meta(ge=-1)] | None = None
    repetition_penalty: (
        Annotated[float, Meta(ge=REPETITION_PENALTY_RANGE[0], le=REPETITION_PENALTY_RANGE[1])] | None
    ) = None
    presence_penalty: Annotated[float, Meta(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Meta(ge=-2, le=2)] | None = None
    stop: StopString | Annotated[list[StopString], Meta(max_length=4)] | None = None
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
        """The domain sampling parameters, normalised: a temperature below :data:`GREEDY_BELOW` is 0
        (greedy), ``top_k`` -1 or 0 is off."""
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        temperature = self.temperature
        if temperature is not None and temperature < GREEDY_BELOW:
            temperature = 0.0
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=self.top_p,
            top_k=None if self.top_k in (None, -1, 0) else self.top_k,
            repetition_penalty=self.repetition_penalty,
            presence_penalty=self.presence_penalty or 0.0,
            frequency_penalty=self.frequency_penalty or 0.0,
            stop=stop,
            seed=self.seed,
        )
