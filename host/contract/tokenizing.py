"""An optional backend capability: the model's own tokenizer, for ``POST /tokenize`` and
``POST /detokenize`` (vLLM's routes; clients count tokens and budget prompts with them).

A backend that has it implements :class:`Tokenizing` (``host.toolkit.tokenizing.TokenizerEndpoints``
does it from a Hugging Face tokenizer folder); any other model answers those routes with a 400.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import msgspec

from host.contract.domain import ChatMessage, Tool


class TokenizeRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Text to tokenise: a ``prompt`` as it is, or ``messages`` (and ``tools``) rendered by the
    model's chat template (exactly one of the two).

    ``add_special_tokens`` applies to a prompt (the tokenizer's own, such as a BOS); a rendered
    conversation carries what its template writes. ``add_generation_prompt`` ends a conversation
    with the assistant turn's opening, as a chat request's prompt does.
    """

    model: str
    prompt: str | None = None
    messages: tuple[ChatMessage, ...] = ()
    tools: tuple[Tool, ...] = ()
    add_special_tokens: bool = True
    add_generation_prompt: bool = True


class Tokenized(msgspec.Struct, kw_only=True):
    """The token ids and, for each, its token string (the vocabulary entry, byte-level as stored)."""

    tokens: list[int]
    token_strs: list[str]


@runtime_checkable
class Tokenizing(Protocol):
    """Optional: a backend that tokenises with its model's tokenizer."""

    async def tokenize(self, request: TokenizeRequest) -> Tokenized:
        """The ids of the request's text (client mistakes are ``InvalidRequest``)."""

    async def detokenize(self, tokens: Sequence[int]) -> str:
        """The text of ``tokens`` (an id outside the vocabulary is ``InvalidRequest``)."""
