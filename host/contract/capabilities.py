"""What a model declares it honours, and the one check of a chat request against it.

A backend never has to reject a feature it does not have: the serving layer checks every chat
request against the model's :class:`Capabilities` before it acquires the model, and answers 400
naming the request's own field (each API dialect names it its way: ``response_format`` in Chat
Completions, ``text.format`` in Responses).
"""

from __future__ import annotations

import enum

import msgspec

from host.contract.domain import ChatRequest


class Feature(enum.StrEnum):
    """A feature a chat request may ask for beyond plain text generation."""

    TOOLS = "tools"  # function tools the model may (or must) call
    OUTPUT_FORMAT = "output_format"  # json_object / json_schema output
    LOGPROBS = "logprobs"  # log probabilities of the generated tokens
    RAW_PROMPT = "raw_prompt"  # a prompt used as is, without the chat template (/v1/completions)
    THINKING = "thinking"  # a request to think first (reasoning_effort, Anthropic's thinking)


class Capabilities(msgspec.Struct, frozen=True, kw_only=True):
    """A model's declared features and limits (``ModelSpec.capabilities``).

    :ivar context_length: tokens of prompt plus completion the model takes (``None``: not declared);
        reported by ``GET /v1/models`` (clients size their prompts with it).
    :ivar tools: honours ``tools`` and every ``tool_choice`` (auto, none, required, a named function).
    :ivar output_formats: structured outputs it enforces besides text: ``"json_object"``, ``"json_schema"``.
    :ivar logprobs: reports token log probabilities (and up to 20 alternatives).
    :ivar raw_prompt: completes a raw prompt without the chat template (``/v1/completions``).
    :ivar thinking: a reasoning model whose thinking can be switched on and off per request. A request
        that asks a model without it to think is refused only where the dialect says so (its ``param``
        names a field; OpenAI and Anthropic refuse a reasoning request to a model that cannot reason);
        switching thinking off is never refused.
    """

    context_length: int | None = None
    tools: bool = False
    output_formats: frozenset[str] = frozenset()
    logprobs: bool = False
    raw_prompt: bool = False
    thinking: bool = False

    def missing(self, request: ChatRequest) -> Feature | None:
        """The first feature ``request`` asks for that this model does not declare, else ``None``."""
        if request.tools and request.tool_choice.mode != "none" and not self.tools:
            return Feature.TOOLS
        if request.output.kind != "text" and request.output.kind not in self.output_formats:
            return Feature.OUTPUT_FORMAT
        if request.top_logprobs is not None and not self.logprobs:
            return Feature.LOGPROBS
        if request.prompt is not None and not self.raw_prompt:
            return Feature.RAW_PROMPT
        if request.thinking and not self.thinking:  # last: a dialect may let such a model ignore it
            return Feature.THINKING
        return None
