"""Both chat engines side by side on one model (``bench_chat.py --engine vllm``): the plugin's engine
and vLLM, through the same backend interface (``backend.generate``: the route's path minus HTTP), on
the same device, one after the other in one run.

For each engine, in this order: a cold load (checkpoint → serving), decode at 1 stream and at each
``--streams`` count (aggregate tokens/s, TTFT), the time to first token of a ``--rag-tokens`` RAG
prompt never seen before (its prefill alone: one token answers it), then an offload to host RAM
and back (vLLM: sleep level 1 and wake-up) against the cold load. Greedy, no repetition penalty;
streams whose model stops early (EOS) are counted with the tokens they made.

Targets (issue 22, 7B-AWQ shape on a GPU): 1 stream >= 150 tok/s, 32 streams >= 10x one stream,
wake <= 0.1x a cold load.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from host.contract.config import config_from_dict
from host.contract.domain import ChatMessage, ChatRequest, SamplingParams
from host.contract.spec import Grant, PlacementKind

MODEL_ID = "Qwen2.5-7B-Instruct-AWQ"


def add_arguments(parser: Any) -> None:
    """``bench_chat.py``'s options of this mode."""
    parser.add_argument(
        "--engine",
        choices=("plughost", "vllm"),
        default="plughost",
        help="vllm: the plugin's engine and vLLM side by side on each model (bench/chat_engines.py)",
    )
    parser.add_argument("--vllm-python", default=None, help="the vLLM environment (default: .venv-vllm)")
    parser.add_argument("--engine-streams", default="8,32", help="with --engine vllm: stream counts besides 1")
    parser.add_argument("--rag-tokens", type=int, default=1500, help="with --engine vllm: the RAG prompt's size")


def run_from_args(args: Any, folder: Path, label: str, tokens: int) -> dict[str, Any]:
    """The side-by-side run ``bench_chat.py --engine vllm`` asked for."""
    counts = [int(n) for n in args.engine_streams.split(",") if n]
    python = args.vllm_python or default_vllm_python()
    return run(folder, label, args.device, tokens, counts, args.rag_tokens, args.repeats, python)


def default_vllm_python() -> str | None:
    """``$PLUGHOST_VLLM_PYTHON``, else the repository's ``.venv-vllm``."""
    configured = os.environ.get("PLUGHOST_VLLM_PYTHON")
    path = Path(configured) if configured else Path(__file__).resolve().parents[1] / ".venv-vllm" / "bin" / "python"
    return str(path) if path.is_file() else None


def backend_for(engine: str, folder: Path, device: str, max_sequences: int, vllm_python: str | None) -> Any:
    """An unloaded backend of ``engine`` for the model in ``folder`` and its grant on ``device``."""
    from chat_qwen_awq import model_spec

    options: dict[str, Any] = {"max_sequences": max_sequences, "engine": engine}
    if engine == "vllm":
        options["vllm_python"] = vllm_python
    config = config_from_dict(
        {
            "models": {MODEL_ID: {"weights": str(folder), "options": options}},
            "plugins": {"paths": [], "entry_points": False},
        }
    )
    spec = model_spec(config)
    if engine == "vllm":
        from chat_qwen_awq.vllm_backend import VllmChatBackend

        backend: Any = VllmChatBackend(spec)
    else:
        from chat_qwen_awq.backend import QwenAwqChatBackend

        backend = QwenAwqChatBackend(spec)
    kind = PlacementKind.GPU if device == "cuda" else PlacementKind.CPU
    declared = next(p for p in spec.placements if p.kind == kind)
    grant = Grant(
        placement=kind,
        device="cuda:0" if device == "cuda" else "cpu",
        gpu_bytes=declared.gpu_bytes,
        host_bytes=declared.host_bytes,
    )
    return backend, grant


def gpu_free() -> int:
    """Free bytes on GPU 0, as the driver counts them (every process)."""
    import torch

    return int(torch.cuda.mem_get_info(0)[0])


def request(prompt: str, tokens: int, system: str | None = None) -> ChatRequest:
    messages = ((ChatMessage("system", system),) if system else ()) + (ChatMessage("user", prompt),)
    return ChatRequest(
        model=MODEL_ID,
        messages=messages,
        sampling=SamplingParams(max_tokens=tokens, temperature=0, repetition_penalty=1.0),
    )


async def streams(backend: Any, requests: list[ChatRequest]) -> dict[str, float]:
    """Run the requests concurrently: aggregate tok/s, per-stream decode tok/s, TTFTs."""
    start = time.perf_counter()

    async def one(r: ChatRequest) -> tuple[float, float, int]:
        first = None
        last = None
        async for delta in backend.generate(r):
            first = time.perf_counter() - start if first is None else first
            last = delta
        assert first is not None and last is not None
        return first, time.perf_counter() - start, last.completion_tokens

    runs = await asyncio.gather(*(one(r) for r in requests))
    end = max(e for _, e, _ in runs)
    tokens = sum(n for _, _, n in runs)
    rates = [(n - 1) / (e - f) for f, e, n in runs if n > 1 and e > f]
    return {
        "streams": len(requests),
        "tokens": tokens,
        "aggregate_tok_s": tokens / end,
        "decode_tok_s_per_stream_median": statistics.median(rates) if rates else 0.0,
        "ttft_ms_median": statistics.median(f for f, _, _ in runs) * 1e3,
        "ttft_ms_max": max(f for f, _, _ in runs) * 1e3,
    }


def rag_system(tokenizer: Any, tokens: int) -> str:
    """A system prompt of about ``tokens`` tokens: instructions and numbered passages, never seen before."""
    from prompts import PROMPTS

    text = f"[{uuid.uuid4().hex}] Answer only from the passages below.\n"
    i = 0
    while len(tokenizer(text, add_special_tokens=False)["input_ids"]) < tokens:
        text += f"Passage {i + 1}: {PROMPTS[i % len(PROMPTS)]}\n"
        i += 1
    return text


def bench_engine(
    engine: str,
    folder: Path,
    device: str,
    tokens: int,
    counts: list[int],
    rag_tokens: int,
    repeats: int,
    vllm_python: str | None,
) -> dict[str, Any]:
    from prompts import PROMPTS

    backend, grant = backend_for(engine, folder, device, max(counts), vllm_python)
    free = gpu_free() if device == "cuda" else 0
    started = time.perf_counter()
    backend.load(grant)
    result: dict[str, Any] = {"engine": engine, "cold_load_s": time.perf_counter() - started}
    if device == "cuda":  # what the engine really takes (the whole device's free memory: other processes too)
        result["gpu_gib_declared"] = grant.gpu_bytes / 2**30
        result["gpu_gib_used_after_load"] = (free - gpu_free()) / 2**30
    try:
        asyncio.run(streams(backend, [request(PROMPTS[0], 4)]))  # warm-up
        for n in counts:
            runs = [
                asyncio.run(streams(backend, [request(PROMPTS[j % len(PROMPTS)], tokens) for j in range(n)]))
                for _ in range(repeats)
            ]
            result[f"{n}_streams"] = max(runs, key=lambda r: r["aggregate_tok_s"])  # noise only slows a run
        if device == "cuda":
            result["gpu_gib_used_peak_seen"] = (free - gpu_free()) / 2**30
        if rag_tokens:
            ttfts = []
            for _ in range(repeats):
                system = rag_system(backend._preparer.tokenizer, rag_tokens)
                prompt = request("What is the capital of China?", 1, system=system)
                ttfts.append(asyncio.run(streams(backend, [prompt]))["ttft_ms_median"])
            result["rag_ttft_ms_median"] = statistics.median(ttfts)
            result["rag_prompt_tokens"] = len(backend._preparer.prompt(prompt).prompt_ids)
        parked = Grant(placement=PlacementKind.CPU, device="cpu", gpu_bytes=0, host_bytes=grant.host_bytes, parked=True)
        t = time.perf_counter()
        backend.relocate(parked)
        result["offload_s"] = time.perf_counter() - t
        if device == "cuda":
            result["gpu_gib_used_offloaded"] = (free - gpu_free()) / 2**30
        t = time.perf_counter()
        backend.relocate(grant)
        result["reload_s"] = time.perf_counter() - t
        result["reload_vs_cold_load"] = result["reload_s"] / result["cold_load_s"]
        after = asyncio.run(streams(backend, [request(PROMPTS[0], tokens)]))
        result["1_stream_after_reload_tok_s"] = after["aggregate_tok_s"]
    finally:
        backend.unload()
    return result


def run(
    folder: Path,
    label: str,
    device: str,
    tokens: int,
    counts: list[int],
    rag_tokens: int,
    repeats: int,
    vllm_python: str | None,
) -> dict[str, Any]:
    """Both engines on ``folder``, one after the other; prints the table and returns the results."""
    if vllm_python is None:
        raise SystemExit("no vLLM environment: scripts/vllm-env, or --vllm-python / $PLUGHOST_VLLM_PYTHON")
    counts = sorted({1, *counts})
    results = {
        "model": label,
        "device": device,
        "tokens_per_stream": tokens,
        "repeats": repeats,
        "engines": [
            bench_engine(e, folder, device, tokens, counts, rag_tokens, repeats, vllm_python)
            for e in ("plughost", "vllm")
        ],
    }
    report(results, counts)
    return results


def report(results: dict[str, Any], counts: list[int]) -> None:
    print(f"\n== {results['model']} on {results['device']}: the plugin's engine and vLLM, side by side ==")
    print(f"({results['tokens_per_stream']} tokens a stream, greedy; best of {results['repeats']})")
    header = f"{'':34}" + "".join(f"{e['engine']:>14}" for e in results["engines"])
    print(header)

    def row(name: str, value: Any) -> None:
        print(f"{name:34}" + "".join(f"{value(e):>14}" for e in results["engines"]))

    row("cold load (s)", lambda e: f"{e['cold_load_s']:.1f}")
    for n in counts:
        row(f"{n} stream(s): aggregate tok/s", lambda e, n=n: f"{e[f'{n}_streams']['aggregate_tok_s']:.1f}")
        row(f"{n} stream(s): TTFT median ms", lambda e, n=n: f"{e[f'{n}_streams']['ttft_ms_median']:.0f}")
    one = {e["engine"]: e["1_streams"]["aggregate_tok_s"] for e in results["engines"]}
    for n in counts[1:]:
        row(f"{n} streams / 1 stream", lambda e, n=n: f"{e[f'{n}_streams']['aggregate_tok_s'] / one[e['engine']]:.2f}x")
    if "rag_ttft_ms_median" in results["engines"][0]:
        row("RAG prompt TTFT ms (uncached)", lambda e: f"{e['rag_ttft_ms_median']:.0f}")
        row("RAG prompt tokens", lambda e: f"{e['rag_prompt_tokens']}")
    row("offload to host RAM (s)", lambda e: f"{e['offload_s']:.2f}")
    row("back from host RAM (s)", lambda e: f"{e['reload_s']:.2f}")
    row("back / cold load", lambda e: f"{e['reload_vs_cold_load']:.3f}x")
    if "gpu_gib_declared" in results["engines"][0]:
        row("GPU GiB declared", lambda e: f"{e['gpu_gib_declared']:.2f}")
        row("GPU GiB used: loaded", lambda e: f"{e['gpu_gib_used_after_load']:.2f}")
        row("GPU GiB used: after the streams", lambda e: f"{e['gpu_gib_used_peak_seen']:.2f}")
        row("GPU GiB used: offloaded", lambda e: f"{e['gpu_gib_used_offloaded']:.2f}")
    print("targets (7B-AWQ shape on a GPU, vLLM): 1 stream >= 150 tok/s, 32 streams >= 10x, back <= 0.1x cold")


def write(results: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(results, indent=2), encoding="utf-8")
