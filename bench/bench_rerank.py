"""Rerank throughput: served (HTTP, dynamic batching) vs the in-process limit vs the published recipe.

On a random model of Qwen3-Reranker-0.6B's shape (``QWEN3_0_6B_SHAPE``; ``--layers N`` cuts the
depth so a CPU run ends in minutes), one CPU thread for torch (``--device cuda``: the model, the
served host and the recipe on the GPU, in fp16), it measures documents/s of

- **served**: ``POST /v1/rerank`` through the real app (uvicorn on loopback in a separate
  process, the rerank_qwen3 plugin, its DynamicBatcher) with 1 and with 16 requests in flight;
- **limit**: the same model and documents in-process, pre-tokenised, sorted by length over the
  whole workload and cut into batches of the same token budget — no HTTP, no tokenising, no
  queueing: what the served path could reach at best (``--batch-tokens`` changes both);
- **recipe**: QwenLM's published ``qwen3_reranker_transformers.py`` recipe (AutoModelForCausalLM,
  full-vocabulary logits, all of a request's documents in one padded batch as published;
  ``--recipe-batch`` cuts that batch where its logits would not fit in memory);

and the peak memory (RSS above the loaded model, sampled) of one 100-document request, next to
the size of the full-vocabulary logits the recipe would materialise for it.

Run::

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_rerank.py --layers 2
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import concurrent.futures
import dataclasses
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugins" / "rerank_qwen3"))
sys.path.insert(0, str(REPO))


import rerank_qwen3  # noqa: E402
from host.contract.config import config_from_dict  # noqa: E402
from host.contract.domain import RerankRequest  # noqa: E402
from host.contract.spec import GiB, Grant, PlacementKind  # noqa: E402
from host.demo.shapes import QWEN3_0_6B_SHAPE  # noqa: E402
from host.scheduling.policy import Budgets  # noqa: E402
from host.toolkit.batcher import cut_batches  # noqa: E402
from rerank_qwen3.backend import Qwen3RerankerBackend, probability  # noqa: E402
from rerank_qwen3.demo import TINY  # noqa: E402
from rerank_qwen3.testing import Recipe  # noqa: E402 - the publisher's recipe, as the tests use it

MODEL = rerank_qwen3.MODEL_ID
CPU = Grant(placement=PlacementKind.CPU, device="cpu", gpu_bytes=0, host_bytes=0)
GPU = Grant(placement=PlacementKind.GPU, device="cuda:0", gpu_bytes=0, host_bytes=0)


def grant_for(device: str) -> Grant:
    """The grant the scheduler would give on ``device`` ("cpu" or "cuda")."""
    return GPU if device == "cuda" else CPU


def sync(device: str) -> None:
    """Wait for queued GPU work, so that a timer reads finished work."""
    if device == "cuda":
        torch.cuda.synchronize()


_SENTENCES = [
    "Machine learning is a field of study in artificial intelligence concerned with statistical algorithms.",
    "The weather today is sunny with a light breeze; tomorrow it will rain in the morning.",
    "Python is a programming language that lets you work quickly and integrate systems more effectively.",
    "长城是中国古代修建的军事防御工程，横跨中国北方的历史边界。",
    "Water boils at one hundred degrees Celsius at sea level, and ice melts at zero degrees.",
    "A reranker reads a query and a document together and outputs a relevance score between zero and one.",
    "机器学习是人工智能的一个分支，研究如何让计算机从数据中学习规律并做出预测。",
    "The train leaves the station at half past nine and arrives in the capital two hours later.",
    "Shanghai is the largest city in China by population, and Beijing is the political center of the country.",
    "Doctors recommend drinking enough water, sleeping seven hours a night and exercising regularly.",
]
_QUERIES = [
    "What is the capital of China?",
    "Explain gravity",
    "中国的首都是哪里？",
    "How do rerankers work?",
    "What is machine learning?",
    "When does the train arrive?",
    "How to stay healthy?",
    "Is it raining?",
]


def make_requests(
    count: int, docs_per_request: int, min_tokens: int, max_tokens: int, tokenizer: Any, seed: int
) -> list[tuple[str, list[str]]]:
    """``count`` (query, documents) requests; document lengths uniform in [min_tokens, max_tokens] tokens."""
    rng = random.Random(seed)
    requests = []
    for i in range(count):
        docs = []
        for _ in range(docs_per_request):
            target = rng.randint(min_tokens, max_tokens)
            text = ""
            while len(tokenizer.encode(text, add_special_tokens=False)) < target:
                text += rng.choice(_SENTENCES) + " "
            ids = tokenizer.encode(text, add_special_tokens=False)[:target]
            docs.append(tokenizer.decode(ids))
        requests.append((_QUERIES[i % len(_QUERIES)], docs))
    return requests


def options_for(batch_tokens: int, max_batch_size: int, share_prefix: bool) -> dict[str, Any]:
    """The plugin options of a run (one token budget for either device)."""
    return {
        "batch_tokens_cpu": batch_tokens,
        "batch_tokens_gpu": batch_tokens,
        "max_batch_size": max_batch_size,
        "share_prefix": share_prefix,
    }


def spec_for(path: Path, batch_tokens: int, max_batch_size: int, share_prefix: bool = True) -> Any:
    config = config_from_dict(
        {"models": {MODEL: {"weights": str(path), "options": options_for(batch_tokens, max_batch_size, share_prefix)}}}
    )
    return rerank_qwen3.declare(config)  # options and weights from the config, as the server reads them


# -- served ----------------------------------------------------------------------------------------------


def serve(
    path: Path,
    port: int,
    batch_tokens: int,
    max_batch_size: int,
    share_prefix: bool = True,
    device: str = "cpu",
    stats_file: Path | None = None,
) -> None:
    """Run the host with the plugin on 127.0.0.1:``port`` until terminated (``--serve`` mode).

    On ``cuda`` the budgets are measured (the scheduler places the model on the GPU). When the
    model is unloaded (at shutdown) the plugin's batcher counters go to ``stats_file``.
    """
    import uvicorn

    unload = Qwen3RerankerBackend.unload

    def unload_writing_stats(self: Qwen3RerankerBackend) -> None:
        if stats_file is not None and self.batcher is not None:
            stats_file.write_text(json.dumps(dataclasses.asdict(self.batcher.stats)), encoding="utf-8")
        unload(self)

    Qwen3RerankerBackend.unload = unload_writing_stats  # type: ignore[method-assign]

    from host.app import create_app
    from host.testing.pytest_plugin import make_config

    config = make_config(
        {
            "models": {
                MODEL: {"weights": str(path), "options": options_for(batch_tokens, max_batch_size, share_prefix)}
            },
            "server": {"max_rerank_documents": 10_000},
        }
    )
    budgets = None if device == "cuda" else Budgets(gpus=(), host=64 * GiB)
    app = create_app(config, plugins=[rerank_qwen3], budgets=budgets)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


class BenchServer:
    """The host with the plugin in its own process, as in production (client threads in the same
    interpreter would compete with it for the GIL and halve what it seems to serve)."""

    def __init__(self, args: argparse.Namespace, batch_tokens: int) -> None:
        from host.testing.server import free_port

        self.port = free_port()
        self.stats_file = Path(tempfile.mkstemp(prefix="bench-rerank-stats-", suffix=".json")[1])
        self.stats: dict[str, Any] = {}
        self.served_seconds = 0.0
        self.command = [
            sys.executable,
            __file__,
            "--serve",
            str(self.port),
            "--layers",
            str(args.layers),
            "--stats-file",
            str(self.stats_file),
            "--batch-tokens",
            str(batch_tokens),
            "--max-batch-size",
            str(args.max_batch_size),
            "--share-prefix",
            args.share_prefix,
            "--device",
            args.device,
        ]

    def __enter__(self) -> BenchServer:
        import httpx

        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=600)
        deadline = time.monotonic() + 300
        while True:
            try:
                if self.client.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError("the benchmark server did not start")
            time.sleep(0.2)
        self.post(("warm up", ["a short document", "another one"]))  # loads the model
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait(timeout=60)
        text = self.stats_file.read_text(encoding="utf-8") if self.stats_file.exists() else ""
        self.stats = json.loads(text) if text else {}
        self.stats_file.unlink(missing_ok=True)

    def post(self, request: tuple[str, list[str]]) -> list[float]:
        """Scores of one request, by document index."""
        query, docs = request
        response = self.client.post(
            "/v1/rerank", json={"model": MODEL, "query": query, "documents": docs, "return_documents": False}
        )
        response.raise_for_status()
        by_index = {r["index"]: r["relevance_score"] for r in response.json()["results"]}
        return [by_index[i] for i in range(len(docs))]

    def run(self, requests: list[tuple[str, list[str]]], concurrency: int) -> tuple[float, list[list[float]]]:
        """documents/s with ``concurrency`` requests in flight, and the scores."""
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
            scores = list(pool.map(self.post, requests))
        elapsed = time.perf_counter() - started
        self.served_seconds += elapsed
        return sum(len(d) for _, d in requests) / elapsed, scores


# -- the in-process limit ---------------------------------------------------------------------------------


def limit(
    backend: Qwen3RerankerBackend, requests: list[tuple[str, list[str]]], batch_tokens: int, max_batch_size: int
) -> tuple[float, list[list[float]], float]:
    """documents/s of perfectly batched forward passes (tokenised beforehand, sorted over the whole set).

    The batches run through the backend's own scoring (``run``: with ``share_prefix``, each
    request's prefix once, then the rest of the pairs), starting from an empty prefix cache; rows
    are sorted by the backend's ``length`` (the tokens a row runs in the batch) and cut as the
    batcher cuts them (:func:`host.toolkit.batcher.cut_batches` under the backend's ``batch_cost``).
    """
    assert backend.encoder is not None
    rows = [
        (r, d, prepared)
        for r, (q, docs) in enumerate(requests)
        for d, prepared in enumerate(backend.prepare([(backend.instruction, q, doc) for doc in docs]))
    ]
    cost = backend.length
    rows.sort(key=lambda x: cost(x[2]))

    def new_cost() -> Callable[[int], int]:
        add = backend.batch_cost()
        assert add is not None
        return lambda i: add(rows[i][2])

    groups = cut_batches(
        [cost(r[2]) for r in rows],
        max_batch_tokens=batch_tokens,
        max_batch_size=max_batch_size,
        cost=new_cost if backend.batch_cost() is not None else None,
    )
    batches = [[rows[i] for i in group] for group in groups]
    out = [[0.0] * len(docs) for _, docs in requests]
    padded = 0
    backend.prefix_cache.clear()
    sync(backend.device.type)
    started = time.perf_counter()
    for batch in batches:
        scores = backend.run([b[2] for b in batch])  # returns Python floats: the GPU work is done
        padded += len(batch) * max(cost(b[2]) for b in batch)
        for (r, d, _), (s, _n) in zip(batch, scores):
            out[r][d] = probability(s)  # run() gives the logit margin
    elapsed = time.perf_counter() - started
    real = sum(cost(r[2]) for r in rows)
    return len(rows) / elapsed, out, 1 - real / padded


# -- the published recipe -----------------------------------------------------------------------------------


def recipe_rate(
    path: Path, requests: list[tuple[str, list[str]]], chunk: int, device: str = "cpu"
) -> tuple[float, list[list[float]]]:
    recipe = Recipe(path, device=device)
    recipe.scores("warm up", ["a short document"])
    out = []
    started = time.perf_counter()
    for query, docs in requests:
        out.append([s for i in range(0, len(docs), chunk) for s in recipe.scores(query, docs[i : i + chunk])])
    elapsed = time.perf_counter() - started
    del recipe
    return sum(len(d) for _, d in requests) / elapsed, out


# -- memory of one 100-document request (run in a fresh process) ---------------------------------------------


def memory_probe(
    path: Path,
    docs: int,
    batch_tokens: int,
    max_batch_size: int,
    min_tokens: int,
    max_tokens: int,
    share_prefix: bool = True,
    device: str = "cpu",
) -> dict[str, Any]:
    """Peak RSS (on a GPU: peak GPU memory allocated) above the loaded, warmed-up model while one
    ``docs``-document request is scored."""
    import asyncio

    import psutil

    backend = Qwen3RerankerBackend(spec_for(path, batch_tokens, max_batch_size, share_prefix))
    backend.load(grant_for(device))
    assert backend.encoder is not None
    query, documents = make_requests(1, docs, min_tokens, max_tokens, backend.encoder.tokenizer, seed=7)[0]
    asyncio.run(backend.rerank(RerankRequest(model=MODEL, query="warm up", documents=(documents[-1],))))
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        gpu_baseline = torch.cuda.memory_allocated()
    process = psutil.Process()
    baseline = process.memory_info().rss
    peak = baseline
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result = asyncio.run(backend.rerank(RerankRequest(model=MODEL, query=query, documents=tuple(documents))))
    done.set()
    sampler.join()
    gpu = {}
    if device == "cuda":
        gpu = {
            "gpu_baseline_mib": gpu_baseline / 2**20,
            "gpu_peak_delta_mib": (torch.cuda.max_memory_allocated() - gpu_baseline) / 2**20,
        }
    longest = max(len(backend.encoder.encode(backend.instruction, query, d).ids) for d in documents)
    vocab = int(json.loads((path / "config.json").read_text())["vocab_size"])
    backend.unload()
    return {
        "docs": docs,
        "prompt_tokens": result.prompt_tokens,
        "baseline_rss_mib": baseline / 2**20,
        "peak_delta_mib": (peak - baseline) / 2**20,
        "longest_prompt": longest,
        "recipe_logits_mib": docs * longest * vocab * (2 if device == "cuda" else 4) / 2**20,
        **gpu,
    }


# -- main -------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=2, help="decoder layers (Qwen3-Reranker-0.6B has 28)")
    parser.add_argument("--docs-per-request", type=int, default=16)
    parser.add_argument("--requests-c1", type=int, default=2, help="requests sent one at a time")
    parser.add_argument("--requests-c16", type=int, default=16, help="requests sent 16 at a time")
    parser.add_argument("--min-tokens", type=int, default=16, help="shortest document, in tokens")
    parser.add_argument("--max-tokens", type=int, default=256, help="longest document, in tokens")
    parser.add_argument(
        "--batch-tokens",
        type=int,
        default=None,
        help="padded tokens per batch (default: the plugin's batch_tokens_cpu)",
    )
    parser.add_argument("--max-batch-size", type=int, default=128)
    parser.add_argument(
        "--share-prefix",
        choices=("on", "off"),
        default="on",
        help="the plugin's share_prefix option (off: every pair runs whole, as before)",
    )
    parser.add_argument(
        "--recipe-batch",
        type=int,
        default=None,
        help="pairs per forward of the published recipe (default: a request's documents, as published)",
    )
    parser.add_argument("--recipe-requests", type=int, default=2, help="c=1 requests the recipe scores (it is slow)")
    parser.add_argument("--skip-recipe", action="store_true")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved served/limit rounds (best counts)")
    parser.add_argument("--memory-docs", type=int, default=100, help="documents of the memory probe (0: skip)")
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="where the model runs (cuda: fp16, budgets measured, the recipe in fp16 on the GPU)",
    )
    parser.add_argument("--memory-probe", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--stats-file", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    batch_tokens = args.batch_tokens or rerank_qwen3.RerankOptions().batch_tokens_cpu
    shape = dataclasses.replace(QWEN3_0_6B_SHAPE, num_hidden_layers=args.layers)
    path = TINY.with_shape(shape).folder()

    if args.serve is not None:
        serve(
            path, args.serve, batch_tokens, args.max_batch_size, args.share_prefix == "on", args.device, args.stats_file
        )
        return
    if args.memory_probe:
        print(
            json.dumps(
                memory_probe(
                    path,
                    args.memory_docs,
                    batch_tokens,
                    args.max_batch_size,
                    args.min_tokens,
                    args.max_tokens,
                    args.share_prefix == "on",
                    args.device,
                )
            )
        )
        return

    print(
        f"model: Qwen3-Reranker-0.6B shape, random weights, layers={args.layers} (real: 28), "
        f"hidden={shape.hidden_size}, vocab={shape.vocab_size}; {path}"
    )
    print(
        f"device {args.device}"
        + (f" ({torch.cuda.get_device_name(0)})" if args.device == "cuda" else "")
        + f", torch {torch.__version__}, threads={torch.get_num_threads()}, "
        f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, "
        f"batch_tokens={batch_tokens}, max_batch_size={args.max_batch_size}, share_prefix={args.share_prefix}"
    )
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    req_c1 = make_requests(args.requests_c1, args.docs_per_request, args.min_tokens, args.max_tokens, tokenizer, 1)
    req_c16 = make_requests(args.requests_c16, args.docs_per_request, args.min_tokens, args.max_tokens, tokenizer, 2)
    print(
        f"workload: {args.docs_per_request} documents/request of {args.min_tokens}..{args.max_tokens} tokens "
        f"(+ the prompt template); c=1: {len(req_c1)} requests, c=16: {len(req_c16)} requests"
    )

    backend = Qwen3RerankerBackend(spec_for(path, batch_tokens, args.max_batch_size, args.share_prefix == "on"))
    backend.load(grant_for(args.device))
    assert backend.encoder is not None
    template = len(backend.encoder.encode(backend.instruction, _QUERIES[0], "").ids)
    print(
        f"prompt template + query: ~{template} tokens per pair; {args.rounds} interleaved rounds, best of each "
        f"(the machine is shared: the best round is the least disturbed)"
    )
    best: dict[str, float] = {}
    served_scores: dict[str, list[list[float]]] = {}
    limit_scores: dict[str, list[list[float]]] = {}
    with BenchServer(args, batch_tokens) as server:
        for round_ in range(args.rounds):
            line = []
            for name, concurrency, requests in (("c1", 1, req_c1), ("c16", 16, req_c16)):
                rate, served_scores[name] = server.run(requests, concurrency)
                lim, limit_scores[name], waste = limit(backend, requests, batch_tokens, args.max_batch_size)
                best[f"served {name}"] = max(best.get(f"served {name}", 0.0), rate)
                best[f"limit {name}"] = max(best.get(f"limit {name}", 0.0), lim)
                best[f"waste {name}"] = waste  # the same in every round
                line.append(f"{name}: served {rate:.2f}, limit {lim:.2f} docs/s (limit padding {waste:.1%})")
            print(f"round {round_ + 1}: " + "; ".join(line))
    backend.unload()
    st = server.stats
    if st.get("batches"):
        print(
            f"server batcher (all rounds): {st['batches']} batches, {st['items'] / st['batches']:.1f} rows and "
            f"{st['padded_tokens'] / st['batches']:.0f} padded tokens per batch, padding "
            f"{1 - st['real_tokens'] / st['padded_tokens']:.1%}, compute busy {st['run_seconds']:.1f} s of "
            f"{server.served_seconds:.1f} s served"
        )
    diff = max(
        abs(a - b)
        for name in served_scores
        for rs, rl in zip(served_scores[name], limit_scores[name])
        for a, b in zip(rs, rl)
    )
    print(f"max |served - limit| score = {diff:.2e}")
    rates = {"c1": best["served c1"], "c16": best["served c16"]}
    limit_c1, limit_c16 = best["limit c1"], best["limit c16"]

    # The limit still pads (rows of one batch differ in length). Were padded tokens free, it could
    # reach limit / (1 - padding): a bound no batching on any device can beat.
    bound_c1 = limit_c1 / (1 - best["waste c1"])
    bound_c16 = limit_c16 / (1 - best["waste c16"])
    print(f"{'':<26}{'docs/s':>10}{'vs limit':>10}{'vs bound':>10}")
    print(f"{'limit (c1 docs)':<26}{limit_c1:>10.2f}")
    print(f"{'padding-free bound (c1)':<26}{bound_c1:>10.2f}")
    print(f"{'served c=1':<26}{rates['c1']:>10.2f}{rates['c1'] / limit_c1:>9.2f}x{rates['c1'] / bound_c1:>9.2f}x")
    print(f"{'limit (c16 docs)':<26}{limit_c16:>10.2f}")
    print(f"{'padding-free bound (c16)':<26}{bound_c16:>10.2f}")
    print(f"{'served c=16':<26}{rates['c16']:>10.2f}{rates['c16'] / limit_c16:>9.2f}x{rates['c16'] / bound_c16:>9.2f}x")
    if not args.skip_recipe:
        recipe_batch = args.recipe_batch or args.docs_per_request
        recipe, recipe_scores = recipe_rate(path, req_c1[: args.recipe_requests], recipe_batch, args.device)
        rdiff = max(abs(a - b) for rs, rl in zip(served_scores["c1"], recipe_scores) for a, b in zip(rs, rl))
        print(
            f"{'published recipe':<26}{recipe:>10.2f}   (the first {args.recipe_requests} c=1 requests, "
            f"{recipe_batch} pairs/forward, full logits; max |served - recipe| = {rdiff:.2e})"
        )
        print(
            f"served c=1 / recipe = {rates['c1'] / recipe:.2f}x (same documents), "
            f"served c=16 / recipe = {rates['c16'] / recipe:.2f}x"
        )

    if args.memory_docs < 1:
        return
    probe = subprocess.run(
        [
            sys.executable,
            __file__,
            "--memory-probe",
            "--layers",
            str(args.layers),
            "--memory-docs",
            str(args.memory_docs),
            "--batch-tokens",
            str(batch_tokens),
            "--max-batch-size",
            str(args.max_batch_size),
            "--min-tokens",
            str(args.min_tokens),
            "--max-tokens",
            str(args.max_tokens),
            "--share-prefix",
            args.share_prefix,
            "--device",
            args.device,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    mem = json.loads(probe.stdout.strip().splitlines()[-1])
    print(
        f"memory, one {mem['docs']}-document request ({mem['prompt_tokens']} prompt tokens): peak RSS "
        f"+{mem['peak_delta_mib']:.0f} MiB over the loaded model ({mem['baseline_rss_mib']:.0f} MiB); the recipe's "
        f"full-vocabulary logits alone would take {mem['recipe_logits_mib']:.0f} MiB "
        f"({mem['docs']} x {mem['longest_prompt']} x vocab x {'fp16' if args.device == 'cuda' else 'fp32'})"
    )
    if "gpu_peak_delta_mib" in mem:
        print(
            f"GPU memory of that request: peak +{mem['gpu_peak_delta_mib']:.0f} MiB allocated over the loaded "
            f"model ({mem['gpu_baseline_mib']:.0f} MiB)"
        )


if __name__ == "__main__":
    main()
