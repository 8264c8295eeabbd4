"""The chat benchmarks' harness: the plugin's backend loaded as a benchmark wants it (:func:`load`),
greedy requests, transformers ``generate`` on the served model as the baseline (:func:`raw_generate`)
and concurrent streams through the engine (:func:`engine_streams`). Used by ``bench_chat.py`` and
``profile_decode.py``; the caller sets ``OMP_NUM_THREADS`` before importing it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _path in (str(ROOT / "plugins" / "chat_qwen_awq"), str(ROOT)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import torch  # noqa: E402

from chat_qwen_awq.testing import greedy_generate_kwargs  # noqa: E402
from host.contract.config import config_from_dict  # noqa: E402
from host.contract.domain import ChatMessage, ChatRequest, OutputFormat, SamplingParams  # noqa: E402
from host.contract.spec import Grant, PlacementKind  # noqa: E402


@dataclasses.dataclass
class Run:
    """One measured generation: time to first token, tokens, end time (seconds from start)."""

    ttft: float
    tokens: int
    end: float

    @property
    def decode_rate(self) -> float:
        """Tokens per second after the first one."""
        return (self.tokens - 1) / (self.end - self.ttft) if self.tokens > 1 and self.end > self.ttft else 0.0


def load(
    folder: Path,
    max_sequences: int,
    head_dtype: str = "auto",
    device: str = "cpu",
    gpu_layers: int | None = None,
    prefix_cache_tokens: int | None = None,
) -> Any:
    """The plugin's backend on ``device``: ``cpu``, or ``cuda`` with the declared GPU placement
    (``gpu_layers``: the hybrid placement with that many decoder layers on the GPU, the rest in
    host RAM, streamed to the GPU at every forward pass). A Qwen3 folder is served as Qwen3-8B-AWQ."""
    from chat_qwen_awq import MODEL_ID, QWEN3, model_spec, sizing
    from chat_qwen_awq.backend import QwenAwqChatBackend

    arch = sizing.architecture(json.loads((folder / "config.json").read_text(encoding="utf-8")))
    model_id = QWEN3.id if arch == "qwen3" else MODEL_ID
    options: dict[str, Any] = {"max_sequences": max_sequences, "cpu_head_dtype": head_dtype}
    if prefix_cache_tokens is not None:
        options["prefix_cache_tokens"] = prefix_cache_tokens
    config = config_from_dict(
        {
            "models": {model_id: {"weights": str(folder), "options": options}},
            "plugins": {"paths": [], "entry_points": False},
        }
    )
    spec = model_spec(config, model_id)
    backend = QwenAwqChatBackend(spec)
    if device == "cuda" and gpu_layers is not None:
        from chat_qwen_awq import sizing

        shape = sizing.ModelShape.from_config(json.loads((folder / "config.json").read_text(encoding="utf-8")))
        declared = next(p for p in spec.placements if p.kind == PlacementKind.HYBRID)
        budget = declared.gpu_bytes + gpu_layers * sizing.layer_bytes(shape)
        backend.load(Grant(placement=PlacementKind.HYBRID, device="cuda:0", gpu_bytes=budget, host_bytes=0))
    elif device == "cuda":
        declared = next(p for p in spec.placements if p.kind == PlacementKind.GPU)
        backend.load(Grant(placement=PlacementKind.GPU, device="cuda:0", gpu_bytes=declared.gpu_bytes, host_bytes=0))
    else:
        backend.load(Grant(placement=PlacementKind.CPU, device="cpu", gpu_bytes=0, host_bytes=0))
    return backend


#: A typical structured-output schema (what an extraction step of a RAG pipeline asks for).
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "year": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "rating": {"type": "number"},
        "summary": {"type": "string"},
    },
    "required": ["title", "year", "tags", "rating", "summary"],
    "additionalProperties": False,
}


def request(prompt: str, tokens: int, schema: dict[str, Any] | None = None) -> ChatRequest:
    """A greedy chat request of one user turn (``schema``: constrained to it)."""
    # Greedy without repetition penalty: the raw generate call below does exactly the same.
    output = OutputFormat(kind="json_schema", schema=schema) if schema is not None else OutputFormat()
    return ChatRequest(
        model="m",
        messages=(ChatMessage("user", prompt),),
        sampling=SamplingParams(max_tokens=tokens, temperature=0, repetition_penalty=1.0),
        output=output,
    )


def raw_generate(backend: Any, prompt: str, tokens: int, batch: int = 1) -> Run:
    """transformers ``generate`` on the served model: TTFT from a 1-token call, then the full call."""
    ids = backend.prepare(request(prompt, tokens)).prompt_ids
    x = torch.tensor([ids] * batch, device=backend.loaded.device)
    kwargs = greedy_generate_kwargs(backend, x)
    model = backend.loaded.model
    cuda = backend.loaded.device.type == "cuda"
    with torch.inference_mode():
        start = time.perf_counter()
        model.generate(x, max_new_tokens=1, **kwargs)
        if cuda:
            torch.cuda.synchronize()
        ttft = time.perf_counter() - start
        start = time.perf_counter()
        out = model.generate(x, max_new_tokens=tokens, **kwargs)
        if cuda:
            torch.cuda.synchronize()
        total = time.perf_counter() - start
    return Run(ttft=ttft, tokens=(out.shape[1] - x.shape[1]) * batch, end=total)


async def engine_streams(
    backend: Any, prompts: list[str], tokens: int | list[int], schema: dict[str, Any] | None = None
) -> list[Run]:
    """Run one stream per prompt concurrently through ``backend.generate`` (``tokens``: per stream, or all alike)."""
    start = time.perf_counter()
    budgets = tokens if isinstance(tokens, list) else [tokens] * len(prompts)

    async def one(prompt: str, budget: int) -> Run:
        first = None
        last = None
        async for delta in backend.generate(request(prompt, budget, schema)):
            now = time.perf_counter() - start
            first = now if first is None else first
            last = delta
        assert last is not None and first is not None
        return Run(ttft=first, tokens=last.completion_tokens, end=time.perf_counter() - start)

    return list(await asyncio.gather(*(one(p, b) for p, b in zip(prompts, budgets))))


def best(runs: list[Any], key: Any) -> Any:
    """The fastest of repeated runs (machine noise only ever slows a run down)."""
    return max(runs, key=key)
