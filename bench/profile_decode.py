"""Where a CPU decode step's time goes (chat_qwen_awq, one thread): torch.profiler over N engine steps.

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

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench")]

import torch  # noqa: E402
from bench_chat import PROMPTS, engine_streams, load, raw_generate  # noqa: E402

from chat_qwen_awq.demo import TINY_AWQ  # noqa: E402
from host.demo.shapes import QWEN2_5_0_5B_SHAPE  # noqa: E402


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
    # The engine runs forward passes on its own thread, which the profiler does not follow:
    # profile the same model's decode steps through ``generate`` on this thread instead.
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        raw_generate(backend, prompts[0], args.tokens, batch=args.streams)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
    backend.unload()


if __name__ == "__main__":
    main()
