"""Chat decoding benchmark of the chat_qwen_awq plugin: engine vs raw ``generate`` on the same model.

For each model it loads the plugin's backend on the CPU (1 thread) — or with ``--device cuda``
on the GPU (the declared gpu placement; ``--gpu-layers N``: the hybrid placement with N decoder
layers on the GPU and the rest streamed from host RAM) — and measures, in one run:

- raw ``model.generate`` (greedy, batch 1) on the very model the engine serves: time to first
  token (TTFT) and decode tokens/s;
- the engine through ``backend.generate`` (the route's code path minus HTTP) with 1 stream and
  with 8 concurrent streams: TTFT, decode tokens/s per stream, and aggregate tokens/s
  (all completion tokens / wall time from the first request to the last token).

Targets (issue 6): 1 stream >= 0.95x raw generate; 8 streams >= 3x the 1-stream aggregate. Issue 15
(0.5B shape, one thread): 1 stream >= 30 tok/s with the exact default, >= 40 with the fastest option;
8 streams >= 3.5x one. The 8-stream ratio is printed end to end (the 8 prompts' prefill included) and
for decoding alone (tokens after each first one, over the decoding window).

With ``--constrained`` it measures instead constrained decoding (``response_format`` json_schema,
llguidance masks) against free decoding on the same prompts and the same token counts (each free
stream gets exactly the tokens its constrained twin produced), at 1 and ``--streams`` streams,
interleaved in one process (A B B A per repeat: constrained, free, free, constrained), the time to
fill one step's masks, and the compile time of a typical schema (cold, and from the cache).
Target (issue 13): constrained >= 0.9x free at both. ``--tokenizer DIR`` serves the model with
another tokenizer (e.g. the real 151k Qwen vocabulary): mask cost grows with the vocabulary.

With ``--per-parameter`` it compares the given models (e.g. ``--models 0.5b,qwen3-0.6b``) on one
stream instead: every model loaded at once, single-stream runs interleaved (A B B A per repeat), the
decode rate of each, and the median per-repeat ratio of decode rate x parameters against the first
model (issue 23: Qwen3 within 10 % of Qwen2.5 per parameter). Same-run ratios hold on a busy machine;
absolute rates need a quiet one.

Models: the tiny AWQ test models (``tiny``: Qwen2, ``qwen3-tiny``), a random Qwen2.5-0.5B-shaped AWQ
model (``0.5b``) and a random Qwen3-0.6B-shaped one (``qwen3-0.6b``); ``--layers N`` cuts their depth
on small machines (the depth used is printed). Run::

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_chat.py --layers 8
    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_chat.py --per-parameter --models 0.5b,qwen3-0.6b

``--engine vllm``: instead, the plugin's engine and vLLM side by side on each model
(:mod:`chat_engines`: cold load, 1/8/32 streams, RAG-prompt TTFT, offload and back); ``7b`` is a
random Qwen2.5-7B-shaped AWQ model (the issue-22 GPU run).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import asyncio
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins" / "chat_qwen_awq")]

import chat_engines  # noqa: E402 - bench/chat_engines.py: --engine vllm
import torch  # noqa: E402
from chat_harness import SCHEMA, Run, best, engine_streams, load, raw_generate, request  # noqa: E402
from prompts import PROMPTS  # noqa: E402 - bench/prompts.py (shared with bench_llama_cpp.py)

from chat_qwen_awq.demo import TINY_AWQ, TINY_QWEN3_AWQ  # noqa: E402
from host.contract.domain import ChatMessage, ChatRequest, SamplingParams  # noqa: E402
from host.demo.shapes import QWEN2_5_0_5B_SHAPE, QWEN2_5_7B_SHAPE, QWEN3_0_6B_CHAT_SHAPE  # noqa: E402


def bench_model(
    name: str,
    folder: Path,
    tokens: int,
    repeats: int,
    streams: int,
    head_dtype: str = "auto",
    device: str = "cpu",
    gpu_layers: int | None = None,
) -> dict[str, Any]:
    backend = load(folder, max_sequences=max(8, streams), head_dtype=head_dtype, device=device, gpu_layers=gpu_layers)
    try:
        prompt = PROMPTS[0]
        asyncio.run(engine_streams(backend, [prompt], 4))  # warm-up (first calls allocate)
        raw_generate(backend, prompt, 4)
        raw1, single, many = [], [], []
        for i in range(repeats):  # interleaved, order alternating, so that machine noise hits all alike
            engine_first = i % 2 == 1
            if engine_first:
                single.append(asyncio.run(engine_streams(backend, [prompt], tokens))[0])
            raw1.append(raw_generate(backend, prompt, tokens))
            if not engine_first:
                single.append(asyncio.run(engine_streams(backend, [prompt], tokens))[0])
            many.append(
                asyncio.run(engine_streams(backend, [PROMPTS[j % len(PROMPTS)] for j in range(streams)], tokens))
            )
        # Ratios per repeat (measured back to back), then their median: robust to a busy machine.
        ratio_raw = statistics.median(o.tokens / o.end / (r.tokens / r.end) for o, r in zip(single, raw1))
        ratio_decode_raw = statistics.median(
            o.decode_rate / ((r.tokens - 1) / (r.end - r.ttft)) for o, r in zip(single, raw1)
        )
        ratio_many = statistics.median(
            sum(x.tokens for x in g) / max(x.end for x in g) / (o.tokens / o.end) for g, o in zip(many, single)
        )
        # Decoding only (after each group's batched prefill): what a step of N rows costs against one of 1.
        ratio_many_decode = statistics.median(
            sum(x.tokens - 1 for x in g) / (max(x.end for x in g) - min(x.ttft for x in g)) / o.decode_rate
            for g, o in zip(many, single)
        )
        raw = best(raw1, lambda r: r.tokens / r.end)
        one = best(single, lambda r: r.tokens / r.end)
        group = best(many, lambda rs: sum(r.tokens for r in rs) / max(r.end for r in rs))
        rawb = raw_generate(backend, prompt, tokens, batch=streams)
        stats = backend.engine.stats
        result = {
            "model": name,
            "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
            "layers": backend.loaded.model.config.num_hidden_layers,
            "device_layers": backend.loaded.plan.gpu_layers,
            "cpu_head_dtype": backend.limits.cpu_head_dtype + (" (auto)" if head_dtype == "auto" else ""),
            "tokens_per_stream": tokens,
            "raw_generate_b1": {
                "ttft_ms": raw.ttft * 1e3,
                "decode_tok_s": (raw.tokens - 1) / (raw.end - raw.ttft),
                "tok_s": raw.tokens / raw.end,
                "tokens": raw.tokens,
            },
            "raw_generate_batch_same_prompt": {"tok_s": rawb.tokens / rawb.end, "tokens": rawb.tokens},
            "engine_1_stream": {
                "ttft_ms": one.ttft * 1e3,
                "decode_tok_s": one.decode_rate,
                "tok_s": one.tokens / one.end,
                "tokens": one.tokens,
            },
            f"engine_{streams}_streams": {
                "ttft_ms_median": statistics.median(r.ttft for r in group) * 1e3,
                "ttft_ms_max": max(r.ttft for r in group) * 1e3,
                "decode_tok_s_per_stream_median": statistics.median(r.decode_rate for r in group),
                "aggregate_tok_s": sum(r.tokens for r in group) / max(r.end for r in group),
                # After the (batched) prefill: tokens after each first one, over the decoding window.
                "decode_aggregate_tok_s": sum(r.tokens - 1 for r in group)
                / (max(r.end for r in group) - min(r.ttft for r in group)),
                "tokens": sum(r.tokens for r in group),
            },
            "engine_max_batch": stats.max_batch,
        }
        result["ratio_1_stream_vs_raw"] = ratio_raw
        result["ratio_decode_1_stream_vs_raw"] = ratio_decode_raw
        result[f"ratio_{streams}_streams_vs_1"] = ratio_many
        result[f"ratio_{streams}_streams_vs_1_decoding"] = ratio_many_decode
        result["repeats"] = repeats
        return result
    finally:
        backend.unload()


def compile_times(backend: Any, repeats: int = 20) -> dict[str, float]:
    """Milliseconds to get a schema's constraint: cold (validated and compiled) and cached (copied)."""
    cold, warm = [], []
    for i in range(repeats):
        schema = {**SCHEMA, "title": f"bench-{i}-{time.perf_counter_ns()}"}  # a new grammar every time
        start = time.perf_counter()
        backend.grammars.constraint(request("x", 8, schema))
        cold.append(time.perf_counter() - start)
        start = time.perf_counter()
        backend.grammars.constraint(request("x", 8, schema))
        warm.append(time.perf_counter() - start)
    return {"cold_ms_median": statistics.median(cold) * 1e3, "cached_ms_median": statistics.median(warm) * 1e3}


def mask_times(backend: Any, rows: int, steps: int = 48) -> float:
    """Median milliseconds to fill the masks of ``rows`` constrained sequences for one step (worker thread,
    as in the engine), walking each grammar along its first allowed token."""
    import numpy as np

    constraints = [backend.grammars.constraint(request("x", 8, SCHEMA)) for _ in range(rows)]

    class Row:
        finished = cancelled = grammar_paused = False
        also_allowed = ()

        def __init__(self, constraint: Any) -> None:
            self.constraint = constraint

    batch = [Row(c) for c in constraints]
    vocab = backend.grammars.vocab_size
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        pending = backend.engine.masks.start(batch)
        logits = torch.zeros(rows, vocab)
        pending.apply(logits)
        times.append(time.perf_counter() - start)
        for i, c in enumerate(constraints):
            allowed = np.flatnonzero(np.isfinite(logits[i].numpy()))
            if c.stopped or not len(allowed):
                return statistics.median(times) * 1e3
            c.consume(int(allowed[-1]))
    return statistics.median(times) * 1e3


def bench_constrained(
    name: str, folder: Path, tokens: int, repeats: int, streams: int, head_dtype: str
) -> dict[str, Any]:
    """Constrained vs free decoding on the same prompts and token counts (see the module docstring)."""
    backend = load(folder, max_sequences=max(8, streams), head_dtype=head_dtype)
    try:
        asyncio.run(engine_streams(backend, [PROMPTS[0]], 4, SCHEMA))  # warm-up
        asyncio.run(engine_streams(backend, [PROMPTS[0]], 4))
        result: dict[str, Any] = {
            "model": name,
            "layers": backend.loaded.model.config.num_hidden_layers,
            "vocab": len(backend._tokenizer),
            "compile": compile_times(backend),
            "mask_ms": {n: mask_times(backend, n) for n in (1, streams)},
            "repeats": repeats,
        }
        for n in (1, streams):
            prompts = [PROMPTS[j % len(PROMPTS)] for j in range(n)]
            ratios, con_rates, free_rates, counts = [], [], [], []
            rate = lambda rs: sum(r.tokens for r in rs) / max(r.end for r in rs)  # noqa: E731
            for _ in range(repeats):
                # A B B A (constrained, free, free, constrained): a load that drifts during the
                # repeat hits both sides alike; the ratio compares their mean rates.
                con = [asyncio.run(engine_streams(backend, prompts, tokens, SCHEMA))]
                budgets = [r.tokens for r in con[0]]  # the free twins generate exactly as many tokens
                free = [asyncio.run(engine_streams(backend, prompts, budgets)) for _ in range(2)]
                con.append(asyncio.run(engine_streams(backend, prompts, tokens, SCHEMA)))
                for runs in free:
                    assert [r.tokens for r in runs] == budgets, "a free stream ended early (EOS): pick other prompts"
                assert [r.tokens for r in con[1]] == budgets, "greedy constrained runs differ"
                con_rates += [rate(x) for x in con]
                free_rates += [rate(x) for x in free]
                ratios.append(sum(rate(x) for x in con) / sum(rate(x) for x in free))
                counts.append(sum(budgets))
            result[f"{n}_streams"] = {
                "constrained_tok_s": max(con_rates),
                "free_tok_s": max(free_rates),
                "ratio_median": statistics.median(ratios),
                "ratios": ratios,
                "tokens": counts[-1],
            }
        return result
    finally:
        backend.unload()


def report_constrained(r: dict[str, Any], streams: int) -> None:
    print(
        f"\n== constrained vs free: {r['model']} ({r['layers']} layers, tokenizer of {r['vocab']} tokens, 1 thread) =="
    )
    c = r["compile"]
    print(
        f"schema -> constraint: cold {c['cold_ms_median']:.2f} ms (validate + compile), "
        f"cached {c['cached_ms_median']:.3f} ms"
    )
    print(
        "masks of one step (fill + apply, no forward): "
        + ", ".join(f"{n} row(s) {ms:.2f} ms" for n, ms in r["mask_ms"].items())
    )
    for n in (1, streams):
        x = r[f"{n}_streams"]
        print(
            f"{n} stream(s): constrained {x['constrained_tok_s']:.1f} tok/s, free {x['free_tok_s']:.1f} tok/s "
            f"(best of {r['repeats']}); ratio median {x['ratio_median']:.2f}x "
            f"[{', '.join(f'{v:.2f}' for v in x['ratios'])}]   (target >= 0.9x; {x['tokens']} tokens a run)"
        )


def with_tokenizer(model: Path, tokenizer: Path) -> Path:
    """A folder serving ``model``'s weights with the tokenizer files of ``tokenizer`` (links, no copies)."""
    import tempfile

    out = Path(tempfile.mkdtemp(prefix="bench-chat-"))
    for f in model.iterdir():
        (out / f.name).symlink_to(f)
    for f in tokenizer.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "vocab", "merges", "added_tokens")):
            (out / f.name).unlink(missing_ok=True)
            (out / f.name).symlink_to(f)
    return out


QUESTIONS = (
    "What is the capital of China?",
    "Which city is the largest?",
    "水在多少度沸腾？",
    "Who built the Great Wall?",
    "Summarize passage two.",
    "What melts at zero degrees?",
)


def rag_system_prompt(backend: Any, tokens: int) -> str:
    """A system prompt of about ``tokens`` tokens: instructions and numbered passages, as RAG apps send."""
    passages = [p for p in PROMPTS] + [
        "The Great Wall of China is a series of fortifications built across the historical northern borders.",
        "Shanghai is the largest city in China by population; Beijing is the political and cultural center.",
        "Water boils at one hundred degrees Celsius at sea level. Ice melts at zero degrees.",
    ]
    text, i = "Answer only from the passages below.\n", 0
    while len(backend._tokenizer(text, add_special_tokens=False)["input_ids"]) < tokens:
        text += f"Passage {i + 1}: {passages[i % len(passages)]}\n"
        i += 1
    return text


def rag_question(system: str, question: str) -> ChatRequest:
    """One short question after the shared system prompt; one token answers it (TTFT alone)."""
    return ChatRequest(
        model="m",
        messages=(ChatMessage("system", system), ChatMessage("user", question)),
        sampling=SamplingParams(max_tokens=1, temperature=0, repetition_penalty=1.0),
    )


async def first_token(backend: Any, system: str, question: str) -> float:
    """Seconds from submitting the question to its first delta."""
    start = time.perf_counter()
    async for _ in backend.generate(rag_question(system, question)):
        break
    return time.perf_counter() - start


def bench_prefix(folder: Path, label: str, head_dtype: str, prompt_tokens: int, repeats: int) -> dict[str, Any]:
    """TTFT of short questions after a long shared system prompt, with and without the prefix cache."""
    ttft: dict[str, list[float]] = {}
    for mode, capacity in (("cached", None), ("uncached", 0)):
        backend = load(folder, max_sequences=8, head_dtype=head_dtype, prefix_cache_tokens=capacity)
        try:
            system = rag_system_prompt(backend, prompt_tokens)

            asyncio.run(first_token(backend, system, "warm-up"))  # from here on the system prompt is cached
            ttft[mode] = [
                asyncio.run(first_token(backend, system, QUESTIONS[i % len(QUESTIONS)])) for i in range(repeats)
            ]
            prompt_len = len(backend.prepare(rag_question(system, QUESTIONS[0])).prompt_ids)
        finally:
            backend.unload()
    cached, uncached = statistics.median(ttft["cached"]), statistics.median(ttft["uncached"])
    result = {
        "model": label,
        "prompt_tokens": prompt_len,
        "ttft_ms_cached_median": cached * 1e3,
        "ttft_ms_uncached_median": uncached * 1e3,
        "ratio": cached / uncached,
        "repeats": repeats,
    }
    print(
        f"\n== {label}: prefix cache, {prompt_len}-token prompts sharing a system prompt, {head_dtype} head ==\n"
        f"TTFT median: cached {cached * 1e3:.1f} ms, uncached {uncached * 1e3:.1f} ms -> "
        f"{cached / uncached:.3f}x (target <= 0.2x)"
    )
    return result


def parameters(folder: Path) -> tuple[int, int]:
    """(all parameters, those outside the embeddings and head) of the model in ``folder``."""
    from chat_qwen_awq import sizing

    shape = sizing.ModelShape.from_config(json.loads((folder / "config.json").read_text(encoding="utf-8")))
    matrices = 1 if shape.tie_word_embeddings else 2
    return shape.parameters, shape.parameters - matrices * shape.vocab_size * shape.hidden_size


def bench_per_parameter(models: list[tuple[str, Path]], tokens: int, repeats: int, head_dtype: str) -> dict[str, Any]:
    """One stream, one thread, the models interleaved (see the module docstring)."""
    backends = [load(folder, max_sequences=1, head_dtype=head_dtype) for _, folder in models]
    try:
        prompt = PROMPTS[0]
        for b in backends:  # warm-up (first calls allocate)
            asyncio.run(engine_streams(b, [prompt], 4))
        runs: list[list[Run]] = [[] for _ in models]
        for i in range(repeats):
            order = list(range(len(models)))
            for j in order if i % 2 == 0 else order[::-1]:
                runs[j].append(asyncio.run(engine_streams(backends[j], [prompt], tokens))[0])
        counts = [parameters(folder) for _, folder in models]
        result: dict[str, Any] = {"tokens_per_stream": tokens, "repeats": repeats, "models": []}
        for (name, _), b, rs, (total, layers) in zip(models, backends, runs, counts):
            result["models"].append(
                {
                    "model": name,
                    "layers": b.loaded.model.config.num_hidden_layers,
                    "cpu_head_dtype": b.limits.cpu_head_dtype,
                    "parameters": total,
                    "parameters_outside_embeddings": layers,
                    "decode_tok_s": [r.decode_rate for r in rs],
                    "decode_tok_s_best": max(r.decode_rate for r in rs),
                    "tokens": [r.tokens for r in rs],
                }
            )
        base = runs[0]
        for entry, rs, (total, layers) in zip(result["models"][1:], runs[1:], counts[1:]):
            t0, l0 = counts[0]
            entry["ratio_tok_s"] = statistics.median(r.decode_rate / b.decode_rate for r, b in zip(rs, base))
            entry["ratio_per_parameter"] = statistics.median(
                r.decode_rate * total / (b.decode_rate * t0) for r, b in zip(rs, base)
            )
            entry["ratio_per_parameter_outside_embeddings"] = statistics.median(
                r.decode_rate * layers / (b.decode_rate * l0) for r, b in zip(rs, base)
            )
        return result
    finally:
        for b in backends:
            b.unload()


def report_per_parameter(r: dict[str, Any]) -> None:
    first = r["models"][0]
    print(f"\n== one stream, one thread, {r['tokens_per_stream']} tokens, {r['repeats']} interleaved repeats ==")
    for m in r["models"]:
        line = (
            f"{m['model']:28s} {m['layers']:3d} layers, {m['parameters'] / 1e9:.3f}B parameters "
            f"({m['parameters_outside_embeddings'] / 1e9:.3f}B outside embeddings), {m['cpu_head_dtype']} head: "
            f"decode best {m['decode_tok_s_best']:.1f} tok/s"
        )
        if m is not first:
            line += (
                f"\n{'':28s} vs {first['model']} (median of same-repeat ratios): {m['ratio_tok_s']:.3f}x tok/s, "
                f"{m['ratio_per_parameter']:.3f}x tok/s x parameters, "
                f"{m['ratio_per_parameter_outside_embeddings']:.3f}x outside embeddings (target: >= 0.9x per parameter)"
            )
        print(line)


def report(r: dict[str, Any], streams: int) -> None:
    raw, one, many = r["raw_generate_b1"], r["engine_1_stream"], r[f"engine_{streams}_streams"]
    where = f"embeddings/head {r['cpu_head_dtype']}, 1 thread" if r["device"] == "cpu" else f"fp16 on {r['device']}"
    if r["device_layers"] < r["layers"]:
        where += f", {r['device_layers']} layers there and {r['layers'] - r['device_layers']} in host RAM"
    print(f"\n== {r['model']} ({r['layers']} layers, {r['tokens_per_stream']} tokens per stream, {where}) ==")
    print(
        f"raw generate, batch 1     : TTFT {raw['ttft_ms']:8.1f} ms   decode {raw['decode_tok_s']:8.1f} tok/s"
        f"   end-to-end {raw['tok_s']:8.1f} tok/s  ({raw['tokens']} tokens)"
    )
    print(
        f"engine, 1 stream          : TTFT {one['ttft_ms']:8.1f} ms   decode {one['decode_tok_s']:8.1f} tok/s"
        f"   end-to-end {one['tok_s']:8.1f} tok/s  ({one['tokens']} tokens)"
    )
    print(
        f"engine, {streams} streams         : TTFT median {many['ttft_ms_median']:.1f} ms, max "
        f"{many['ttft_ms_max']:.1f} ms   decode per stream {many['decode_tok_s_per_stream_median']:.1f} tok/s"
        f"   aggregate {many['aggregate_tok_s']:.1f} tok/s end-to-end, {many['decode_aggregate_tok_s']:.1f} tok/s "
        f"decoding  ({many['tokens']} tokens)"
    )
    print(
        f"raw generate, batch {streams} (same prompt, reference): "
        f"{r['raw_generate_batch_same_prompt']['tok_s']:.1f} tok/s"
    )
    print(f"(absolute numbers: best of {r['repeats']} repeats; ratios: median of the per-repeat ratios)")
    print(
        f"1 stream / raw generate   : {r['ratio_1_stream_vs_raw']:.2f}x end-to-end, "
        f"{r['ratio_decode_1_stream_vs_raw']:.2f}x decode   (target >= 0.95x)"
    )
    print(
        f"{streams} streams / 1 stream     : {r[f'ratio_{streams}_streams_vs_1']:.2f}x aggregate end-to-end "
        f"(prefill of all {streams} prompts included), {r[f'ratio_{streams}_streams_vs_1_decoding']:.2f}x decoding"
        "   (targets: >= 3x, issue 6; >= 3.5x, issue 15)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tiny,0.5b", help="comma-separated: tiny, 0.5b, qwen3-tiny, qwen3-0.6b, 7b")
    parser.add_argument(
        "--layers", type=int, default=None, help="decoder layers of the 0.5B/0.6B-shaped models (24/28)"
    )
    parser.add_argument("--tokens", type=int, default=None, help="tokens per stream (tiny 256, 0.5b 64)")
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--cpu-head-dtype",
        default="auto",
        help="auto (the plugin's default), float32, bfloat16, or several (comma-separated)",
    )
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cuda: the declared GPU placement (fp16, autoawq's GPU kernels)",
    )
    parser.add_argument(
        "--gpu-layers",
        type=int,
        default=None,
        help="with --device cuda: the hybrid placement, this many decoder layers on the GPU",
    )
    parser.add_argument("--constrained", action="store_true", help="constrained vs free decoding (issue 13)")
    parser.add_argument(
        "--per-parameter",
        action="store_true",
        help="one stream, models interleaved: decode rate x parameters against the first model (issue 23)",
    )
    parser.add_argument("--tokenizer", type=Path, default=None, help="serve with this tokenizer folder instead")

    parser.add_argument(
        "--prefix-cache",
        type=int,
        default=0,
        metavar="TOKENS",
        help="instead: TTFT of short questions after a shared system prompt of TOKENS tokens (e.g. 1500), "
        "with and without the prefix cache",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    chat_engines.add_arguments(parser)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results: list[dict[str, Any]] = []
    chosen: list[tuple[str, Path, int]] = []
    for name in args.models.split(","):
        if name == "tiny":
            folder, label, tokens = TINY_AWQ.folder(), "tiny qwen2-awq", 256
        elif name == "qwen3-tiny":
            folder, label, tokens = TINY_QWEN3_AWQ.folder(), "tiny qwen3-awq", 256
        elif name in ("0.5b", "qwen3-0.6b", "7b"):
            demo, real, label = {
                "0.5b": (TINY_AWQ, QWEN2_5_0_5B_SHAPE, "Qwen2.5-0.5B-shaped AWQ"),
                "qwen3-0.6b": (TINY_QWEN3_AWQ, QWEN3_0_6B_CHAT_SHAPE, "Qwen3-0.6B-shaped AWQ"),
                "7b": (TINY_AWQ, QWEN2_5_7B_SHAPE, "Qwen2.5-7B-shaped AWQ"),
            }[name]
            shape = dataclasses.replace(real, num_hidden_layers=args.layers) if args.layers else real
            print(
                f"building/caching the {label} model with {shape.num_hidden_layers} layers "
                f"(of {real.num_hidden_layers})",
                flush=True,
            )
            folder, tokens = demo.with_shape(shape).folder(), 64
        else:
            parser.error(f"unknown model {name!r}")
        chosen.append((label, folder, tokens))
    if args.per_parameter:
        if len(chosen) < 2:
            parser.error("--per-parameter compares two or more models")
        for head in args.cpu_head_dtype.split(","):
            r = bench_per_parameter(
                [(label, folder) for label, folder, _ in chosen], args.tokens or 64, args.repeats, head
            )
            report_per_parameter(r)
            results.append(r)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
        return
    for label, model_folder, tokens in chosen:
        folder = model_folder if args.tokenizer is None else with_tokenizer(model_folder, args.tokenizer)
        if args.engine == "vllm":
            results.append(chat_engines.run_from_args(args, folder, label, args.tokens or tokens))
            continue
        for head in args.cpu_head_dtype.split(","):
            if args.constrained:
                r = bench_constrained(label, folder, args.tokens or tokens, args.repeats, args.streams, head)
                report_constrained(r, args.streams)
                results.append(r)
                continue
            if args.prefix_cache:
                results.append(bench_prefix(folder, label, head, args.prefix_cache, args.repeats))
                continue
            r = bench_model(
                label, folder, args.tokens or tokens, args.repeats, args.streams, head, args.device, args.gpu_layers
            )
            report(r, args.streams)
            results.append(r)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
