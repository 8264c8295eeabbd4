"""The legacy Completions dialect (``POST /v1/completions``) over the chat service: raw prompts."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import msgspec

from host.contract.capabilities import Feature
from host.contract.errors import PlughostError
from host.protocol.chat import ChatUsage
from host.protocol.completions import Completion, CompletionChoice, CompletionRequest, legacy_logprobs
from host.serving import sse
from host.serving.generation import Collected, Generation
from host.serving.openai_chat import OPENAI_PARAMS, nth_choice, openai_error_event

_encode = msgspec.json.Encoder().encode

_PARAMS = {**OPENAI_PARAMS, Feature.RAW_PROMPT: "prompt"}


class OpenAICompletions:
    """A decoded legacy Completions request (:class:`~host.serving.service.Dialect`): each prompt
    ``n`` times, choice index = prompt index x n + i; ``echo`` puts each prompt before its text."""

    def __init__(self, body: CompletionRequest) -> None:
        self.body = body
        prompts = body.to_domain()
        self.requests = [nth_choice(d, i) for d in prompts for i in range(body.n)]
        self.per_prompt = body.n
        self.stream = body.stream
        self._echo = [d.prompt or "" for d in prompts for _ in range(body.n)] if body.echo else None

    def param(self, feature: Feature) -> str:
        """The Completions field of ``feature``."""
        return _PARAMS[feature]

    def field(self, param: str | None) -> str | None:
        """The backends name this route's fields as it does (``prompt``, ``max_tokens``)."""
        return param

    def response(self, model: str, results: list[Collected], generation: Generation) -> Completion:
        """The ``text_completion`` object."""
        choices = []
        for i, c in enumerate(results):
            prefix = self._echo[i] if self._echo else ""
            logprobs = legacy_logprobs(c.logprobs, len(prefix)) if c.logprobs is not None else None
            choices.append(
                CompletionChoice(index=i, text=prefix + c.text, logprobs=logprobs, finish_reason=c.finish_reason)
            )
        u = generation.usage
        usage = ChatUsage(u.prompt_tokens, u.completion_tokens, u.total_tokens)
        return Completion(
            id=f"cmpl-{uuid.uuid4().hex}", created=int(time.time()), model=model, choices=choices, usage=usage
        )

    async def events(self, generation: Generation) -> AsyncIterator[bytes]:
        """``text_completion`` chunks: each prompt first when echoing, the deltas, then the usage
        chunk when ``stream_options.include_usage`` asks for it."""
        cid, created, model = f"cmpl-{uuid.uuid4().hex}", int(time.time()), generation.model

        def chunk(choices: list[CompletionChoice], usage: ChatUsage | None = None) -> bytes:
            return sse.data(_encode(Completion(id=cid, created=created, model=model, choices=choices, usage=usage)))

        offsets = [len(e) for e in self._echo] if self._echo else [0] * generation.choices
        for index, prompt in enumerate(self._echo or ()):
            yield chunk([CompletionChoice(index=index, text=prompt)])
        async for index, delta in generation.deltas():
            logprobs = legacy_logprobs(delta.logprobs, offsets[index]) if delta.logprobs is not None else None
            offsets[index] += sum(len(t.token) for t in delta.logprobs or ())
            if delta.text or delta.logprobs or delta.finish_reason is not None:
                yield chunk(
                    [
                        CompletionChoice(
                            index=index, text=delta.text, logprobs=logprobs, finish_reason=delta.finish_reason
                        )
                    ]
                )
        options = self.body.stream_options
        if options is not None and options.include_usage:
            u = generation.usage
            yield chunk([], ChatUsage(u.prompt_tokens, u.completion_tokens, u.total_tokens))

    def error_event(self, error: PlughostError) -> bytes:
        """The error in OpenAI's envelope."""
        return openai_error_event(error)

    def end(self) -> bytes:
        """``data: [DONE]``."""
        return sse.DONE
