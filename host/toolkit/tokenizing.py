"""``/tokenize`` and ``/detokenize`` for any backend whose weights folder holds a Hugging Face tokenizer.

A backend class adds :class:`TokenizerEndpoints` to its bases and has the
:class:`~host.contract.tokenizing.Tokenizing` capability: nothing else to write. The mixin loads its
own instance of the tokenizer from ``spec.weights`` on first use (a fast tokenizer must not be shared
between threads, and the backend's own belongs to its prepare thread), and works on a thread of its
own, one call at a time. Conversations are rendered by the tokenizer's chat template, with messages
and tools in the Hugging Face convention (the one chat backends render with).

Counts go up to :data:`CONTEXTS` times the model's context length (enough to plan how to split a
document); a longer text is a 400, found from a prefix of it (:func:`over_limit_prefix`), so that
a 30 MB body cannot hold the tokenizer for a minute.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Sequence
from typing import Any

from host.contract.domain import ChatMessage, Tool
from host.contract.errors import InvalidRequest
from host.contract.spec import ModelSpec
from host.contract.tokenizing import Tokenized, TokenizeRequest
from host.toolkit.textlimits import over_limit_prefix
from host.toolkit.weights import resolve_weights

#: The longest text tokenised, in multiples of the model's context length (its default when undeclared).
CONTEXTS = 4
DEFAULT_CONTEXT = 32_768

#: One call at a time, across backends: tokenising is cheap, and a tokenizer is never used by two threads.
_LOCK = threading.Lock()


class TokenizerEndpoints:
    """Mixin: the :class:`~host.contract.tokenizing.Tokenizing` capability from the model's tokenizer."""

    spec: ModelSpec[Any]
    _endpoint_tokenizer: Any = None

    async def tokenize(self, request: TokenizeRequest) -> Tokenized:
        """The request's ids and token strings (see the module docstring)."""
        return await asyncio.to_thread(self._locked, self._checked_tokenize, request)

    async def detokenize(self, tokens: Sequence[int]) -> str:
        """The text of ``tokens``; special tokens are written out, as the model saw them."""
        return await asyncio.to_thread(self._locked, self._detokenize, list(tokens))

    def _locked(self, work: Any, arg: Any) -> Any:
        with _LOCK:
            if self._endpoint_tokenizer is None:
                from transformers import AutoTokenizer

                folder = resolve_weights(self.spec.weights, model_id=self.spec.id)
                self._endpoint_tokenizer = AutoTokenizer.from_pretrained(str(folder))
            return work(self._endpoint_tokenizer, arg)

    def _checked_tokenize(self, tokenizer: Any, request: TokenizeRequest) -> Tokenized:
        limit = CONTEXTS * (self.spec.capabilities.context_length or DEFAULT_CONTEXT)
        text = request.prompt if request.prompt is not None else "\n".join(m.content for m in request.messages)
        param = "prompt" if request.prompt is not None else "messages"
        prefix = over_limit_prefix(text, limit, lambda t: tokenizer.encode(t, add_special_tokens=False), len)
        if prefix is not None:
            raise InvalidRequest(
                f"The {param} take more than {len(prefix)} tokens; /tokenize counts up to {limit} "
                f"({CONTEXTS} times this model's context).",
                param=param,
            )
        return self._tokenize(tokenizer, request)

    @staticmethod
    def _tokenize(tokenizer: Any, request: TokenizeRequest) -> Tokenized:
        if request.prompt is not None:
            ids = tokenizer.encode(request.prompt, add_special_tokens=request.add_special_tokens)
        else:
            if not getattr(tokenizer, "chat_template", None):
                raise InvalidRequest("This model has no chat template: send 'prompt' instead.", param="messages")
            from jinja2 import TemplateError

            messages = [_template_message(m) for m in request.messages]
            tools = [_template_tool(t) for t in request.tools] or None
            try:
                ids = tokenizer.apply_chat_template(
                    messages, tools=tools, add_generation_prompt=request.add_generation_prompt, tokenize=True
                )
            except TemplateError as exc:
                raise InvalidRequest(f"The messages cannot be rendered: {exc}", param="messages") from None
        ids = [int(t) for t in ids]
        return Tokenized(tokens=ids, token_strs=[str(s) for s in tokenizer.convert_ids_to_tokens(ids)])

    @staticmethod
    def _detokenize(tokenizer: Any, tokens: list[int]) -> str:
        size = len(tokenizer)
        for i, token in enumerate(tokens):
            if not 0 <= token < size:
                raise InvalidRequest(f"tokens[{i}] = {token} is not in the vocabulary (0..{size - 1}).", param="tokens")
        return str(tokenizer.decode(tokens))


def _template_message(m: ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["tool_calls"] = [
            {"type": "function", "id": c.id, "function": {"name": c.name, "arguments": json.loads(c.arguments)}}
            for c in m.tool_calls
        ]
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    return out


def _template_tool(t: Tool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": t.name, "parameters": t.parameters or {"type": "object", "properties": {}}}
    if t.description is not None:
        function["description"] = t.description
    return {"type": "function", "function": function}
