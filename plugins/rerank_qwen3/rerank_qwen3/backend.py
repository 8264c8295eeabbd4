"""The Qwen3-Reranker backend: P(yes) from the final hidden state and two lm_head rows.

The published recipe projects every position of every pair onto the whole vocabulary and then
reads two logits of the last position. Here the base model runs alone and its last-position
hidden state meets only the "yes" and "no" rows of the head, so memory and time stay those of
the decoder. Scores do not depend on batch companions: rows are left-padded, masked, and given
their own positions (``cumsum(mask) - 1``), so padding never shifts a row's rotary phases.

With ``share_prefix`` (the default) the prompt tokens before the document — template, instruction
and query, the same for every document of a request — run once: their key/value cache is computed
by a batch-1 forward (kept in a small LRU, :class:`PrefixCache`) and only the rest of each pair
(document and closing template) runs in the batch, attending to its row's prefix cache
(:func:`score_shared`). Which tokens count as shared depends on the pair alone
(:meth:`~rerank_qwen3.prompt.PairEncoder.shared_length`), so scores stay batch-invariant. Each row
holds a copy of its prefix's states, so a batch's cost (:class:`SharedPrefixCost`, the one
cut under the token budget) is rows × (longest prefix + longest rest) plus each distinct prefix's
own states: a long query over many short documents cannot multiply the cache by the rows.

Pairs from concurrent requests share batches through :class:`host.toolkit.batched.BatchedBackend`:
tokenisation on its prepare thread, forward passes on its compute thread, never on the event loop.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch

# At import, not on the compute thread: this module is imported under the host's first-use lock, and
# transformers' lazy attributes are not safe to resolve from two threads at once.
from transformers import DynamicCache

from host.sdk import (
    BatchBudgets,
    BatchedBackend,
    Grant,
    InvalidRequest,
    ModelSpec,
    RerankRequest,
    RerankResult,
    TokenizerEndpoints,
    resolve_weights,
)
from host.toolkit.torch_utils import cast_parameters, free_device_memory, left_pad, place
from rerank_qwen3 import RerankOptions
from rerank_qwen3.prompt import DEFAULT_INSTRUCTION, EncodedPair, PairEncoder
from rerank_qwen3.sizing import max_length_of

log = logging.getLogger("plughost.rerank_qwen3")

_GPU_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}

#: One pair to score: (instruction, query, document).
Pair = tuple[str, str, str]


class Qwen3RerankerBackend(TokenizerEndpoints, BatchedBackend[Pair, EncodedPair, tuple[float, int]]):
    """Serves :class:`~host.contract.domain.RerankRequest` for a Qwen3-Reranker checkpoint.

    Options (see :mod:`rerank_qwen3`): ``weights``, ``instruction``, ``max_length``,
    ``batch_tokens_gpu``, ``batch_tokens_cpu``, ``max_batch_size``, ``max_pending``, ``gpu_dtype``,
    ``share_prefix``, ``prefix_cache_entries``, ``prefix_cache_tokens``.
    """

    kind = "rerank"
    items_param = "documents"

    def __init__(self, spec: ModelSpec[RerankOptions]) -> None:
        super().__init__(spec)
        self._read_options(spec)
        self.base: Any = None  # the decoder without its lm_head (Qwen3Model)
        self.head: torch.Tensor | None = None  # fp32 [2, hidden]: the rows of "no" and "yes"
        self.yes_id = self.no_id = -1
        self.pad_id = 0
        self.encoder: PairEncoder | None = None
        self.device = torch.device("cpu")
        self.prefix_cache = PrefixCache(self.prefix_cache_entries, self.prefix_cache_tokens)

    def _read_options(self, spec: ModelSpec[RerankOptions]) -> None:
        """The typed options (:class:`~rerank_qwen3.RerankOptions`) and what follows from them."""
        self.options = o = spec.options
        self.instruction: str = o.instruction or DEFAULT_INSTRUCTION
        self.gpu_dtype = _GPU_DTYPES[o.gpu_dtype]
        self.budgets_by_device = {
            "cpu": BatchBudgets(max_batch_tokens=o.batch_tokens_cpu, max_batch_size=o.max_batch_size),
            "gpu": BatchBudgets(max_batch_tokens=o.batch_tokens_gpu, max_batch_size=o.max_batch_size),
        }
        self.max_pending = o.max_pending
        self.max_request_tokens = o.max_request_tokens
        self.share_prefix = o.share_prefix
        self.prefix_cache_entries = o.prefix_cache_entries
        self.prefix_cache_tokens = o.prefix_cache_tokens

    # -- life cycle -------------------------------------------------------------------------------
    def load_model(self, grant: Grant) -> None:
        """Load tokenizer and weights where ``grant`` says (fp32 on the CPU, ``gpu_dtype`` on a GPU)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = resolve_weights(self.spec.weights, model_id=self.spec.id)
        tokenizer = AutoTokenizer.from_pretrained(str(path), padding_side="left")
        self.yes_id, self.no_id = self._token_id(tokenizer, "yes"), self._token_id(tokenizer, "no")
        device = torch.device(grant.device)
        dtype = torch.float32 if device.type == "cpu" else self.gpu_dtype
        model = AutoModelForCausalLM.from_pretrained(
            str(path), dtype=dtype, device_map={"": str(device)} if device.type != "cpu" else None
        )
        model.eval()
        max_positions = int(getattr(model.config, "max_position_embeddings", 0) or 0)
        max_length = max_length_of({"max_position_embeddings": max_positions}, self.options.max_length)
        # The two rows are all the head scoring needs; fp32 so the logit difference keeps its precision.
        self.head = model.get_output_embeddings().weight[[self.no_id, self.yes_id]].detach().float().clone()
        self.base = model.get_decoder()
        del model  # an untied lm_head goes with the wrapper
        free_device_memory()
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise ValueError(f"{self.spec.id}: the tokenizer has neither a pad nor an eos token")
        self.pad_id = int(pad)
        self.encoder = PairEncoder(tokenizer, max_length)
        self.device = device
        log.info(
            "%s loaded on %s (%s), yes=%d no=%d, max_length=%d",
            self.spec.id,
            device,
            dtype,
            self.yes_id,
            self.no_id,
            max_length,
        )

    @staticmethod
    def _token_id(tokenizer: Any, token: str) -> int:
        found = tokenizer.convert_tokens_to_ids(token)
        if found is None or found == tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer has no single token {token!r}; is this a Qwen3 reranker?")
        return int(found)

    def unload_model(self) -> None:
        """Free every tensor."""
        self.base = self.head = self.encoder = None
        self.prefix_cache.clear()
        free_device_memory()

    def move_model(self, grant: Grant) -> None:
        """Move the loaded weights to ``grant.device`` without reading the checkpoint again.

        To a GPU the weights take ``gpu_dtype``. Parked in host RAM (``grant.parked``) they stay
        as compact as on the GPU; served on the CPU they are widened to fp32 (a CPU placement
        books fp32 bytes).
        """
        if self.base is None or self.head is None:
            raise RuntimeError(f"{self.spec.id}: relocate() before load()")
        target = torch.device(grant.device)
        dtype = self.gpu_dtype if target.type == "cuda" else None if grant.parked else torch.float32
        place(self.base, target, dtype)
        self.head = self.head.to(target)
        self.prefix_cache.clear()
        self.device = target
        free_device_memory()

    # -- serving ----------------------------------------------------------------------------------
    async def rerank(self, request: RerankRequest) -> RerankResult:
        """One score in [0, 1] per document, in order (P(yes)), with the logit margins it came from as
        ``raw_scores``; ``prompt_tokens`` counts every prompt's tokens."""
        if not request.query.strip():
            raise InvalidRequest("'query' must not be empty.", param="query")
        if not request.documents:
            return RerankResult(scores=[], prompt_tokens=0)
        instruction = request.instruction if request.instruction and request.instruction.strip() else self.instruction
        results = await self.submit([(instruction, request.query, doc) for doc in request.documents])
        margins = [margin for margin, _ in results]
        return RerankResult(
            scores=[probability(m) for m in margins], prompt_tokens=sum(n for _, n in results), raw_scores=margins
        )

    def prepare(self, pairs: Sequence[Pair]) -> list[EncodedPair]:
        """Tokenise pairs (the batcher's prepare thread: the only thread using the tokenizer)."""
        encoder = self.encoder
        if encoder is None:
            raise RuntimeError(f"{self.spec.id} was unloaded")
        encode = encoder.encode_shared if self.share_prefix else encoder.encode
        return [encode(instruction, query, document) for instruction, query, document in pairs]

    def length(self, pair: EncodedPair) -> int:
        """The tokens a pair runs in a batch (its shared prefix runs once, apart)."""
        return len(pair.ids) - pair.shared if self.share_prefix else len(pair.ids)

    def tokens(self, pair: EncodedPair) -> int:
        """A pair's whole prompt (what ``usage`` counts), against ``max_request_tokens``."""
        return len(pair.ids)

    def batch_cost(self) -> SharedPrefixCost | None:
        """With ``share_prefix`` a batch holds more than its padded rows: see :class:`SharedPrefixCost`."""
        return SharedPrefixCost() if self.share_prefix else None

    def run(self, batch: list[EncodedPair]) -> list[tuple[float, int]]:
        """Score one batch (the batcher's compute thread): ``(logit_yes − logit_no, prompt tokens)`` per pair."""
        base, head = self.base, self.head
        if base is None or head is None:
            raise RuntimeError(f"{self.spec.id} is not loaded")
        if self.device.type == "cpu" and base.dtype != torch.float32:
            cast_parameters(base, torch.float32)  # served on the CPU after being parked: fp32 as on load
            self.prefix_cache.clear()
        if self.share_prefix:
            rows = [(p.ids, p.shared) for p in batch]
            scores = score_shared(base, head, rows, self.pad_id, self.device, self.prefix_cache)
        else:
            scores = score_batch(base, head, [p.ids for p in batch], self.pad_id, self.device)
        return [(s, len(p.ids)) for s, p in zip(scores, batch)]


class SharedPrefixCost:
    """The key/value states a shared-prefix batch holds, in tokens, as its pairs are added.

    Every row holds a copy of its prefix's states (left-padded to the longest prefix) besides
    its rest, and each distinct prefix its own states: rows × (longest prefix + longest rest) +
    Σ distinct prefixes. This is the one measure a batch is cut by under the token budget, so a
    long query over many short documents cannot multiply the cache by the rows.
    """

    def __init__(self) -> None:
        self.rows = self.prefix = self.rest = self.distinct = 0
        self._seen: set[tuple[int, ...]] = set()

    def __call__(self, pair: EncodedPair) -> int:
        self.rows += 1
        self.prefix = max(self.prefix, pair.shared)
        self.rest = max(self.rest, len(pair.ids) - pair.shared)
        key = tuple(pair.ids[: pair.shared])
        if key not in self._seen:
            self._seen.add(key)
            self.distinct += len(key)
        return self.rows * (self.prefix + self.rest) + self.distinct


def score_batch(
    base: Any, head: torch.Tensor, rows: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> list[float]:
    """logit_yes − logit_no at the last position of each row (:func:`probability` makes it the score);
    ``head`` = rows (no, yes)."""
    ids, mask, positions = left_pad(rows, pad_id)
    with torch.inference_mode():
        out = base(
            input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device), use_cache=False
        )
        last = out.last_hidden_state[:, -1, :].float()  # left padding: the last column is every row's last token
        logits = last @ head.T  # [rows, 2] = (no, yes)
        return (logits[:, 1] - logits[:, 0]).tolist()


def probability(margin: float) -> float:
    """P(yes) over {no, yes} from the logit margin: sigmoid(logit_yes − logit_no)."""
    return 1.0 / (1.0 + math.exp(-margin)) if margin >= 0 else math.exp(margin) / (1.0 + math.exp(margin))


#: Key/value states of one prefix: ``[2 (keys, values), layers, kv_heads, tokens, head_dim]``.
PrefixKV = torch.Tensor


class PrefixCache:
    """An LRU of prefix key/value states, keyed by the prefix's token ids (compute thread only).

    A request whose documents span several batches computes its prefix once. It holds at most
    ``entries`` prefixes and ``max_tokens`` prefix tokens in all (its memory is declared from
    that); a longer prefix is used for its batch and not kept. Cleared whenever the weights move
    or change dtype.
    """

    def __init__(self, entries: int = 8, max_tokens: int = 4096) -> None:
        self.entries = max(0, entries)
        self.max_tokens = max(0, max_tokens)
        self._items: OrderedDict[tuple[int, ...], PrefixKV] = OrderedDict()
        self._tokens = 0
        self.hits = self.misses = 0

    def clear(self) -> None:
        self._items.clear()
        self._tokens = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, base: Any, key: tuple[int, ...], device: torch.device) -> PrefixKV:
        """The prefix states of ``key``, computed (batch 1, alone) when not cached."""
        found = self._items.get(key)
        if found is not None:
            self._items.move_to_end(key)
            self.hits += 1
            return found
        self.misses += 1
        found = prefix_states(base, key, device)
        if self.entries and len(key) <= self.max_tokens:
            self._items[key] = found
            self._tokens += len(key)
            while len(self._items) > self.entries or self._tokens > self.max_tokens:
                old, _ = self._items.popitem(last=False)
                self._tokens -= len(old)
        return found


def prefix_states(base: Any, ids: Sequence[int], device: torch.device) -> PrefixKV:
    """Key/value states of ``ids`` run alone (batch 1, positions 0..n-1), all layers in one tensor."""
    cache = DynamicCache(config=base.config)
    with torch.inference_mode():
        base(
            input_ids=torch.tensor([list(ids)], dtype=torch.long, device=device), past_key_values=cache, use_cache=True
        )
        states: list[torch.Tensor] = []
        for layer in cache.layers:
            assert layer.keys is not None and layer.values is not None, "every layer ran"
            states.append(torch.cat([layer.keys, layer.values]))
        return torch.stack(states, dim=1)


def score_shared(
    base: Any,
    head: torch.Tensor,
    rows: Sequence[tuple[Sequence[int], int]],
    pad_id: int,
    device: torch.device,
    cache: PrefixCache,
) -> list[float]:
    """:func:`score_batch` of rows ``(ids, shared)`` whose first ``shared`` ids run apart, once per prefix.

    Each distinct prefix gets its states from ``cache`` (computed alone when missing); the rest of
    every row runs in one batch whose past key/values are the rows' prefix states, left-padded to
    the longest prefix. The attention mask is ``[prefix mask | suffix mask]`` with zeros on every
    pad, and each row gets its own positions: 0..P-1 for its prefix, P.. for the rest, whatever the
    padding. A row's computation is thus the same in any batch (up to float rounding of differently
    shaped kernels) and the same as without sharing.
    """
    if not any(n for _, n in rows):
        return score_batch(base, head, [ids for ids, _ in rows], pad_id, device)
    keys = [tuple(ids[:n]) for ids, n in rows]
    states = {key: cache.get(base, key, device) for key in dict.fromkeys(keys) if key}
    suffixes = [list(ids[n:]) for ids, n in rows]
    lengths = [len(key) for key in keys]
    width = max(lengths)
    ids, suffix_mask, suffix_positions = left_pad(suffixes, pad_id)
    prefix_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, n in enumerate(lengths):
        if n:
            prefix_mask[i, width - n :] = 1
    mask = torch.cat([prefix_mask, suffix_mask], dim=1)
    positions = suffix_positions + torch.tensor(lengths, dtype=torch.long).unsqueeze(1)
    # Every row's prefix states, left-padded to ``width``, a layer at a time in a few large copies
    # (one per distinct prefix, one gather): per-row copies would be thousands of tiny GPU kernels.
    # Each layer's copy is released once the forward pass has appended that layer's new keys.
    distinct = list(states)
    template = states[distinct[0]]  # [2, layers, kv_heads, tokens, head_dim]
    slot = {key: i for i, key in enumerate(distinct)}
    index = torch.tensor([slot.get(key, len(distinct)) for key in keys], device=template.device)
    past = DynamicCache(config=base.config)
    with torch.inference_mode():
        for layer in range(template.shape[1]):
            padded = template.new_zeros((len(distinct) + 1, 2, template.shape[2], width, template.shape[4]))
            for i, key in enumerate(distinct):  # the extra last slot stays zero: rows without a prefix
                padded[i, :, :, width - len(key) :] = states[key][:, layer]
            kv = padded.index_select(0, index)
            del padded
            past.update(kv[:, 0], kv[:, 1], layer)
            del kv
    with torch.inference_mode():
        out = base(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
            past_key_values=past,
            use_cache=True,
            cache_position=torch.arange(width, width + ids.shape[1], device=device),
        )
        last = out.last_hidden_state[:, -1, :].float()
        logits = last @ head.T  # [rows, 2] = (no, yes)
        return (logits[:, 1] - logits[:, 0]).tolist()
