"""Per-sequence next-token choice: penalties, temperature, top-k, top-p, seeded sampling.

The order and arithmetic follow transformers' ``generate`` (``RepetitionPenaltyLogitsProcessor``
over prompt and generated tokens, then ``TemperatureLogitsWarper``, ``TopKLogitsWarper``,
``TopPLogitsWarper``, multinomial sampling; greedy = argmax after the penalties), plus OpenAI's
presence/frequency penalties over the generated tokens only, applied after the repetition
penalty: ``logits[t] -= presence * (count[t] > 0) + frequency * count[t]``.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from host.sdk import InvalidRequest, SamplingParams

#: Temperatures below this are greedy (vLLM's ``_SAMPLING_EPS``; the wire layer normalises requests
#: the same way, this covers a model's generation_config): logits divided by a subnormal temperature
#: overflow to infinity.
GREEDY_BELOW = 1e-5


@dataclass(frozen=True)
class Resolved:
    """Sampling settings of one sequence, with the model's defaults filled in."""

    greedy: bool
    temperature: float
    top_k: int | None
    top_p: float
    repetition_penalty: float
    presence_penalty: float
    frequency_penalty: float
    seed: int | None


def resolve(params: SamplingParams, defaults: Mapping[str, Any]) -> Resolved:
    """Fill ``None`` fields from ``defaults`` (the model's generation_config.json).

    A temperature below :data:`GREEDY_BELOW` is greedy; so is a model whose generation_config has
    ``do_sample: false`` when the request sets no temperature.
    """
    temperature = params.temperature
    if temperature is None:
        temperature = float(defaults.get("temperature", 1.0)) if defaults.get("do_sample", False) else 0.0
    top_k = params.top_k if params.top_k is not None else defaults.get("top_k")
    top_p = params.top_p if params.top_p is not None else defaults.get("top_p")
    rep = params.repetition_penalty if params.repetition_penalty is not None else defaults.get("repetition_penalty")
    return Resolved(
        greedy=temperature < GREEDY_BELOW,
        temperature=float(temperature),
        top_k=int(top_k) if top_k else None,
        top_p=float(top_p) if top_p is not None else 1.0,
        repetition_penalty=float(rep) if rep is not None else 1.0,
        presence_penalty=float(params.presence_penalty),
        frequency_penalty=float(params.frequency_penalty),
        seed=params.seed,
    )


class Sampler:
    """The sampling state of one sequence: its settings, token history and random generator."""

    def __init__(self, settings: Resolved, prompt_ids: list[int]) -> None:
        self.settings = settings
        self.generator = torch.Generator(device="cpu")
        # Any integer is a valid OpenAI seed; torch takes 64 bits.
        self.generator.manual_seed(settings.seed % (1 << 64) if settings.seed is not None else secrets.randbits(63))
        self._seen: set[int] = set(prompt_ids)  # repetition penalty: prompt and generated tokens
        self._seen_tensor: torch.Tensor | None = None
        self._counts: dict[int, int] = {}  # presence/frequency: generated tokens only
        self.scores: torch.Tensor = torch.empty(0)  # what the last choice was made from (for logprobs)

    def observe(self, token: int) -> None:
        """Record a generated token."""
        if token not in self._seen:
            self._seen.add(token)
            self._seen_tensor = None
        self._counts[token] = self._counts.get(token, 0) + 1

    def penalised(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` (fp32 ``[vocab]``) after the repetition and presence/frequency penalties (a new tensor)."""
        s = self.settings
        scores = logits
        if s.repetition_penalty != 1.0 and self._seen:
            if self._seen_tensor is None:
                self._seen_tensor = torch.tensor(sorted(self._seen), dtype=torch.long)
            ids = self._seen_tensor[self._seen_tensor < scores.shape[0]]
            picked = scores.gather(0, ids)
            picked = torch.where(picked < 0, picked * s.repetition_penalty, picked / s.repetition_penalty)
            scores = scores.scatter(0, ids, picked)
        if (s.presence_penalty or s.frequency_penalty) and self._counts:
            ids = torch.tensor(list(self._counts), dtype=torch.long)
            counts = torch.tensor(list(self._counts.values()), dtype=scores.dtype)
            scores = scores.index_put((ids,), -(s.presence_penalty + s.frequency_penalty * counts), accumulate=True)
        return scores

    def candidates(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Temperature, top-k and top-p applied to penalised ``scores``: (scaled scores, token ids) kept."""
        s = self.settings
        scores = scores / s.temperature
        if s.top_k is not None and s.top_k < scores.shape[0]:
            values, indices = scores.topk(max(1, s.top_k))  # sorted, largest first
        else:
            values, indices = scores.sort(descending=True)
        if s.top_p < 1.0:
            probs = values.softmax(-1)
            above = probs.cumsum(-1) - probs  # probability mass ranked above each token
            keep = above < s.top_p
            keep[0] = True
            values, indices = values[keep], indices[keep]
        return values, indices

    def force(self, logits: torch.Tensor, token: int) -> int:
        """Take ``token`` without sampling (a forced token); its scores are kept for logprobs like a choice's."""
        self.scores = self.penalised(logits)
        return token

    def choose(self, logits: torch.Tensor) -> int:
        """The next token from this sequence's fp32 logits row ``[vocab]`` (on the CPU)."""
        scores = self.scores = self.penalised(logits)
        if self.settings.greedy:
            return int(scores.argmax())
        values, indices = self.candidates(scores)
        probs = values.softmax(-1)
        if not bool(torch.isfinite(probs).all()):
            raise self.not_finite()
        return int(indices[torch.multinomial(probs, 1, generator=self.generator)])

    def not_finite(self) -> InvalidRequest:
        """The client's error for sampling settings whose next-token distribution is not finite (the
        wire ranges keep logits finite; this is the last guard, a request error rather than a 500)."""
        s = self.settings
        return InvalidRequest(
            f"The sampling settings (temperature {s.temperature:g}, top_p {s.top_p:g}, repetition_penalty "
            f"{s.repetition_penalty:g}, presence_penalty {s.presence_penalty:g}, frequency_penalty "
            f"{s.frequency_penalty:g}) make the next-token distribution not finite; choose less extreme values.",
            param="temperature",
            code="invalid_sampling",
        )
