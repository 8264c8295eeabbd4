"""Legacy text completions served over the chat serving layer: the SSE body of a streamed one."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator

import msgspec

from host.contract import request_id
from host.contract.errors import BackendError, PlughostError, for_client, internal_error_message
from host.protocol.chat import ChatUsage
from host.protocol.completions import Completion, CompletionChoice, legacy_logprobs
from host.serving.chat import ChatStream, event

log = logging.getLogger("plughost.completions")
_encode = msgspec.json.Encoder().encode


async def completion_events(stream: ChatStream, echo: list[str] | None, prompts: int) -> AsyncIterator[bytes]:
    """``text_completion`` chunks of ``stream``'s choices (``prompts`` prompts x n), each prompt's
    text first when ``echo`` holds them, the usage chunk if asked for, then ``[DONE]``."""
    cid, created, model = f"cmpl-{uuid.uuid4().hex}", int(time.time()), stream.model
    per_prompt = stream.choices // prompts

    def chunk(choice: CompletionChoice) -> bytes:
        return event(_encode(Completion(id=cid, created=created, model=model, choices=[choice])))

    offsets = [len(e) for e in echo] if echo else [0] * stream.choices
    try:
        for index, prompt in enumerate(echo or ()):
            yield chunk(CompletionChoice(index=index, text=prompt))
        prompt_tokens: dict[int, int] = {}
        completion_tokens = 0
        async for index, delta in stream.deltas():
            logprobs = legacy_logprobs(delta.logprobs, offsets[index]) if delta.logprobs is not None else None
            offsets[index] += sum(len(t.token) for t in delta.logprobs or ())
            if delta.text or delta.logprobs or delta.finish_reason is not None:
                choice = CompletionChoice(
                    index=index, text=delta.text, logprobs=logprobs, finish_reason=delta.finish_reason
                )
                yield chunk(choice)
            if delta.finish_reason is not None:
                prompt_tokens[index // per_prompt] = delta.prompt_tokens
                completion_tokens += delta.completion_tokens
        if stream.usage:
            total_prompt = sum(prompt_tokens.values())
            usage = ChatUsage(total_prompt, completion_tokens, total_prompt + completion_tokens)
            yield event(_encode(Completion(id=cid, created=created, model=model, choices=[], usage=usage)))
    except PlughostError as exc:
        yield event(_encode(for_client(exc).envelope()))
    except Exception:
        log.exception("completion stream failed")  # details in the log; the client gets the request id
        yield event(_encode(BackendError(internal_error_message(request_id.current.get())).envelope()))
    finally:
        stream.close()  # synchronous on purpose, as in ChatStream.events
    yield b"data: [DONE]\n\n"
