"""The continuous-batching engine: one thread that runs every sequence of a loaded model.

Each turn of the engine loop:

1. drops cancelled sequences (a client went away) — within one step of the cancel;
2. admits waiting sequences, shortest remaining budget first (:mod:`chat_qwen_awq.fairness`;
   a short request may preempt a long running one when every row is busy), while the batch
   has room (``max_sequences``) and the KV cache holds them (``kv_cache_tokens``, padded: rows x
   longest row); admitted sequences are
   prefilled together, left-padded, ``prefill_chunk_tokens`` at a time, one chunk per turn, so
   that running streams keep decoding while a long prompt is read;
3. runs one decode step for all running sequences as one batch: a left-padded KV cache
   (transformers ``DynamicCache``) with per-row positions and attention mask.

Rows are merged into the batch when their prefill ends and removed when they finish; leading
columns that only hold padding are trimmed. If the cache would outgrow ``kv_cache_tokens`` the
newest row is preempted: its cache is dropped and it is prefilled again (prompt + what it
generated so far) when there is room — its stream just pauses.

A sequence may carry a grammar constraint (:mod:`chat_qwen_awq.grammar`): the masks of a step's
constrained rows are filled on a worker thread while the forward pass runs, and applied to their
logits rows only, so a batch mixes constrained and free sequences. A thinking model's sequence
carries a :class:`~chat_qwen_awq.thinking.ThinkBlock`: the grammar waits until its think block is
closed, and a spent thinking budget forces the block's closing tokens instead of sampling.

Results go back to each sequence's asyncio queue through ``call_soon_threadsafe``, once per
step for all sequences. A failure is confined to what it touched: a failed prefill fails
its sequences, a failed decode step fails the running batch, a failed sampling fails its
sequence; the engine goes on.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import Any

import torch

# At import, not in the engine thread: the backend module is imported under the host's first-use
# lock, and transformers' lazy attributes are not safe to resolve from two threads at once.
from transformers import DynamicCache

from chat_qwen_awq import fairness
from chat_qwen_awq.cpu_decode import CpuDecoder
from chat_qwen_awq.grammar import MaskFiller, PendingMasks
from chat_qwen_awq.logprobs import TokenTexts, token_logprob
from chat_qwen_awq.prefix_cache import PrefixCache, fill_prefixes, remember_prefixes
from chat_qwen_awq.sequence import Sequence
from chat_qwen_awq.sizing import Limits
from chat_qwen_awq.text import Decoder
from host.sdk import BackendError, ChatDelta, PlughostError, QueueFull, ShuttingDown, TokenLogprob
from host.toolkit.torch_utils import left_pad

log = logging.getLogger("plughost.chat_qwen_awq.engine")


@dataclass
class _Rows:
    """A left-padded batch: rows, KV cache, attention mask, real lengths."""

    rows: list[Sequence]
    cache: Any  # transformers DynamicCache
    mask: torch.Tensor  # [B, L] long, 1 = real token
    lengths: torch.Tensor  # [B] long: real tokens per row (next position id)

    @property
    def width(self) -> int:
        return int(self.mask.shape[1])


@dataclass
class _Prefill:
    """Sequences being prefilled together, one chunk per engine turn."""

    rows: list[Sequence]
    ids: torch.Tensor  # [n, P] left-padded
    mask: torch.Tensor  # [n, P]
    positions: torch.Tensor  # [n, P]
    cache: Any
    done: int = 0  # columns read so far


@dataclass
class EngineStats:
    """Counters for tests and benchmarks."""

    steps: int = 0
    prefills: int = 0
    max_batch: int = 0
    preemptions: int = 0
    failures: int = 0
    prefix_tokens_reused: int = 0


class Engine:
    """Runs every sequence of one loaded model on a dedicated thread (see the module docstring).

    :param model: a loaded ``Qwen2ForCausalLM`` or ``Qwen3ForCausalLM`` (possibly dispatched with offload hooks).
    :param device: where its inputs and KV cache live.
    :param tokenizer: decodes generated ids (owned by the engine thread).
    :param eos_ids: tokens that end a generation.
    :param limits: sequences, KV tokens and prefill chunk size.
    :param prefix_cache: KV blocks of prompt prefixes reused across requests (``None``: off).
    :param decoder: runs decode steps instead of the model's ``forward`` (same logits, less
        Python; see :mod:`chat_qwen_awq.cpu_decode`).
    """

    def __init__(
        self,
        model: Any,
        device: torch.device,
        tokenizer: Decoder,
        eos_ids: Seq[int],
        limits: Limits,
        *,
        name: str = "chat-engine",
        prefix_cache: PrefixCache | None = None,
        masks: MaskFiller | None = None,
        token_texts: TokenTexts | None = None,
        decoder: CpuDecoder | None = None,
    ) -> None:
        self.model = model
        self.decoder = decoder  # the lean CPU decode step of this model, if it has one
        self.device = device
        self.tokenizer = tokenizer
        self.eos_ids = frozenset(eos_ids)
        self.limits = limits
        self.stats = EngineStats()
        self.prefix_cache = prefix_cache
        self.masks = masks  # None: the model serves no constrained sequences
        self.token_texts = token_texts or TokenTexts(lambda t: tokenizer.decode([t]).encode())
        # Sliding-window layers need transformers' own masks (Qwen2.5 does not use them).
        self._sliding = bool(getattr(model.config, "use_sliding_window", False))
        self.model_lock = threading.Lock()  # held during forward passes; relocation takes it
        self._cond = threading.Condition()
        self._incoming: list[Sequence] = []
        self._waiting: collections.deque[Sequence] = collections.deque()
        self._batch: _Rows | None = None
        self._prefill: _Prefill | None = None
        # Sequences taken out of one structure and not yet in the next (prefill → batch): a
        # failure in between must still finish them, or their clients would wait forever.
        self._in_hand: list[Sequence] = []
        self._stopping = False
        self._stop_error: PlughostError = ShuttingDown("the model was unloaded")
        self._outbox: list[tuple[Sequence, ChatDelta | BaseException]] = []
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    # -- consumer side (any thread) --------------------------------------------------------------
    def start(self) -> None:
        """Start the engine thread."""
        self._thread.start()

    def submit(self, seq: Sequence) -> None:
        """Queue a sequence; its deltas arrive on ``seq.queue``."""
        with self._cond:
            if self._stopping or not self._thread.is_alive():
                raise ShuttingDown("the model is being unloaded")
            # tuple(): one C-level copy; the engine thread reorders its line without this lock
            held = [s for s in (*self._incoming, *tuple(self._waiting)) if not s.cancelled]
            cap = self.limits.max_waiting_sequences
            if len(held) >= cap:
                now = time.monotonic()
                keys = [fairness.priority(s.remaining, now - s.enqueued) for s in held]
                if fairness.line_full(keys, fairness.priority(seq.remaining, 0.0), cap):
                    raise QueueFull(
                        f"{len(held)} chat requests are already waiting for a free slot (limit {cap}, option "
                        f"max_waiting_sequences); retry later."
                    )
            self._incoming.append(seq)
            self._cond.notify()

    def cancel(self, seq: Sequence) -> None:
        """Stop ``seq`` (synchronous, cheap): the engine drops it before its next step."""
        seq.cancelled = True
        with self._cond:
            self._cond.notify()

    @property
    def alive(self) -> bool:
        """Whether the engine thread runs."""
        return self._thread.is_alive()

    def active(self) -> int:
        """Sequences the engine still holds (waiting, prefilling or decoding)."""
        with self._cond:
            n = len(self._incoming) + len(self._waiting)
            n += len(self._prefill.rows) if self._prefill else 0
            n += len(self._batch.rows) if self._batch else 0
            return n

    def stop(self, timeout: float = 30.0, error: PlughostError | None = None) -> None:
        """Fail every sequence still held (with ``error``) and end the thread."""
        with self._cond:
            self._stopping = True
            self._stop_error = error or self._stop_error
            self._cond.notify()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    # -- engine thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            with self._cond:
                while not (self._stopping or self._incoming or self._waiting or self._batch or self._prefill):
                    self._cond.wait()
                if self._stopping:
                    break
                self._waiting.extend(self._incoming)
                self._incoming.clear()
            with self.model_lock:
                try:
                    with torch.inference_mode():
                        self._turn()
                except Exception as exc:
                    log.exception("engine turn failed")
                    self.stats.failures += 1
                    self._fail_all(BackendError(f"generation failed: {type(exc).__name__}: {exc}"))
                self._flush()
        self._fail_all(self._stop_error, waiting=True)
        self._flush()

    def _turn(self) -> None:
        self._drop_cancelled()
        if self._prefill is None and self._waiting:
            self._order_waiting()
            self._preempt_for_waiting()
            self._start_prefill()
        if self._prefill is not None:
            self._prefill_chunk()
        if self._batch is not None:
            self._preempt_if_needed()
            self._decode()

    def _drop_cancelled(self) -> None:
        self._waiting = collections.deque(s for s in self._waiting if not s.cancelled)
        if self._prefill is not None and all(s.cancelled for s in self._prefill.rows):
            self._prefill = None
        if self._batch is not None:
            self._remove([i for i, s in enumerate(self._batch.rows) if s.cancelled])

    # -- admission and prefill --------------------------------------------------------------------
    def _order_waiting(self) -> None:
        now = time.monotonic()
        seqs = list(self._waiting)
        keys = [fairness.priority(s.remaining, now - s.enqueued) for s in seqs]
        self._waiting = collections.deque(seqs[i] for i in fairness.admission_order(keys))

    def _preempt_for_waiting(self) -> None:
        """Every row busy: a much shorter waiting request takes the longest running one's row."""
        batch = self._batch
        if batch is None or len(batch.rows) < self.limits.max_sequences:
            return
        index = fairness.victim(self._waiting[0].remaining, [s.remaining for s in batch.rows])
        if index is None:
            return
        victim = batch.rows[index]
        self.stats.preemptions += 1
        self._remove([index])
        self._waiting.append(victim)  # behind the short one; it ages from its arrival

    def _start_prefill(self) -> None:
        running = len(self._batch.rows) if self._batch else 0
        width = self._batch.width if self._batch else 0
        picked: list[Sequence] = []
        while self._waiting and running + len(picked) < self.limits.max_sequences:
            longest = max([width, *(len(s.prefill_ids) for s in picked), len(self._waiting[0].prefill_ids)])
            rows = running + len(picked) + 1
            if rows * (longest + 1) > self.limits.kv_cache_tokens and rows > 1:
                break
            picked.append(self._waiting.popleft())
        if not picked:
            return
        self._in_hand = picked
        # Pads get position 1, as transformers' generate gives them.
        ids, mask, positions = left_pad([s.prefill_ids for s in picked], 0, pad_position=1)
        longest = int(ids.shape[1])
        cache = DynamicCache(config=self.model.config)
        self._prefill = _Prefill(
            rows=picked,
            ids=ids.to(self.device),
            mask=mask.to(self.device),
            positions=positions.to(self.device),
            cache=cache,
            done=self._reuse_prefixes(picked, longest, cache),
        )
        self._in_hand = []

    def _reuse_prefixes(self, picked: list[Sequence], longest: int, cache: Any) -> int:
        """Fill ``cache`` from the prefix cache (see :func:`~chat_qwen_awq.prefix_cache.fill_prefixes`)."""
        if self.prefix_cache is None:
            return 0
        done, reused = fill_prefixes(self.prefix_cache, [s.prefill_ids for s in picked], longest, cache)
        self.stats.prefix_tokens_reused += reused
        return done

    def _prefill_chunk(self) -> None:
        pf = self._prefill
        assert pf is not None
        total = pf.ids.shape[1]
        step = max(1, self.limits.prefill_chunk_tokens // len(pf.rows))
        start, end = pf.done, min(total, pf.done + step)
        masks = self._start_masks(pf.rows) if end == total else None
        try:
            out = self.model(
                input_ids=pf.ids[:, start:end],
                attention_mask=self._attention(pf.mask[:, :end], start),
                position_ids=pf.positions[:, start:end],
                past_key_values=pf.cache,
                cache_position=torch.arange(start, end, device=self.device),
                use_cache=True,
                logits_to_keep=1,
            )
        except Exception as exc:
            log.exception("prefill failed")
            self._prefill = None
            self.stats.failures += 1
            for s in pf.rows:
                self._finish_error(s, BackendError(f"prefill failed: {type(exc).__name__}: {exc}"))
            return
        pf.done = end
        if end < total:
            return
        self._prefill = None
        self._in_hand = list(pf.rows)
        self.stats.prefills += 1
        if self.prefix_cache is not None:
            remember_prefixes(self.prefix_cache, [s.prefill_ids for s in pf.rows], pf.cache)
        logits = out.logits[:, -1, :].to(dtype=torch.float32, device="cpu")
        padding = (pf.mask == 0)[:, None, :, None]
        for layer in pf.cache.layers:  # padded slots hold zeros, never stale values
            layer.keys.masked_fill_(padding, 0)
            layer.values.masked_fill_(padding, 0)
        rows = _Rows(rows=pf.rows, cache=pf.cache, mask=pf.mask, lengths=pf.mask.sum(-1))
        self._merge(rows)
        self._in_hand = []
        self._sample(logits, rows.rows, masks)

    def _merge(self, new: _Rows) -> None:
        old = self._batch
        if old is None:
            self._batch = new
            return
        width = max(old.width, new.width)

        def pad(t: torch.Tensor, n: int, dim: int) -> torch.Tensor:
            if n == 0:
                return t
            shape = list(t.shape)
            shape[dim] = n
            return torch.cat([t.new_zeros(shape), t], dim=dim)

        for a, b in zip(old.cache.layers, new.cache.layers):
            a.keys = torch.cat([pad(a.keys, width - old.width, 2), pad(b.keys, width - new.width, 2)])
            a.values = torch.cat([pad(a.values, width - old.width, 2), pad(b.values, width - new.width, 2)])
        old.mask = torch.cat([pad(old.mask, width - old.width, 1), pad(new.mask, width - new.width, 1)])
        old.lengths = torch.cat([old.lengths, new.lengths])
        old.rows.extend(new.rows)

    # -- decoding ---------------------------------------------------------------------------------
    def _preempt_if_needed(self) -> None:
        batch = self._batch
        while (
            batch is not None
            and len(batch.rows) > 1
            and len(batch.rows) * (batch.width + 1) > self.limits.kv_cache_tokens
        ):
            victim = batch.rows[-1]  # the newest row: it has the least to recompute
            self.stats.preemptions += 1
            log.info("KV cache full (%d rows x %d): preempting a sequence", len(batch.rows), batch.width)
            self._remove([len(batch.rows) - 1])
            self._waiting.appendleft(victim)
            batch = self._batch

    def _decode(self) -> None:
        batch = self._batch
        assert batch is not None
        n = len(batch.rows)
        tokens = torch.tensor([[s.generated[-1]] for s in batch.rows], dtype=torch.long, device=self.device)
        width = batch.width
        mask = torch.cat([batch.mask, batch.mask.new_ones(n, 1)], dim=1)
        masks = self._start_masks(batch.rows)  # filled while the forward runs
        try:
            attention = self._attention(mask, width)
            if self.decoder is not None:
                padding = None if isinstance(attention, torch.Tensor) else attention["full_attention"]
                logits = self.decoder.step(tokens, batch.lengths.unsqueeze(1), batch.cache, padding)
            else:
                logits = self.model(
                    input_ids=tokens,
                    attention_mask=attention,
                    position_ids=batch.lengths.unsqueeze(1),
                    past_key_values=batch.cache,
                    cache_position=torch.tensor([width], device=self.device),
                    use_cache=True,
                    logits_to_keep=1,
                ).logits[:, -1, :]
        except Exception as exc:
            log.exception("decode step failed")
            self.stats.failures += 1
            rows, self._batch = batch.rows, None
            for s in rows:
                self._finish_error(s, BackendError(f"decode failed: {type(exc).__name__}: {exc}"))
            return
        batch.mask = mask
        batch.lengths = batch.lengths + 1
        self.stats.steps += 1
        self.stats.max_batch = max(self.stats.max_batch, n)
        self._sample(logits.to(dtype=torch.float32, device="cpu"), list(batch.rows), masks)

    def _start_masks(self, rows: list[Sequence]) -> PendingMasks | None:
        return self.masks.start(rows) if self.masks is not None else None

    def _attention(self, mask: torch.Tensor, start: int) -> torch.Tensor | dict[str, torch.Tensor]:
        """The attention mask for queries at columns ``start..`` of the 2-D padding ``mask``.

        Without padding: the 2-D mask itself, so transformers takes exactly the path of
        ``generate`` (no mask tensor at all, SDPA's causal kernel). With padding: the 4-D boolean
        mask (True = attend) built here; transformers would build the same one through
        ``torch.vmap``, at several milliseconds per step.
        """
        if self._sliding or bool(mask.all()):
            return mask
        keys = mask.shape[1]
        queries = torch.arange(start, keys, device=mask.device)
        causal = torch.arange(keys, device=mask.device)[None, :] <= queries[:, None]  # [q, kv]
        return {"full_attention": causal[None, None] & mask.bool()[:, None, None, :]}

    def _sample(self, logits: torch.Tensor, rows: list[Sequence], masks: PendingMasks | None = None) -> None:
        if masks is not None:
            masks.apply(logits)
        for i, s in enumerate(rows):
            if s.cancelled or s.finished:
                continue
            try:
                if s.constraint is not None and s.constraint.error is not None:  # failed filling its mask
                    raise s.constraint.failure(len(s.generated))
                forced = s.think.next_forced() if s.think is not None else None
                token = s.sampler.choose(logits[i]) if forced is None else s.sampler.force(logits[i], forced)
                if s.top_logprobs is not None:
                    s.logprobs.append(token_logprob(s.sampler.scores, token, s.top_logprobs, self.token_texts))
                constrained = s.constraint is not None and forced is None
                if constrained and s.think is not None:
                    constrained = s.think.grammar_takes(token)
                if constrained and s.constraint is not None and not s.constraint.consume(token):
                    raise s.constraint.failure(len(s.generated))
            except PlughostError as exc:  # the request's own doing (its grammar, its sampling settings)
                log.info("sequence ended by its request: %s", exc.message)
                self._finish_error(s, exc)
                continue
            except Exception as exc:
                log.warning("sampling failed for one sequence: %r", exc)
                self._finish_error(s, BackendError(f"sampling failed: {type(exc).__name__}: {exc}"))
                continue
            if s.think is not None:
                s.think.accept(token, forced=forced is not None)
            self._accept(s, token)
        if self._batch is not None:
            self._remove([i for i, s in enumerate(self._batch.rows) if s.finished or s.cancelled])

    def _accept(self, s: Sequence, token: int) -> None:
        first = not s.generated
        s.generated.append(token)
        s.sampler.observe(token)
        if token in self.eos_ids:
            self._finish(s, s.text.flush(), "stop")
            return
        text = s.text.push(token)
        if s.constraint is not None and s.constraint.stopped:  # complete: nothing but EOS could follow
            self._finish(s, text + s.text.flush(), "stop")
        elif s.text.stopped:
            self._finish(s, text, "stop")
        elif len(s.generated) >= s.max_tokens:
            rest = s.text.flush()  # completing bytes held back may complete a stop string too
            self._finish(s, text + rest, "stop" if s.text.stopped else "length")
        elif text or first:  # the first token always answers: it ends the time to first token
            self._outbox.append((s, ChatDelta(text=text, logprobs=_take_logprobs(s))))

    def _finish(self, s: Sequence, text: str, reason: str) -> None:
        s.finished = True
        self._outbox.append(
            (
                s,
                ChatDelta(
                    text=text,
                    finish_reason=reason,
                    stop_sequence=s.text.matched,
                    prompt_tokens=len(s.prompt_ids),
                    completion_tokens=len(s.generated),
                    reasoning_tokens=s.think.reasoning_tokens if s.think is not None else 0,
                    logprobs=_take_logprobs(s),
                ),
            )
        )

    def _finish_error(self, s: Sequence, error: PlughostError) -> None:
        s.finished = True
        self._outbox.append((s, error))

    def _remove(self, indices: list[int]) -> None:
        batch = self._batch
        if batch is None or not indices:
            return
        drop = set(indices)
        keep = [i for i in range(len(batch.rows)) if i not in drop]
        if not keep:
            self._batch = None
            return
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        mask = batch.mask.index_select(0, index)
        used = mask.any(dim=0).nonzero()
        first = int(used[0]) if used.numel() else 0  # leading columns that are padding in every row
        batch.mask = mask[:, first:]
        for layer in batch.cache.layers:
            layer.keys = layer.keys.index_select(0, index)[:, :, first:]
            layer.values = layer.values.index_select(0, index)[:, :, first:]
        batch.lengths = batch.lengths.index_select(0, index)
        batch.rows = [batch.rows[i] for i in keep]

    def _fail_all(self, error: PlughostError, *, waiting: bool = False) -> None:
        held = list(self._batch.rows) if self._batch else []
        held += list(self._prefill.rows) if self._prefill else []
        held += self._in_hand
        self._batch = self._prefill = None
        self._in_hand = []
        if waiting:
            with self._cond:
                held += list(self._waiting) + self._incoming
                self._waiting.clear()
                self._incoming.clear()
        for s in held:
            if not s.finished:
                self._finish_error(s, error)

    def reset(self, error: PlughostError) -> None:
        """Fail what runs (call with :attr:`model_lock` held, e.g. before moving the model)."""
        self._fail_all(error)
        self._flush()

    def _flush(self) -> None:
        if not self._outbox:
            return
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Sequence, ChatDelta | BaseException]]] = {}
        for s, item in self._outbox:
            by_loop.setdefault(s.loop, []).append((s, item))
        self._outbox = []
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:  # the consumer's loop is closed: nobody is listening
                for s, _ in items:
                    s.cancelled = True


def _take_logprobs(s: Sequence) -> list[TokenLogprob] | None:
    """The logprobs of tokens not yet delivered (they go out with the next delta)."""
    if s.top_logprobs is None:
        return None
    taken, s.logprobs = s.logprobs, []
    return taken


def _deliver(items: list[tuple[Sequence, ChatDelta | BaseException]]) -> None:
    for s, item in items:
        s.queue.put_nowait(item)
