"""The chat backend: loads the AWQ model where the grant says and serves it through the engine.

- ``load(grant)``: gpu → everything on ``cuda:N`` in fp16; hybrid → as many decoder layers on
  the GPU as ``grant.gpu_bytes`` allows, the rest in host RAM, streamed to the GPU per forward
  (on a machine without GPU a hybrid grant on ``cpu`` keeps the layers that fit in RAM and
  the rest in an offload folder on disk); cpu → everything in host RAM, fp32 compute.
- ``relocate(grant)``: moves the loaded weights to another placement without reading the
  checkpoint again (running sequences, if any, fail with a clear error).
- ``generate(request)`` (from :class:`host.toolkit.chat.ChatEngineBackend`): :meth:`prepare`
  resolves the thinking switch (:mod:`chat_qwen_awq.thinking`), renders the chat template (tools
  included), checks the context and builds the grammar constraint the request asks for on the
  base's prepare thread (errors are raised before the first delta); :meth:`stream` submits the
  sequence to the engine thread and streams its deltas: a thinking model's ``<think>`` block is
  split off into ``ChatDelta.reasoning`` (:mod:`chat_qwen_awq.reasoning`) and the model's tool-call
  blocks in the answer are parsed into calls. Closing the stream cancels the sequence at the next step.
- ``prompt_ids(request)`` (``host.sdk.PromptTokens``): the ids :meth:`prepare` would make, on the
  prepare thread, without generating (``/v1/messages/count_tokens``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import torch

from chat_qwen_awq import loader, sizing
from chat_qwen_awq.engine import Engine
from chat_qwen_awq.grammar import Grammars, MaskFiller
from chat_qwen_awq.logprobs import TokenTexts
from chat_qwen_awq.prefix_cache import PrefixCache
from chat_qwen_awq.preparing import Preparer, generation_defaults
from chat_qwen_awq.reasoning import with_reasoning
from chat_qwen_awq.schema_limits import SchemaLimits
from chat_qwen_awq.sequence import Prepared, Sequence
from chat_qwen_awq.thinking import ThinkPlan, ThinkTokens, template_thinks
from chat_qwen_awq.tools import with_tool_calls
from host.sdk import (
    BackendError,
    ChatDelta,
    ChatEngineBackend,
    ChatRequest,
    Grant,
    ModelSpec,
    PlacementKind,
    ShuttingDown,
    TokenizerEndpoints,
    queued_deltas,
    resolve_weights,
)
from host.toolkit.torch_utils import free_device_memory

log = logging.getLogger("plughost.chat_qwen_awq")

#: Prompt prefixes are reused in blocks of this many tokens.
PREFIX_BLOCK_TOKENS = 32


class QwenAwqChatBackend(TokenizerEndpoints, ChatEngineBackend[Prepared]):
    """Serves a Qwen2 or Qwen3 chat model, AWQ or unquantised (see the module docstring)."""

    def __init__(self, spec: ModelSpec[sizing.ChatOptions]) -> None:
        super().__init__(spec)
        self.options = spec.options
        self.grant: Grant | None = None
        self.folder: Path | None = None
        self.config: dict[str, Any] = {}
        self.limits: sizing.Limits | None = None
        self.defaults: dict[str, Any] = {}
        self.eos_ids: list[int] = []
        self.loaded: loader.LoadedModel | None = None
        self.engine: Engine | None = None
        self._tokenizer: Any = None  # the prepare thread's (fast tokenizers are not thread-safe)
        self._preparer: Preparer | None = None  # renders and checks requests (the prepare thread's)
        self.grammars: Grammars | None = None
        #: Whether the model thinks (its chat template writes ``<think>`` blocks: the switch applies and
        #: its output is parsed into reasoning and answer).
        self.thinks = False
        #: The think-block tokens where they are single tokens (Qwen's are), for the engine to follow.
        self.think_tokens: ThinkTokens | None = None

    # -- life cycle (worker threads) -------------------------------------------------------------
    def load_model(self, grant: Grant) -> None:
        """Read the checkpoint and place it as ``grant`` says; start the engine."""
        from transformers import AutoTokenizer

        self.folder = resolve_weights(self.spec.weights, model_id=self.spec.id)
        self.config = json.loads((self.folder / "config.json").read_text(encoding="utf-8"))
        shape = sizing.ModelShape.from_config(self.config)
        self.limits = sizing.limits_from_options(shape, self.options)
        self.defaults, self.eos_ids = generation_defaults(self.folder, self.config)
        self._tokenizer = AutoTokenizer.from_pretrained(str(self.folder))
        engine_tokenizer = AutoTokenizer.from_pretrained(str(self.folder))
        self.thinks = thinks = template_thinks(self._tokenizer.chat_template)
        self.think_tokens = ThinkTokens.of(self._tokenizer) if thinks else None
        self._preparer = Preparer(
            self.spec.id, self._tokenizer, self.limits, self.defaults, thinks=thinks, thinking=self.options.thinking
        )
        if engine_tokenizer.eos_token_id is not None and engine_tokenizer.eos_token_id not in self.eos_ids:
            self.eos_ids.append(engine_tokenizer.eos_token_id)
        self.loaded = loader.load_model(
            self.config,
            loader.checkpoint_tensors(self.folder),
            self._plan(grant),
            offload_dir=self._offload_dir(),
            head_dtype=self._head_dtype(),
        )
        self.grant = grant
        vocab = int(self.config.get("vocab_size", len(engine_tokenizer)))
        self.grammars = Grammars(engine_tokenizer, vocab, self.eos_ids, SchemaLimits.of(self.options, self.spec.id))
        self.engine = Engine(
            self.loaded.model,
            self.loaded.device,
            engine_tokenizer,
            self.eos_ids,
            self.limits,
            name=f"{self.spec.id}-engine",
            prefix_cache=PrefixCache(PREFIX_BLOCK_TOKENS, self.limits.prefix_cache_tokens),
            masks=MaskFiller(vocab),
            token_texts=TokenTexts(self.grammars.token_bytes),
            decoder=self.loaded.decoder,
        )
        self.engine.start()
        log.info(
            "%s loaded: %s on %s, %d/%d layers there; %s",
            self.spec.id,
            grant.placement,
            grant.device,
            self.loaded.plan.gpu_layers,
            shape.num_hidden_layers,
            "a thinking model (<think> blocks parsed into reasoning)" if thinks else "no thinking",
        )
        if self.options.thinking is not None and not thinks:
            log.warning("%s: options.thinking is set, but its chat template knows no thinking", self.spec.id)

    def unload_model(self) -> None:
        """Stop the engine and free every weight."""
        engine, self.engine = self.engine, None
        if engine is not None:
            engine.stop()
            if engine.masks is not None:
                engine.masks.close()
        self.grammars = None
        loaded, self.loaded = self.loaded, None
        if loaded is not None:
            loaded.close()
            del loaded
        self.grant = None
        free_device_memory()

    def abort(self) -> None:
        """End every running and waiting generation now (shutdown deadline; event loop, no wait)."""
        if self.engine is not None:
            self.engine.stop(timeout=0, error=ShuttingDown("plughost is shutting down; please retry"))

    def move_model(self, grant: Grant) -> None:
        """Move the loaded weights to ``grant``'s placement (no checkpoint read)."""
        if self.loaded is None or self.engine is None:
            raise RuntimeError(f"{self.spec.id} is not loaded")
        engine = self.engine
        plan = self._plan(grant)
        with engine.model_lock:
            engine.reset(BackendError("the model was moved to another device; please retry"))
            if engine.prefix_cache is not None:
                engine.prefix_cache.clear()  # its K/V live on the old device
            # Everything to host RAM first and the old placement freed, so that a move within one
            # GPU never needs the old and the new copy there at once.
            old, self.loaded = self.loaded, None
            tensors = [(key, t.to("cpu")) for key, t in old.tensors()]
            old.close()
            engine.model, engine.decoder = None, None
            del old
            free_device_memory()
            new = loader.load_model(
                self.config, tensors, plan, offload_dir=self._offload_dir(), head_dtype=self._head_dtype()
            )
            del tensors
            self.loaded = new
            engine.model, engine.device, engine.decoder = new.model, new.device, new.decoder
            self.grant = grant
        log.info("%s relocated: %s on %s", self.spec.id, grant.placement, grant.device)

    def _plan(self, grant: Grant) -> loader.DevicePlan:
        assert self.limits is not None
        device = grant.device
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"the grant places {self.spec.id} on {device}, but torch sees no CUDA device")
        if grant.placement == PlacementKind.HYBRID:
            overflow = "disk" if device == "cpu" else "cpu"
            return loader.plan_device_map(self.config, self.limits, grant.gpu_bytes, device=device, overflow=overflow)
        return loader.plan_device_map(self.config, self.limits, None, device=device)

    def _head_dtype(self) -> torch.dtype | Literal["int8"]:
        assert self.limits is not None
        if self.limits.cpu_head_dtype == "int8":
            return "int8"
        return getattr(torch, self.limits.cpu_head_dtype)

    def _offload_dir(self) -> Path | None:
        folder = self.options.offload_dir
        return Path(str(folder)).expanduser() if folder else None

    # -- serving ------------------------------------------------------------------------------------
    async def stream(self, prepared: Prepared) -> AsyncIterator[ChatDelta]:
        """The engine's deltas for ``prepared`` (event loop); closing it cancels the sequence."""
        engine = self.engine
        if engine is None or not engine.alive:
            raise ShuttingDown(f"{self.spec.id} is not loaded")
        seq = Sequence(prepared, engine.tokenizer, asyncio.get_running_loop())
        engine.submit(seq)
        try:
            deltas = queued_deltas(seq.queue)
            if prepared.parse_reasoning:
                opened = prepared.think is not None and prepared.think.opened
                deltas = with_reasoning(deltas, open_block=opened)
            if prepared.parse_tool_calls:
                deltas = with_tool_calls(deltas)
            async for delta in deltas:
                yield delta
                if delta.finish_reason is not None:
                    return
        finally:
            engine.cancel(seq)  # synchronous: a closed stream stops generating at the next step

    async def prompt_ids(self, request: ChatRequest) -> list[int]:
        """The prompt's token ids, as :meth:`prepare` makes them (``PromptTokens``: token counting)."""
        assert self._preparer is not None
        return await self.on_prepare_thread(self._preparer.prompt_ids, request)

    def prepare(self, request: ChatRequest) -> Prepared:
        """Render and tokenise the conversation, check the context, build the constraint (prepare thread)."""
        assert self._preparer is not None and self.grammars is not None
        # The grammar first: its caps are cheap and keep a hostile tool schema out of the prompt too.
        constraint = self.grammars.constraint(request)
        p = self._preparer.prompt(request)
        return Prepared(
            prompt_ids=p.prompt_ids,
            max_tokens=p.max_tokens,
            sampling=p.sampling,
            stops=p.stops,
            constraint=constraint,
            top_logprobs=p.top_logprobs,
            parse_tool_calls=bool(request.tools) and request.tool_choice.mode != "none",
            parse_reasoning=self.thinks and request.prompt is None,  # raw completions pass unparsed
            think=self._think_plan(request, p.prompt_ids, p.thinking),
        )

    def _think_plan(self, request: ChatRequest, ids: list[int], thinking: bool | None) -> ThinkPlan | None:
        """How the sequence may think: ``None`` for raw prompts, models that cannot think and thinking
        switched off (the template wrote a closed, empty block: answered exactly as without thinking)."""
        tokens = self.think_tokens
        if tokens is None or request.prompt is not None:
            return None
        opened = tokens.opened_by(ids)
        if thinking is False and not opened:
            return None
        budget = request.thinking_budget if request.thinking_budget is not None else self.options.thinking_budget
        return ThinkPlan(tokens=tokens, opened=opened, budget=budget)
