"""The Qwen3-Embedding backend: the publisher's recipe, batched across requests.

Per input (``model-formats.md``, Qwen3-Embedding):

- a query is embedded as ``f"Instruct: {task}\\nQuery:{query}"``; a document as is;
- its tokens end with ``<|endoftext|>`` exactly once — text is tokenised without special tokens
  and the end-of-text id appended here, so text and token-id input follow one path whether or not
  the tokenizer's post-processor appends it;
- inputs are left-padded into batches and each row gets positions 0..n-1 of its own, so a vector
  does not depend on which batch its input lands in;
- the vector is the last token's hidden state of the base model (no lm_head), L2-normalised;
  ``dimensions`` keeps the first d components and L2-normalises again (Matryoshka).

Tokenisation runs on the batcher's prepare thread and the forward pass on its compute thread
(:class:`host.toolkit.batched.BatchedBackend`), never on the event loop. Weights are fp32 on the CPU and
16-bit on a GPU.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from embed_qwen3 import EmbedOptions
from embed_qwen3.sizing import max_length_of
from host.sdk import (
    BatchBudgets,
    BatchedBackend,
    EmbeddingRequest,
    EmbeddingResult,
    Grant,
    InvalidRequest,
    ModelSpec,
    TokenizerEndpoints,
    over_limit_prefix,
    resolve_weights,
)
from host.toolkit.openai_tokens import decode_cl100k, rejected
from host.toolkit.torch_utils import free_device_memory, left_pad, place

log = logging.getLogger("plughost.embed_qwen3")

ENDOFTEXT = "<|endoftext|>"
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def format_query(task: str, query: str) -> str:
    """The publisher's query format: one newline, no space after ``Query:``."""
    return f"Instruct: {task}\nQuery:{query}"


class EmbedInput:
    """One input as handed to the batcher: text (already formatted) or token ids."""

    __slots__ = ("ids", "index", "task", "text", "truncate")

    def __init__(
        self, index: int, text: str | None, ids: Sequence[int] | None, task: str | None, truncate: bool
    ) -> None:
        self.index = index  # position in the request, for error messages
        self.text = text  # a query's text is already formatted with its instruction
        self.ids = ids
        self.task = task  # set for queries; token-id queries get the instruction prepended as ids
        self.truncate = truncate


class Qwen3EmbeddingBackend(TokenizerEndpoints, BatchedBackend[EmbedInput, list[int], tuple[np.ndarray, int]]):
    """Serves one Qwen3-Embedding model (any size) through :class:`~host.toolkit.batched.BatchedBackend`."""

    kind = "embed"

    def __init__(self, spec: ModelSpec[EmbedOptions]) -> None:
        super().__init__(spec)
        self._read_options(spec)
        self.model: Any = None
        self.tokenizer: Any = None
        self.device = torch.device("cpu")
        self.eos_id = -1
        self.pad_id = -1
        self.vocab_size = 0
        self.hidden_size = 0
        self.max_length = 0
        self.checkpoint_dtype: torch.dtype = torch.bfloat16
        self.tokenizer_appends_eos = False
        self._prefix_ids: dict[str, list[int]] = {}

    def _read_options(self, spec: ModelSpec[EmbedOptions]) -> None:
        """The typed options (:class:`~embed_qwen3.EmbedOptions`) and the batch budgets they give."""
        self.options = o = spec.options
        self.budgets_by_device = {
            "cpu": BatchBudgets(o.batch_tokens_cpu, o.max_batch_size, o.batch_overhead_tokens_cpu),
            "gpu": BatchBudgets(o.batch_tokens_gpu, o.max_batch_size, o.batch_overhead_tokens_gpu),
        }
        self.max_pending = o.max_pending or None
        self.max_request_tokens = o.max_request_tokens

    # -- life cycle -------------------------------------------------------------------------------
    def load_model(self, grant: Grant) -> None:
        """Load tokenizer and weights where ``grant`` says."""
        from transformers import AutoModel, AutoTokenizer

        # WeightsError names models.<id>.weights; the scheduler reports it as the load failure.
        if self.options.token_ids == "cl100k":
            decode_cl100k([[0]])  # read the encoding now, on the load thread, not on a request
        path = resolve_weights(self.spec.weights, model_id=self.spec.id)
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        if not tokenizer.is_fast:
            raise RuntimeError(f"{path}: a fast tokenizer (tokenizer.json) is required")
        eos_id = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
        if eos_id is None or eos_id == tokenizer.unk_token_id:
            raise RuntimeError(f"{path}: the tokenizer has no {ENDOFTEXT} token")
        self.tokenizer, self.eos_id = tokenizer, int(eos_id)
        self.pad_id = int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else self.eos_id
        self.vocab_size = len(tokenizer)  # bounded by the embedding rows below
        probe = "Tokenizer probe: 1 2 3."
        plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
        own = tokenizer(probe)["input_ids"]
        self.tokenizer_appends_eos = own == [*plain, self.eos_id]
        if own not in (plain, [*plain, self.eos_id]):
            log.warning(
                "%s: the tokenizer adds special tokens other than a final %s; inputs follow the "
                "Qwen3-Embedding format (text + %s) instead",
                self.spec.id,
                ENDOFTEXT,
                ENDOFTEXT,
            )
        config = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
        self.checkpoint_dtype = _DTYPES.get(str(config.get("torch_dtype") or config.get("dtype")), torch.bfloat16)
        dtype = self._dtype_for(grant)
        model = AutoModel.from_pretrained(
            str(path), dtype=dtype, attn_implementation="sdpa", device_map={"": grant.device}
        )
        model.eval().requires_grad_(False)
        self.model, self.device = model, torch.device(grant.device)
        self.hidden_size = int(model.config.hidden_size)
        self.vocab_size = min(self.vocab_size, int(model.get_input_embeddings().num_embeddings))
        self.max_length = max_length_of(model.config.to_dict(), self.options.max_length)
        log.info(
            "%s: loaded %s on %s in %s (max_length %d, tokenizer appends eos: %s)",
            self.spec.id,
            path,
            grant.device,
            dtype,
            self.max_length,
            self.tokenizer_appends_eos,
        )

    def unload_model(self) -> None:
        """Free the weights."""
        self.model = None
        self.tokenizer = None
        free_device_memory()

    def move_model(self, grant: Grant) -> None:
        """Move the loaded weights to ``grant`` (GPU ↔ host RAM) without reading them from disk.

        On a GPU they run in the 16-bit GPU dtype. In host RAM they are either parked
        (``grant.parked``, an offload: kept 16-bit, as ``offload_bytes`` declares) or served on
        the CPU (fp32). Buffers (rotary frequencies) keep their own dtype.
        """
        dtype = self._dtype_for(grant)
        place(self.model, grant.device, dtype)
        self.device = torch.device(grant.device)
        free_device_memory()
        log.info("%s: relocated to %s (%s)", self.spec.id, grant.device, dtype)

    def _dtype_for(self, grant: Grant) -> torch.dtype:
        gpu_dtype = self._gpu_dtype()
        if grant.device.startswith("cuda"):
            return gpu_dtype
        return gpu_dtype if grant.parked else torch.float32

    def _gpu_dtype(self) -> torch.dtype:
        choice = self.options.gpu_dtype
        if choice == "auto":
            dtype = (
                self.checkpoint_dtype if self.checkpoint_dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
            )
        elif choice in ("float16", "bfloat16"):
            dtype = _DTYPES[choice]
        else:
            raise ValueError(
                f"models.{self.spec.id}.options.gpu_dtype: expected auto, bfloat16 or float16, got {choice!r}"
            )
        if dtype == torch.bfloat16 and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
            dtype = torch.float16
        return dtype

    # -- serving ----------------------------------------------------------------------------------
    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        """Embed every input of ``request`` (batched with concurrent requests)."""
        dims = request.dimensions
        if dims is not None:
            low = min(self.options.min_dimensions, self.hidden_size)
            if not low <= dims <= self.hidden_size:
                raise InvalidRequest(
                    f"'dimensions' must be between {low} and {self.hidden_size} for '{self.spec.id}', got {dims}.",
                    param="dimensions",
                )
        query = request.input_type == "query"
        if request.instruction is not None and not query:
            raise InvalidRequest(
                "'instruction' applies to queries only; send input_type \"query\" with it.", param="instruction"
            )
        # A blank instruction means "the default", as in the reranker.
        task = request.instruction if request.instruction and request.instruction.strip() else self.options.task
        truncate = request.truncate if request.truncate is not None else self.options.truncate
        inputs: list[EmbedInput] = []
        texts = request.texts
        if texts is None and request.token_ids is not None:
            texts = self._token_id_texts(request.token_ids)
        if texts is not None:
            for i, text in enumerate(texts):
                if not text:
                    raise InvalidRequest(f"input[{i}] is an empty string.", param="input")
                inputs.append(
                    EmbedInput(i, format_query(task, text) if query else text, None, task if query else None, truncate)
                )
        else:
            for i, ids in enumerate(request.token_ids or ()):
                if not ids:
                    raise InvalidRequest(f"input[{i}] is an empty list of token ids.", param="input")
                inputs.append(EmbedInput(i, None, ids, task if query else None, truncate))
        if not inputs:
            raise InvalidRequest("'input' must not be empty.", param="input")
        results = await self.submit(inputs)
        vectors = np.stack([vector for vector, _ in results])
        if dims is not None and dims < vectors.shape[1]:
            vectors = vectors[:, :dims]
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return EmbeddingResult(vectors=vectors.astype(np.float32, copy=False), prompt_tokens=sum(n for _, n in results))

    # -- batcher stages (worker threads) ----------------------------------------------------------
    def prepare(self, items: Sequence[EmbedInput]) -> list[list[int]]:
        """Token ids of each input, ending with <|endoftext|> once, within ``max_length`` (prepare thread)."""
        # A text far over max_length: tokenise only a prefix (reject, or truncate from it).
        huge = {
            id(item): prefix
            for item in items
            if item.text is not None
            and (prefix := over_limit_prefix(item.text, self.max_length, self._encode_plain, len)) is not None
        }
        texts = [item.text for item in items if item.text is not None and id(item) not in huge]
        encoded = (
            iter(self.tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"])
            if texts
            else iter(())
        )
        prepared: list[list[int]] = []
        for item in items:
            if item.text is not None:
                ids = list(huge[id(item)] if id(item) in huge else next(encoded))
                ids.append(self.eos_id)
            else:
                ids = self._checked_ids(item)
                if item.task is not None:
                    ids = self._query_prefix(item.task) + ids  # BPE may merge differently at the seam
                if ids[-1] != self.eos_id:  # a client that tokenised with the published tokenizer has it already
                    ids.append(self.eos_id)
            if len(ids) > self.max_length:
                if not item.truncate:
                    more = "more than " if id(item) in huge else ""
                    raise InvalidRequest(
                        f"input[{item.index}] has {more}{len(ids)} tokens (with the end-of-text token"
                        f"{' and the query instruction' if item.task is not None else ''}); "
                        f"'{self.spec.id}' accepts at most {self.max_length} tokens per input. Shorten it or send "
                        f'"truncate": true.',
                        param="input",
                        code="context_length_exceeded",
                    )
                ids = [*ids[: self.max_length - 1], self.eos_id]  # keep the final end-of-text token
            prepared.append(ids)
        return prepared

    def _token_id_texts(self, token_ids: Sequence[Sequence[int]]) -> tuple[str, ...] | None:
        """Token-id inputs as texts (``token_ids: cl100k``), ``None`` to take them as this model's ids."""
        if self.options.token_ids == "model":
            return None
        if self.options.token_ids == "reject":
            raise rejected(self.spec.id)
        return tuple(decode_cl100k(token_ids))

    def _encode_plain(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False, return_attention_mask=False)["input_ids"])

    def _checked_ids(self, item: EmbedInput) -> list[int]:
        ids = list(item.ids or ())
        low, high = min(ids), max(ids)
        if low < 0 or high >= self.vocab_size:
            bad = low if low < 0 else high
            raise InvalidRequest(
                f"input[{item.index}] contains token id {bad}, outside the vocabulary of "
                f"'{self.spec.id}' (0..{self.vocab_size - 1}).",
                param="input",
                code="invalid_token_id",
            )
        return ids

    def _query_prefix(self, task: str) -> list[int]:
        """Token ids of the instruction prefix of a token-id query (cached per task text)."""
        prefix = self._prefix_ids.get(task)
        if prefix is None:
            prefix = list(self.tokenizer(format_query(task, ""), add_special_tokens=False)["input_ids"])
            if len(self._prefix_ids) < 64:
                self._prefix_ids[task] = prefix
        return list(prefix)

    def length(self, prepared: list[int]) -> int:
        """An input's tokens."""
        return len(prepared)

    def run(self, batch: list[list[int]]) -> list[tuple[np.ndarray, int]]:
        """Forward one left-padded batch; the L2-normalised last-token state of each row (compute thread)."""
        # Each row counts its positions from its first real token: the same positions as alone.
        input_ids, mask, positions = left_pad(batch, self.pad_id)
        device = self.device
        with torch.inference_mode():
            out = self.model(
                input_ids=input_ids.to(device),
                attention_mask=mask.to(device),
                position_ids=positions.to(device),
                use_cache=False,
            )
            last = out.last_hidden_state[:, -1].float()  # left padding: the last column is every row's last token
            vectors = F.normalize(last, p=2, dim=-1).cpu().numpy()
        return [(vectors[r], len(ids)) for r, ids in enumerate(batch)]
