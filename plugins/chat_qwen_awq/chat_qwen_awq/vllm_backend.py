"""The chat backend on vLLM: the plugin's request handling in front of a vLLM engine process.

Same model id, same API, same behaviour as :class:`chat_qwen_awq.backend.QwenAwqChatBackend`,
because the text side is the same code: prompts are rendered and checked by
:class:`~chat_qwen_awq.preparing.Preparer`, constraints are the same llguidance grammars
(:class:`~chat_qwen_awq.grammar.Grammars`, compiled by vLLM's "guidance" backend), generated
token ids are turned into text by :class:`~chat_qwen_awq.text.TextStream` (UTF-8 and stop
strings), tool-call blocks are parsed by :func:`~chat_qwen_awq.tools.with_tool_calls`, and
logprobs get their texts from the same token table. vLLM only sees prompt ids and sampling
settings (:mod:`chat_qwen_awq.vllm_bridge`).

It sits on :class:`host.toolkit.chat.ChatEngineBackend` (prepare thread, error mapping, closing):

- ``load_model(grant)``: starts the engine process (:class:`~chat_qwen_awq.vllm_engine.EngineProcess`)
  with the KV-cache size and footprint of the declaration (:mod:`chat_qwen_awq.vllm_sizing`).
- ``move_model(grant)``: to host RAM (a parked grant) is vLLM's sleep level 1 (weights to host
  RAM, KV cache dropped); back to the same GPU is a wake-up; anywhere else is a fresh start there.
- ``unload_model()``: the engine process ends (everything it held is freed).
- ``prepare(request)`` / ``stream(prepared)``: a closed stream aborts the generation in the engine
  before its next step. An engine process that died fails its running requests with
  ``EngineUnavailable`` (503) and is started again by the next request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chat_qwen_awq import sizing, vllm_sizing
from chat_qwen_awq.grammar import Grammars
from chat_qwen_awq.logprobs import TokenTexts
from chat_qwen_awq.preparing import Preparer, Prompt, generation_defaults
from chat_qwen_awq.reasoning import with_reasoning
from chat_qwen_awq.schema_limits import SchemaLimits
from chat_qwen_awq.text import TextStream
from chat_qwen_awq.thinking import ThinkTokens, template_thinks
from chat_qwen_awq.tools import with_tool_calls
from chat_qwen_awq.vllm_bridge import EngineConfig, Failed, Generate, Params, Tokens
from chat_qwen_awq.vllm_engine import UNAVAILABLE, EngineProcess, EngineStartError
from host.sdk import (
    BackendError,
    ChatDelta,
    ChatEngineBackend,
    ChatRequest,
    EngineUnavailable,
    Grant,
    InvalidRequest,
    ModelSpec,
    PlacementKind,
    PlughostError,
    QueueFull,
    ShuttingDown,
    TokenizerEndpoints,
    TokenLogprob,
    TopLogprob,
    queued_deltas,
    resolve_weights,
)

log = logging.getLogger("plughost.chat_qwen_awq.vllm")


class VllmStream:
    """One generation's tokens → deltas (a :class:`~chat_qwen_awq.vllm_engine.Sink`; the reader
    thread delivers, the event loop of the request reads :attr:`queue`)."""

    def __init__(
        self,
        prompt: Prompt,
        tokenizer: Any,
        eos_ids: frozenset[int],
        texts: TokenTexts,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.prompt_tokens = len(prompt.prompt_ids)
        self.max_tokens = prompt.max_tokens
        self.top_logprobs = prompt.top_logprobs
        self.text = TextStream(tokenizer, prompt.stops)
        self.eos_ids = eos_ids
        self.texts = texts
        self.generated: list[int] = []
        self.finished = False
        self.loop = loop
        self.queue: asyncio.Queue[ChatDelta | BaseException] = asyncio.Queue()
        self._logprobs: list[TokenLogprob] = []
        self._outbox: list[ChatDelta | BaseException] = []

    # -- reader thread -------------------------------------------------------------------------------
    def deliver(self, message: Tokens | Failed) -> None:
        """Turn new tokens into text (or a failure into the stream's error)."""
        if self.finished:
            return
        if isinstance(message, Failed):
            if message.dead:
                self._end(EngineUnavailable(UNAVAILABLE))
            elif message.invalid:
                self._end(InvalidRequest(message.message))
            else:
                self._end(BackendError(f"vLLM: {message.message}"))
            return
        first = not self.generated
        text = ""
        for i, token in enumerate(message.token_ids):
            self.generated.append(token)
            if message.logprobs is not None and self.top_logprobs is not None:
                self._logprobs.append(self._logprob(token, message.logprobs[i]))
            if token in self.eos_ids:
                self._finish(text + self.text.flush(), "stop")
                return
            text += self.text.push(token)
            if self.text.stopped:  # a stop string: the server aborts the rest when the stream closes
                self._finish(text, "stop")
                return
            if len(self.generated) >= self.max_tokens:
                break
        if message.finish is not None or len(self.generated) >= self.max_tokens:
            rest = self.text.flush()  # completing bytes held back may complete a stop string too
            reason = "stop" if self.text.stopped or message.finish == "stop" else "length"
            self._finish(text + rest, reason)
        elif text or first:  # the first token always answers: it ends the time to first token
            self._outbox.append(ChatDelta(text=text, logprobs=self._take_logprobs()))

    def fail(self, error: PlughostError) -> None:
        """The engine went away."""
        if not self.finished:
            self._end(error)

    def flush(self) -> None:
        """Hand the pending deltas to the request's event loop (one wake-up per read)."""
        if not self._outbox:
            return
        items, self._outbox = self._outbox, []
        try:
            self.loop.call_soon_threadsafe(_put_all, self.queue, items)
        except RuntimeError:  # the request's loop is closed: nobody is listening
            self.finished = True

    def _finish(self, text: str, reason: str) -> None:
        self.finished = True
        self._outbox.append(
            ChatDelta(
                text=text,
                finish_reason=reason,
                prompt_tokens=self.prompt_tokens,
                completion_tokens=len(self.generated),
                logprobs=self._take_logprobs(),
            )
        )

    def _end(self, error: PlughostError) -> None:
        self.finished = True
        self._outbox.append(error)

    def _logprob(self, token: int, lp: Any) -> TokenLogprob:
        top = []
        for tid, value in lp.top[: self.top_logprobs]:
            text, data = self.texts(tid)
            top.append(TopLogprob(token=text, bytes=data, logprob=value))
        text, data = self.texts(token)
        return TokenLogprob(token=text, bytes=data, logprob=lp.logprob, top=top)

    def _take_logprobs(self) -> list[TokenLogprob] | None:
        if self.top_logprobs is None:
            return None
        taken, self._logprobs = self._logprobs, []
        return taken

    # -- event loop ----------------------------------------------------------------------------------
    async def deltas(self) -> AsyncIterator[ChatDelta]:
        """The stream's deltas until its last one; its error is raised."""
        async for delta in queued_deltas(self.queue):
            yield delta


def _put_all(queue: asyncio.Queue[ChatDelta | BaseException], items: list[ChatDelta | BaseException]) -> None:
    for item in items:
        queue.put_nowait(item)


@dataclass(frozen=True)
class VllmPrepared:
    """A checked request: its prompt, the engine's sampling settings, and how the output is parsed."""

    prompt: Prompt
    params: Params
    parse_tool_calls: bool
    parse_reasoning: bool = False  # a thinking model's chat answer: <think> blocks become reasoning
    opened: bool = False  # the prompt ends inside an open think block (the template opened it)


class VllmChatBackend(TokenizerEndpoints, ChatEngineBackend[VllmPrepared]):
    """Serves a Qwen2 AWQ chat model with vLLM (see the module docstring)."""

    def __init__(self, spec: ModelSpec[sizing.ChatOptions]) -> None:
        super().__init__(spec)
        self.options = spec.options
        self.serving: Grant | None = None  # where the engine serves (kept while it sleeps; ``grant`` is the last one)
        self.sleeping = False
        self.python: str | None = None
        self.folder: Path | None = None
        self.config: dict[str, Any] = {}
        self.shape: sizing.ModelShape | None = None
        self.limits: sizing.Limits | None = None
        self.defaults: dict[str, Any] = {}
        self.eos_ids: list[int] = []
        self.engine: EngineProcess | None = None
        self.grammars: Grammars | None = None
        self._preparer: Preparer | None = None  # the prepare thread's
        self._tokenizer: Any = None  # the reader thread's (detokenisation)
        self._texts: TokenTexts | None = None  # the reader thread's (logprob texts)
        self._restart = threading.Lock()
        self.thinks = False  # the chat template writes <think> blocks
        self.think_tokens: ThinkTokens | None = None
        self._generations = 0  # requests in generate(), running or waiting (event loop only)

    # -- life cycle (worker threads) -------------------------------------------------------------
    def load_model(self, grant: Grant) -> None:
        """Read the model's configuration and tokenizer, then start a vLLM engine where ``grant`` says."""
        from transformers import AutoTokenizer

        self.python = vllm_sizing.vllm_python(self.options)
        if self.python is None:
            raise RuntimeError(
                f"{self.spec.id}: options.engine is {self.options.engine!r} but no vLLM environment is configured: "
                f"set models.{self.spec.id}.options.vllm_python or ${vllm_sizing.PYTHON_ENV} "
                "(scripts/vllm-env creates one)"
            )
        self.folder = resolve_weights(self.spec.weights, model_id=self.spec.id)
        self.config = json.loads((self.folder / "config.json").read_text(encoding="utf-8"))
        self.shape = sizing.ModelShape.from_config(self.config)
        self.limits = sizing.limits_from_options(self.shape, self.options)
        self._check_grant(grant)
        self.defaults, self.eos_ids = generation_defaults(self.folder, self.config)
        prep_tokenizer = AutoTokenizer.from_pretrained(str(self.folder))
        self._tokenizer = AutoTokenizer.from_pretrained(str(self.folder))
        if self._tokenizer.eos_token_id is not None and self._tokenizer.eos_token_id not in self.eos_ids:
            self.eos_ids.append(self._tokenizer.eos_token_id)
        vocab = int(self.config.get("vocab_size", len(self._tokenizer)))
        self.grammars = Grammars(prep_tokenizer, vocab, self.eos_ids, SchemaLimits.of(self.options, self.spec.id))
        self._texts = TokenTexts(self.grammars.token_bytes)
        self.thinks = template_thinks(prep_tokenizer.chat_template)
        self.think_tokens = ThinkTokens.of(prep_tokenizer) if self.thinks else None
        if self.thinks and self.options.thinking_budget is not None:
            log.warning("%s: vLLM does not enforce thinking_budget yet; max_tokens bounds the thinking", self.spec.id)
        self._preparer = Preparer(
            self.spec.id, prep_tokenizer, self.limits, self.defaults, thinks=self.thinks, thinking=self.options.thinking
        )
        self.engine = self._start(grant)
        self.serving = grant

    def unload_model(self) -> None:
        """End the engine process and drop the tokenizers."""
        engine, self.engine = self.engine, None
        if engine is not None:
            engine.stop()
        self.grammars = self._preparer = self._texts = self._tokenizer = None
        self.serving = None
        self.sleeping = False

    def abort(self) -> None:
        """End every running generation now (shutdown deadline; event loop, no wait)."""
        if self.engine is not None:
            self.engine.fail_all(ShuttingDown("plughost is shutting down; please retry"))

    def move_model(self, grant: Grant) -> None:
        """Sleep (to host RAM), wake up on the same GPU, or start afresh on another placement."""
        engine, serving = self.engine, self.serving
        if engine is None or serving is None:
            raise RuntimeError(f"{self.spec.id} is not loaded")
        if grant.parked:
            engine.call("sleep", level=1)
            self.sleeping = True
            log.info("%s: vLLM asleep (weights in host RAM, KV cache dropped)", self.spec.id)
            return
        if self.sleeping and (grant.placement, grant.device) == (serving.placement, serving.device):
            try:
                engine.call("wake")
            except EngineUnavailable:
                log.warning("%s: vLLM died while asleep; starting it again", self.spec.id)
            else:
                self.sleeping = False
                log.info("%s: vLLM awake on %s", self.spec.id, grant.device)
                return
        self._check_grant(grant)
        engine.stop()
        self.engine = None
        self.engine = self._start(grant)
        self.serving, self.sleeping = grant, False

    def _check_grant(self, grant: Grant) -> None:
        assert self.shape is not None
        if grant.placement == PlacementKind.HYBRID:
            raise RuntimeError(f"{self.spec.id}: vLLM serves a model wholly on one device, not split (hybrid)")
        if grant.device == "cpu" and self.shape.head_dim < vllm_sizing.MIN_CPU_HEAD_DIM:
            raise RuntimeError(
                f"{self.spec.id}: vLLM's CPU attention needs head_dim >= {vllm_sizing.MIN_CPU_HEAD_DIM}, "
                f"the model has {self.shape.head_dim}"
            )

    def engine_config(self, grant: Grant) -> EngineConfig:
        """What the engine process is started with for ``grant`` (from the declaration's sizes)."""
        assert self.folder is not None and self.shape is not None and self.limits is not None
        limits, cuda = self.limits, grant.device.startswith("cuda")
        return EngineConfig(
            model=str(self.folder),
            device="cuda" if cuda else "cpu",
            dtype="float16",  # AWQ's; on the CPU too (bf16 activations drift from the plugin's fp32 engine)
            max_model_len=limits.context_length,
            max_num_seqs=limits.max_sequences,
            max_num_batched_tokens=max(limits.prefill_chunk_tokens, limits.max_sequences),
            kv_cache_bytes=vllm_sizing.kv_cache_bytes(self.shape, limits),
            gpu_bytes=grant.gpu_bytes if cuda else 0,
            prefix_caching=limits.prefix_cache_tokens > 0,
            sleep_mode=cuda,  # level 1 sleep needs vLLM's own allocator; on the CPU sleep is a pause
            enforce_eager=not cuda,  # CUDA graphs on a GPU; no compilation on the CPU
        )

    def _start(self, grant: Grant) -> EngineProcess:
        assert self.python is not None
        cuda = grant.device.startswith("cuda")
        engine = EngineProcess(
            self.python,
            self.engine_config(grant),
            cuda_device=int(grant.device.partition(":")[2] or 0) if cuda else None,
            name=f"{self.spec.id}-vllm",
            start_timeout_s=self.options.vllm_start_timeout_s,
        )
        engine.start()
        return engine

    def _restart_if_dead(self) -> EngineProcess:
        """The running engine, started again on the same grant if its process died (one restart at a time)."""
        with self._restart:
            engine, grant = self.engine, self.serving
            if engine is not None and engine.alive:
                return engine
            if grant is None:
                raise ShuttingDown(f"{self.spec.id} is not loaded")
            if engine is not None:
                engine.stop(timeout=5)
            log.warning("%s: the vLLM engine is not running; starting it again", self.spec.id)
            try:
                self.engine = self._start(grant)
            except EngineStartError:
                log.exception("%s: restarting vLLM failed", self.spec.id)
                raise EngineUnavailable(
                    "The chat engine could not be restarted; the server log has the details. Please retry."
                ) from None
            return self.engine

    # -- serving -----------------------------------------------------------------------------------
    async def stream(self, prepared: VllmPrepared) -> AsyncIterator[ChatDelta]:
        """The engine's deltas for ``prepared`` (event loop); closing it aborts the generation in the engine."""
        limits = self.limits
        if limits is None or self.sleeping or self._texts is None:
            raise ShuttingDown(f"{self.spec.id} is not loaded")
        cap = limits.max_sequences + limits.max_waiting_sequences
        if self._generations >= cap:  # vLLM would queue without bound
            raise QueueFull(
                f"{self._generations - limits.max_sequences} chat requests are already waiting for a free slot "
                f"(limit {limits.max_waiting_sequences}, option max_waiting_sequences); retry later."
            )
        self._generations += 1
        engine: EngineProcess | None = None
        generation: int | None = None
        try:
            loop = asyncio.get_running_loop()
            engine = self.engine
            if engine is None or not engine.alive:
                engine = await loop.run_in_executor(None, self._restart_if_dead)
            prompt = prepared.prompt
            stream = VllmStream(prompt, self._tokenizer, frozenset(self.eos_ids), self._texts, loop)
            generation = engine.new_id()
            engine.submit(Generate(generation, prompt.prompt_ids, prepared.params), stream)
            deltas = stream.deltas()
            if prepared.parse_reasoning:
                deltas = with_reasoning(deltas, open_block=prepared.opened)
            if prepared.parse_tool_calls:
                deltas = with_tool_calls(deltas)
            async for delta in deltas:
                yield delta
                if delta.finish_reason is not None:
                    return
        finally:  # synchronous: a closed stream stops generating before the engine's next step
            self._generations -= 1
            if engine is not None and generation is not None:
                engine.abort(generation)  # nothing is sent for a generation that ended

    def prepare(self, request: ChatRequest) -> VllmPrepared:
        """The checked prompt and the engine's sampling settings (prepare thread)."""
        assert self._preparer is not None and self.grammars is not None
        source = self.grammars.checked(request)  # first: its caps keep a hostile tool schema out of the prompt
        prompt = self._preparer.prompt(request)
        s = prompt.sampling
        params = Params(
            max_tokens=prompt.max_tokens,
            temperature=0.0 if s.greedy else s.temperature,
            top_p=s.top_p,
            top_k=s.top_k or 0,
            repetition_penalty=s.repetition_penalty,
            presence_penalty=s.presence_penalty,
            frequency_penalty=s.frequency_penalty,
            seed=s.seed % (1 << 63) if s.seed is not None else None,
            stop_token_ids=list(self.eos_ids),
            grammar=source.lark if source is not None else None,
            logprobs=prompt.top_logprobs,
        )
        tokens = self.think_tokens
        return VllmPrepared(
            prompt,
            params,
            parse_tool_calls=bool(request.tools) and request.tool_choice.mode != "none",
            parse_reasoning=self.thinks and request.prompt is None,  # raw completions pass unparsed
            opened=tokens is not None and request.prompt is None and tokens.opened_by(prompt.prompt_ids),
        )

    async def prompt_ids(self, request: ChatRequest) -> list[int]:
        """The prompt's token ids, as :meth:`prepare` makes them (``PromptTokens``: token counting)."""
        assert self._preparer is not None
        return await self.on_prepare_thread(self._preparer.prompt_ids, request)
