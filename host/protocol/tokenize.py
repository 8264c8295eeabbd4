"""``POST /tokenize`` and ``POST /detokenize`` in vLLM's shapes."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import msgspec
from msgspec import Meta

from host.contract.errors import InvalidRequest
from host.contract.tokenizing import TokenizeRequest
from host.protocol.chat import WireMessage, message_to_domain
from host.protocol.common import WireRequest
from host.protocol.tools import ToolDefinition, tools_to_domain


class TokenizeBody(WireRequest, kw_only=True):
    """vLLM's two tokenize bodies in one: ``prompt`` (with ``add_special_tokens``, default true) or
    ``messages`` (and ``tools``; ``add_generation_prompt`` default true, ``add_special_tokens``
    default false, as vLLM has them); ``return_token_strs`` adds each token's string."""

    #: Exactly one of ``prompt`` and ``messages`` (``to_domain`` checks it), stated in the schema.
    schema_rules: ClassVar[dict[str, Any]] = {
        "oneOf": [
            {"required": ["prompt"], "properties": {"prompt": {"type": "string"}, "messages": {"type": "null"}}},
            {"required": ["messages"], "properties": {"messages": {"type": "array"}, "prompt": {"type": "null"}}},
        ]
    }

    model: str
    prompt: str | None = None
    messages: Annotated[list[WireMessage], Meta(min_length=1)] | None = None
    tools: list[ToolDefinition] | None = None
    add_special_tokens: bool | None = None
    add_generation_prompt: bool | None = None
    return_token_strs: bool | None = None

    def to_domain(self) -> TokenizeRequest:
        """Exactly one of ``prompt`` and ``messages``; history is checked as for chat."""
        if (self.prompt is None) == (self.messages is None):
            raise InvalidRequest("Send exactly one of 'prompt' and 'messages'.", param="prompt")
        if self.prompt is not None:
            add = self.add_special_tokens is not False
            return TokenizeRequest(model=self.model, prompt=self.prompt, add_special_tokens=add)
        messages = tuple(message_to_domain(i, m) for i, m in enumerate(self.messages or ()))
        tools, _ = tools_to_domain(self.tools, None, None)
        return TokenizeRequest(
            model=self.model,
            messages=messages,
            tools=tools,
            add_special_tokens=bool(self.add_special_tokens),
            add_generation_prompt=self.add_generation_prompt is not False,
        )


class TokenizeResponse(msgspec.Struct):
    """The ids, their count, the model's context length, and the token strings when asked for."""

    count: int
    max_model_len: int | None
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeBody(WireRequest, kw_only=True):
    """``{"model", "tokens"}``."""

    model: str
    tokens: list[Annotated[int, Meta(ge=0)]]


class DetokenizeResponse(msgspec.Struct):
    """The text of the tokens."""

    prompt: str
