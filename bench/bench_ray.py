#!/usr/bin/env python
"""What Ray Serve costs and gives: the same demo models, inputs and client against the
single-machine server (``litestar run``) and against plughost on a local Ray Serve instance.

Measures, in one run:

- latency (p50 / p99 per request) at concurrency 1 and 16 of a short embedding request (two
  short texts) and a short chat completion (8 tokens, greedy), on both servers, which run side by
  side and are measured in interleaved blocks (so a shared machine's load hits both alike); the
  difference is what the Serve proxy, the ingress replica and the deployment handle add;
- embedding throughput (texts/s at concurrency 16, requests of 8 short texts) of the single
  machine, and of one and two replicas of the embedding deployment (redeployed 1, 2, 1, 2).

Usage::

    .venv/bin/python bench/bench_ray.py                  # about 4 minutes on 2 shared cores
    .venv/bin/python bench/bench_ray.py --requests 48    # fewer requests per row

Every replica and the single-machine server run torch on one thread. On a 2-core machine the
second replica competes with the ingress, the proxy and the client for the same cores: read the
1-vs-2 replica figure as a floor, not as what two nodes give.
"""

from __future__ import annotations

from one_thread import pin_to_one_thread  # bench/one_thread.py: the script's own folder is on sys.path

pin_to_one_thread()  # before torch is imported

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import httpx  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHAT, EMBED = "Qwen2.5-7B-Instruct-AWQ", "Qwen3-Embedding-0.6B"
TEXTS = ["what is the capital of France", "gravity is a force", "向量检索", "retrieval augmented generation"]


def config_data(embed_replicas: int) -> dict[str, Any]:
    return {
        "demo": True,
        "plugins": {"paths": [str(REPO / "plugins")], "entry_points": False},
        "budgets": {"gpus": []},
        "models": {EMBED: {"replicas": embed_replicas, "pinned": True}, CHAT: {"pinned": True}},
    }


def embed_body(i: int, texts: int = 2) -> dict[str, Any]:
    return {"model": EMBED, "input": [f"{TEXTS[(i + k) % len(TEXTS)]} {i}" for k in range(texts)]}


def chat_body(i: int) -> dict[str, Any]:
    content = f"say hello {i % 4}"
    return {"model": CHAT, "messages": [{"role": "user", "content": content}], "max_tokens": 8, "temperature": 0}


async def drive(
    url: str, path: str, body: Callable[[int], dict[str, Any]], clients: int, per_client: int
) -> list[float]:
    """``clients`` concurrent loops of ``per_client`` requests each; returns the latencies (s)."""
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:

        async def loop(c: int) -> None:
            for r in range(per_client):
                started = time.perf_counter()
                response = await client.post(path, json=body(c * per_client + r))
                response.raise_for_status()
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(loop(c) for c in range(clients)))
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latency_rows(urls: dict[str, str], requests: int, rounds: int) -> dict[tuple[str, str], list[float]]:
    """Latencies (s) by (server, "embed c=1" ...), measured in interleaved blocks: every round runs
    a block on each server in turn, so the load of a shared machine hits both alike."""
    out: dict[tuple[str, str], list[float]] = {}
    for name, path, body in (("embed", "/v1/embeddings", embed_body), ("chat", "/v1/chat/completions", chat_body)):
        for url in urls.values():
            asyncio.run(drive(url, path, body, 2, 3))  # warm-up
        for clients in (1, 16):
            per_client = max(1, requests // rounds // clients)
            for _ in range(rounds):
                for server, url in urls.items():
                    lat = asyncio.run(drive(url, path, body, clients, per_client))
                    out.setdefault((server, f"{name} c={clients}"), []).extend(lat)
    return out


def throughput(url: str, requests: int) -> float:
    """Texts/s of 8-text embedding requests at concurrency 16."""
    asyncio.run(drive(url, "/v1/embeddings", lambda i: embed_body(i, 8), 4, 2))
    started = time.perf_counter()
    lat = asyncio.run(drive(url, "/v1/embeddings", lambda i: embed_body(i, 8), 16, max(2, requests // 8)))
    return 8 * len(lat) / (time.perf_counter() - started)


@contextlib.contextmanager
def single_machine(work: Path) -> Iterator[str]:
    """The single-machine server (``litestar run``) in a subprocess; yields its URL."""
    import yaml

    from host.testing.server import free_port

    (work / "plugins.yaml").write_text(yaml.safe_dump(config_data(1)))
    port = free_port()
    env = {**os.environ, "PLUGHOST_CONFIG": str(work / "plugins.yaml")}
    command = [sys.executable, "-m", "litestar", "--app", "host.app:create_app", "run", "--port", str(port)]
    with open(work / "server.log", "w") as log:
        proc = subprocess.Popen(command, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).json()["resident"]:
                    break
            except (httpx.HTTPError, ValueError):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start; see {work / 'server.log'}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)


@contextlib.contextmanager
def on_ray() -> Iterator[tuple[str, Callable[[int], None]]]:
    """A local Ray instance serving plughost; yields its URL and a function that redeploys with
    that many embedding replicas (waiting until they run)."""
    import ray
    from ray import serve

    from host.contract.config import config_from_dict
    from host.ray import application
    from host.testing.server import free_port

    def deploy(replicas: int) -> None:
        serve.run(application(config_from_dict(config_data(replicas))), name="plughost", route_prefix="/")

    ray.init(
        address="local",
        _node_ip_address="127.0.0.1",  # loopback only
        num_cpus=6,
        object_store_memory=128 * 2**20,
        include_dashboard=False,
        log_to_driver=False,
    )
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        deploy(1)
        yield f"http://127.0.0.1:{port}", deploy
    finally:
        serve.shutdown()
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=96, help="requests per server and row (split into rounds)")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved blocks per row and server")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, single_machine(Path(tmp)) as single, on_ray() as (ray_url, deploy):
        rows = latency_rows({"single": single, "ray": ray_url}, args.requests, args.rounds)
        single_tp = [throughput(single, args.requests) for _ in range(2)]
        tp: dict[int, list[float]] = {1: [], 2: []}
        for replicas in (1, 2, 1, 2):  # alternate, so drifting machine load hits both counts
            if replicas != 1 or tp[2]:
                deploy(replicas)
            tp[replicas].append(throughput(ray_url, args.requests))
    print(f"\n{'request':<12} {'n':>4} {'single p50':>11} {'p99':>9} {'ray p50':>9} {'p99':>9} {'added p50':>10}")
    for name in ("embed c=1", "embed c=16", "chat c=1", "chat c=16"):
        a, b = rows[("single", name)], rows[("ray", name)]
        p50, p99, r50, r99 = (1000 * statistics.median(a), 1000 * percentile(a, 0.99),
                              1000 * statistics.median(b), 1000 * percentile(b, 0.99))  # fmt: skip
        print(f"{name:<12} {len(a):>4} {p50:>9.1f}ms {p99:>7.1f}ms {r50:>7.1f}ms {r99:>7.1f}ms {r50 - p50:>+8.1f}ms")
    one, two = statistics.mean(tp[1]), statistics.mean(tp[2])
    print(f"\nembedding throughput, c=16, 8 texts a request (texts/s): single machine {fmt(single_tp)};")
    print(f"Ray Serve 1 replica {fmt(tp[1])}, 2 replicas {fmt(tp[2])}: 2 vs 1 = {two / one:.2f}x")


def fmt(values: list[float]) -> str:
    return " / ".join(f"{v:.0f}" for v in values)


if __name__ == "__main__":
    main()
