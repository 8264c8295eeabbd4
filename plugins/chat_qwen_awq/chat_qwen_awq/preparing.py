"""A chat request → prompt ids, completion budget and sampling settings: what every engine of the
plugin is given, checked the same way (the plugin's own engine and vLLM share this code).

- :func:`generation_defaults`: sampling defaults and end-of-generation tokens of the checkpoint's
  ``generation_config.json``;
- :class:`Preparer`: renders the chat template with the request's thinking switch (or takes a raw
  prompt), rejects input far over the context from a prefix of its text (no full tokenisation),
  checks ``max_tokens`` against the cap and the context, bounds what one request may generate and
  return over all its choices (``max_request_output_tokens``, ``max_request_logprobs``), and
  resolves sampling defaults. Runs on one prepare thread (fast tokenizers are not thread-safe).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chat_qwen_awq import sampling, sizing
from chat_qwen_awq.prompt import render_messages
from chat_qwen_awq.thinking import resolve
from host.sdk import ChatRequest, InvalidRequest, RequestTooLarge, over_limit_prefix

_DEFAULT_KEYS = ("do_sample", "temperature", "top_p", "top_k", "repetition_penalty")


def generation_defaults(folder: Path, config: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
    """The sampling defaults of ``folder``'s ``generation_config.json`` and its end-of-generation ids
    (``config.json``'s when the file has none)."""
    file = folder / "generation_config.json"
    data = json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}
    eos = data.get("eos_token_id", config.get("eos_token_id"))
    eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
    return {k: data[k] for k in _DEFAULT_KEYS if k in data}, eos_ids


@dataclass(frozen=True)
class Prompt:
    """A validated request: prompt ids, the completion budget, sampling settings, stop strings, how
    many alternatives per token to report (``None``: no logprobs) and the thinking switch the
    template was rendered with (``None``: the template's default, or a model that cannot think)."""

    prompt_ids: list[int]
    max_tokens: int
    sampling: sampling.Resolved
    stops: tuple[str, ...] = ()
    top_logprobs: int | None = None
    thinking: bool | None = None


class Preparer:
    """Turns requests into :class:`Prompt` for one loaded model (see the module docstring).

    :param model_id: the model's id (named in error messages).
    :param tokenizer: the model's tokenizer, used on one thread only.
    :param limits: the model's context and token limits.
    :param defaults: sampling defaults (:func:`generation_defaults`).
    :param thinks: the chat template writes ``<think>`` blocks (the thinking switch applies).
    :param thinking: the model's default switch (``options.thinking``).
    """

    def __init__(
        self,
        model_id: str,
        tokenizer: Any,
        limits: sizing.Limits,
        defaults: dict[str, Any],
        *,
        thinks: bool = False,
        thinking: str | bool | None = None,
    ) -> None:
        self.model_id = model_id
        self.tokenizer = tokenizer
        self.limits = limits
        self.defaults = defaults
        self.thinks = thinks
        self.thinking_default = thinking

    def thinking(self, request: ChatRequest) -> bool | None:
        """The chat request's thinking switch (:func:`~chat_qwen_awq.thinking.resolve`); ``None``: the
        template decides, or the model cannot think, or the request is a raw prompt."""
        if not self.thinks or request.prompt is not None:
            return None
        return resolve(request, self.thinking_default)

    def prompt_ids(self, request: ChatRequest) -> list[int]:
        """The raw prompt tokenised, or the conversation rendered by the chat template."""
        if request.prompt is not None:
            self._reject_huge(request.prompt, "prompt")
            ids = [int(t) for t in self.tokenizer.encode(request.prompt, add_special_tokens=False)]
            if not ids:
                raise InvalidRequest("prompt must not be empty.", param="prompt")
            return ids
        # replayed reasoning counts where a thinking template shows it again: after the last user turn
        users = [i for i, m in enumerate(request.messages) if m.role == "user"]
        shown = request.messages[users[-1] + 1 :] if users else request.messages
        texts = [m.content for m in request.messages] + [m.reasoning or "" for m in shown]
        self._reject_huge("\n".join(t for t in texts if t), "messages")
        return render_messages(self.tokenizer, request, self.thinking(request))

    def prompt(self, request: ChatRequest) -> Prompt:
        """Render and tokenise the conversation, check the context; ``InvalidRequest`` when it does not fit."""
        max_tokens = request.sampling.max_tokens
        cap = self.limits.max_tokens_cap
        if max_tokens is not None and cap is not None and max_tokens > cap:
            # Rejected, not clamped: a client that asked for more must not silently get less.
            raise InvalidRequest(
                f"max_tokens is {max_tokens}, but '{self.model_id}' generates at most {cap} tokens per request "
                f"(models.{self.model_id}.options.max_tokens_cap).",
                param="max_tokens",
            )
        if request.thinking_budget is not None and request.thinking_budget < 0:
            raise InvalidRequest("thinking_budget must be 0 or more tokens.", param="thinking_budget")
        ids = self.prompt_ids(request)
        context = self.limits.context_length
        error = sizing.context_error(len(ids), max_tokens, context)
        if error is not None:
            raise error
        default = min(self.limits.default_max_tokens, cap or context, context - len(ids), self._fair_share(request))
        if max_tokens is not None:
            self._check_request_size(request, max_tokens)
        return Prompt(
            prompt_ids=ids,
            max_tokens=max_tokens if max_tokens is not None else default,
            sampling=sampling.resolve(request.sampling, self.defaults),
            stops=request.sampling.stop,
            top_logprobs=request.top_logprobs,
            thinking=self.thinking(request),
        )

    def _fair_share(self, request: ChatRequest) -> int:
        """The largest default ``max_tokens`` of one of the request's choices that keeps the whole
        request within ``max_request_output_tokens`` and ``max_request_logprobs`` (at least 1)."""
        limits = self.limits
        share = limits.max_request_output_tokens // request.choices
        entries = _per_token_entries(request)
        if entries:
            share = min(share, limits.max_request_logprobs // (request.choices * entries))
        return max(1, share)

    def _check_request_size(self, request: ChatRequest, max_tokens: int) -> None:
        """A 400 before any work when the request's choices together may generate, or return the log
        probabilities of, more than the model takes per request."""
        limits, n, model = self.limits, request.choices, self.model_id
        where = f"models.{model}.options"
        if n * max_tokens > limits.max_request_output_tokens:
            raise RequestTooLarge(
                f"This request may generate {n} x {max_tokens} = {n * max_tokens} tokens ({n} choices of max_tokens "
                f"{max_tokens}); '{model}' generates at most {limits.max_request_output_tokens} per request "
                f"({where}.max_request_output_tokens). Ask for fewer choices or fewer tokens.",
                param="max_tokens",
            )
        entries = _per_token_entries(request)
        if entries and n * max_tokens * entries > limits.max_request_logprobs:
            raise RequestTooLarge(
                f"This request may return {n} x {max_tokens} x {entries} = {n * max_tokens * entries} log "
                f"probabilities ({n} choices of max_tokens {max_tokens}, each token with {entries - 1} alternatives); "
                f"'{model}' returns at most {limits.max_request_logprobs} per request "
                f"({where}.max_request_logprobs). Ask for fewer choices, tokens or top_logprobs.",
                param="logprobs" if request.prompt is not None else "top_logprobs",
            )

    def _reject_huge(self, text: str, param: str) -> None:
        """A 400 for input far over the context, from a prefix of its text (no full tokenisation)."""
        context = self.limits.context_length
        prefix = over_limit_prefix(
            text, context, lambda t: self.tokenizer(t, add_special_tokens=False)["input_ids"], len
        )
        if prefix is not None:
            raise InvalidRequest(
                f"This model's maximum context length is {context} tokens, but the {param} take more than "
                f"{len(prefix)} tokens. Please shorten the {param}.",
                param=param,
                code="context_length_exceeded",
            )


def _per_token_entries(request: ChatRequest) -> int:
    """Log probabilities returned per generated token (0: none asked for)."""
    return 0 if request.top_logprobs is None else 1 + request.top_logprobs
