"""Reasoning on the OpenAI wire: the thinking switch as requests spell it, and the Responses API's
reasoning items and stream events.

Each request field resolves into the domain's ``ChatRequest.thinking`` (``True``/``False``/``None``:
the model decides) and a :class:`Switch` says which field decided it: a model that cannot think is
refused (400 naming that field) when the field's own API refuses non-reasoning models
(``reasoning_effort``, ``reasoning.effort``), and ignores the switch when the field is a chat
template's (``chat_template_kwargs.enable_thinking``: vLLM passes it to the template, which ignores
what it does not know). Switching thinking off is never refused.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import msgspec

from host.contract.errors import InvalidRequest

#: OpenAI's reasoning efforts (Chat Completions' ``reasoning_effort``, Responses' ``reasoning.effort``).
Effort = Literal["none", "minimal", "low", "medium", "high", "xhigh"]
#: The efforts that mean "answer at once": thinking off (the other efforts switch it on; a thinking
#: model's budget is its own, ``thinking_budget``).
EFFORTS_OFF = frozenset({"none", "minimal"})


class Switch(NamedTuple):
    """A request's thinking switch and the field that set it (``None``: a field a model that cannot
    think ignores, or no switch at all)."""

    thinking: bool | None = None
    field: str | None = None


def effort_switch(effort: str | None, field: str) -> Switch:
    """The switch of an OpenAI reasoning effort sent in ``field`` (``None``: no switch)."""
    if effort is None:
        return Switch()
    return Switch(effort not in EFFORTS_OFF, field)


def template_switch(kwargs: dict[str, object] | None) -> Switch:
    """``chat_template_kwargs.enable_thinking`` (vLLM's and SGLang's switch); other keys are ignored."""
    value = (kwargs or {}).get("enable_thinking")
    if value is None:
        return Switch()
    if not isinstance(value, bool):
        raise InvalidRequest("enable_thinking must be true or false.", param="chat_template_kwargs.enable_thinking")
    return Switch(value)


def first_switch(*switches: Switch) -> Switch:
    """The first of ``switches`` that decides (their order is the precedence)."""
    return next((s for s in switches if s.thinking is not None), Switch())


# -- Responses: reasoning items and events ------------------------------------------------------------


class ReasoningConfig(msgspec.Struct, kw_only=True):
    """``reasoning`` of a Responses request (echoed by the response): ``effort`` switches thinking
    (``none``/``minimal``: off); ``summary`` is accepted and echoed (no summaries are written)."""

    effort: Effort | None = None
    summary: str | None = None


class ReasoningText(msgspec.Struct, kw_only=True, tag_field="type", tag="reasoning_text"):
    """The model's own reasoning text (a reasoning item's ``content`` part)."""

    text: str


class SummaryText(msgspec.Struct, kw_only=True, tag_field="type", tag="summary_text"):
    """A summary of reasoning (a reasoning item's ``summary`` part; replayed by clients, never written)."""

    text: str


class ReasoningItem(msgspec.Struct, kw_only=True, tag_field="type", tag="reasoning"):
    """The model's thinking, before the message or calls it led to. ``content`` holds the raw
    reasoning (as for open-weight models on OpenAI's API); ``summary`` stays empty (none is written)."""

    id: str
    status: Literal["in_progress", "completed", "incomplete"]
    content: list[ReasoningText]
    summary: list[SummaryText] = msgspec.field(default_factory=list)


class ReasoningTextDeltaEvent(msgspec.Struct, kw_only=True):
    """``response.reasoning_text.delta``: more of a reasoning item's text."""

    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    delta: str
    type: Literal["response.reasoning_text.delta"] = "response.reasoning_text.delta"


class ReasoningTextDoneEvent(msgspec.Struct, kw_only=True):
    """``response.reasoning_text.done``: a reasoning item's whole text."""

    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    text: str
    type: Literal["response.reasoning_text.done"] = "response.reasoning_text.done"
