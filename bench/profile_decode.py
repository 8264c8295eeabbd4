"""Where a CPU decode step's time goes (chat_qwen_awq, one thread): torch.profiler over N decode steps.

OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python bench/profile_decode.py --model 0.5b --streams 1
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench")]

import torch  # noqa: E402
from chat_harness import engine_streams, load, request  # noqa: E402
from prompts import PROMPTS  # noqa: E402

from chat_qwen_awq.demo import TINY_AWQ  # noqa: E402
from host.demo.shapes import QWEN2_5_0_5B_SHAPE  # noqa: E402


def prof_steps(backend: object, prompts: list[str], steps: int) -> torch.profiler.profile:
    """Profile ``steps`` decode steps of ``len(prompts)`` rows (same-length rows: no padding)."""
    from transformers import DynamicCache

    b: Any = backend
    model, decoder = b.loaded.model, b.loaded.decoder
    ids = torch.tensor([b.prepare(request(prompts[0], steps)).prompt_ids] * len(prompts))
    rows, width = ids.shape
    with torch.inference_mode():
        cache = DynamicCache(config=model.config)
        model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        token = torch.zeros(rows, 1, dtype=torch.long)
        start = time.perf_counter()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for i in range(steps):
                positions = torch.full((rows, 1), width + i)
                if decoder is not None:
                    decoder.step(token, positions, cache, None)
                else:
                    model(
                        input_ids=token, position_ids=positions, past_key_values=cache, use_cache=True, logits_to_keep=1
                    )
        wall = (time.perf_counter() - start) / steps * 1e3
    ops = sum(e.self_cpu_time_total for e in prof.key_averages()) / steps / 1e3
    print(
        f"profiled: {wall:.2f} ms per step ({rows} rows), {ops:.2f} ms of it in torch ops (below); the rest, "
        f"{wall - ops:.2f} ms, is the plugin's C kernels (ctypes calls torch's profiler does not see) and Python"
    )
    return prof


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="0.5b")
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--head", default="auto")
    parser.add_argument("--rows", type=int, default=25)
    args = parser.parse_args()
    torch.set_num_threads(1)
    folder = TINY_AWQ.with_shape(QWEN2_5_0_5B_SHAPE).folder() if args.model == "0.5b" else TINY_AWQ.folder()
    backend = load(folder, max_sequences=max(8, args.streams), head_dtype=args.head)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.streams)]
    asyncio.run(engine_streams(backend, prompts, 4))
    start = time.perf_counter()
    runs = asyncio.run(engine_streams(backend, prompts, args.tokens))
    wall = time.perf_counter() - start
    print(f"unprofiled: {sum(r.tokens for r in runs) / wall:.1f} tok/s aggregate, streams={args.streams}")
    # The engine runs its steps on its own thread, which the profiler does not follow: profile the
    # same decode steps (the lean CPU step where the model has one, else transformers' forward)
    # on this thread, over a cache prefilled with the first prompt.
    print(
        prof_steps(backend, prompts, args.tokens)
        .key_averages()
        .table(sort_by="self_cpu_time_total", row_limit=args.rows)
    )
    backend.unload()


if __name__ == "__main__":
    main()
