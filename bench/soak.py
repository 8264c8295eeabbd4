"""Soak: minutes of mixed traffic under a memory budget that forces swaps, plus abandoning clients.

    .venv/bin/python bench/soak.py [--minutes 3] [--concurrency 32] [--fit 2] [--storm 200]

Starts the real server (``litestar run``, demo profile: the tiny stand-ins of the three
plugins) on loopback with a host budget that holds only ``--fit`` of the three models, so
requests for the others swap them in. ``--concurrency`` workers send, until the time is up:
chat (plain and streamed, 8-64 tokens), embeddings (1-64 inputs) and rerank (2-50 documents);
one request in ten is abandoned by its client (a stream closed after its first chunk, a plain
request given up after 0.3 s). Then ``--storm`` clients send chat requests without
``max_tokens`` and give up after 3 s; once they hold the chat model, a ``max_tokens: 1``
request is timed. RSS "after warm-up" is taken a third of the way through the mixed traffic.
Throughout (mixed traffic and storm) a probe sends a ``max_tokens: 1`` chat request every
``--probe-every`` seconds, one at a time, and records how long each took.

Reports requests by route and status, error codes of the failures (``model_load_failed``: loads
that failed, issue 26), streams that did not end with ``[DONE]``, p50/p99 per route, the probe's
latencies, model loads and failed loads in the server log, the server's RSS after warm-up and at
the end, in-flight and queued per model after the run, and the storm check. Targets: 0 5xx, 0
``model_load_failed``, 0 unfinished streams, in-flight and queued back to 0, RSS growth < 10 %
after warm-up, the probe (and the storm's short request) answered within 2 s.
Loopback only; every loop is bounded by the deadline; the server is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

CHAT, EMBED, RERANK = "Qwen2.5-7B-Instruct-AWQ", "Qwen3-Embedding-0.6B", "Qwen3-Reranker-0.6B"
WORDS = [
    "the",
    "great",
    "wall",
    "of",
    "china",
    "stretches",
    "across",
    "mountains",
    "deserts",
    "and",
    "plains",
    "while",
    "rivers",
    "carry",
    "water",
    "to",
    "cities",
    "where",
    "people",
    "read",
    "write",
    "cook",
    "and",
    "talk",
    "about",
    "weather",
    "trains",
    "and",
    "history",
    "长城",
    "很长",
]


def sentence(rng: random.Random, low: int = 4, high: int = 40) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def host_budget(fit: int) -> int:
    """Bytes of host RAM that hold the ``fit`` largest demo models but not all three."""
    from host.contract.config import config_from_dict
    from host.plugins import make_plugin_manager
    from host.registry import build_registry

    config = config_from_dict({"demo": True, "plugins": {"paths": [str(ROOT / "plugins")], "entry_points": False}})
    registry = build_registry(make_plugin_manager(config), config)
    sizes = sorted((max(p.host_bytes for p in m.spec.placements) for m in registry), reverse=True)
    return sum(sizes[:fit]) + (1 << 20)


class Stats:
    def __init__(self) -> None:
        self.status: collections.Counter[tuple[str, int | str]] = collections.Counter()
        self.codes: collections.Counter[str] = collections.Counter()  # error codes of failed requests
        self.latency: dict[str, list[float]] = collections.defaultdict(list)
        self.unfinished = 0
        self.abandoned = 0

    def add(self, route: str, status: int | str, took: float, body: bytes = b"") -> None:
        self.status[(route, status)] += 1
        if status == 200:
            self.latency[route].append(took)
        elif isinstance(status, int) and status >= 400:
            self.codes[error_code(body)] += 1


def error_code(body: bytes) -> str:
    """The ``error.code`` of an error body (of an SSE error event too), or what the body was."""
    text = body.decode(errors="replace")
    for line in text.splitlines() if text.startswith("data: ") else [text]:
        try:
            return str(json.loads(line.removeprefix("data: "))["error"]["code"])
        except (ValueError, KeyError, TypeError):
            continue
    return "no envelope"


async def chat(http: httpx.AsyncClient, rng: random.Random, stats: Stats, stream: bool, abandon: bool) -> None:
    route = "chat-stream" if stream else "chat"
    body: dict[str, Any] = {
        "model": CHAT,
        "messages": [{"role": "user", "content": sentence(rng)}],
        "max_tokens": rng.randint(8, 64),
        "temperature": 0.7,
        "stream": stream,
    }
    start = time.monotonic()
    if not stream:
        try:
            r = await http.post("/v1/chat/completions", json=body, timeout=0.3 if abandon else 300)
            stats.add(route, r.status_code, time.monotonic() - start, r.content)
        except httpx.TimeoutException:
            if not abandon:
                raise
            stats.abandoned += 1
        return
    async with http.stream("POST", "/v1/chat/completions", json=body, timeout=300) as r:
        done = False
        failed = b""  # an error event in the stream
        if r.status_code == 200:
            async for line in r.aiter_lines():
                if abandon and line.startswith("data: "):
                    stats.abandoned += 1
                    return
                if line.startswith('data: {"error"'):
                    failed = line.encode()
                done = done or line == "data: [DONE]"
            if not done:
                stats.unfinished += 1
        else:
            failed = await r.aread()
        if failed and r.status_code == 200:
            stats.status[(route, "error event")] += 1
            stats.codes[error_code(failed)] += 1
        stats.add(route, r.status_code, time.monotonic() - start, failed)


async def embed(http: httpx.AsyncClient, rng: random.Random, stats: Stats) -> None:
    inputs = [sentence(rng) for _ in range(rng.randint(1, 64))]
    start = time.monotonic()
    r = await http.post("/v1/embeddings", json={"model": EMBED, "input": inputs}, timeout=300)
    stats.add("embeddings", r.status_code, time.monotonic() - start, r.content)


async def rerank(http: httpx.AsyncClient, rng: random.Random, stats: Stats) -> None:
    docs = [sentence(rng) for _ in range(rng.randint(2, 50))]
    start = time.monotonic()
    r = await http.post(
        "/v1/rerank", json={"model": RERANK, "query": sentence(rng, 3, 10), "documents": docs}, timeout=300
    )
    stats.add("rerank", r.status_code, time.monotonic() - start, r.content)


async def worker(url: str, seed: int, deadline: float, stats: Stats) -> None:
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=url) as http:
        while time.monotonic() < deadline:
            pick = rng.random()
            abandon = rng.random() < 0.1
            try:
                if pick < 0.25:
                    await chat(http, rng, stats, False, abandon)
                elif pick < 0.5:
                    await chat(http, rng, stats, True, abandon)
                elif pick < 0.75:
                    await embed(http, rng, stats)
                else:
                    await rerank(http, rng, stats)
            except httpx.HTTPError as exc:
                stats.status[("transport", type(exc).__name__)] += 1


async def probe(url: str, every: float, stop: asyncio.Event, took: list[tuple[float, int | str, float]]) -> None:
    """A ``max_tokens: 1`` chat request every ``every`` seconds until ``stop``: (seconds, status, when
    it was sent in seconds since the probe began) each."""
    body = {"model": CHAT, "messages": [{"role": "user", "content": "Say one word."}], "max_tokens": 1}
    began = time.monotonic()
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        while not stop.is_set():
            start = time.monotonic()
            try:
                status: int | str = (await http.post("/v1/chat/completions", json=body)).status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            took.append((time.monotonic() - start, status, start - began))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, every - (time.monotonic() - start)))


async def storm(url: str, n: int) -> dict[str, Any]:
    """``n`` clients without max_tokens that give up after 3 s; a max_tokens:1 request timed 1 s in."""
    limits = httpx.Limits(max_connections=n + 8, max_keepalive_connections=0)
    gave_up = collections.Counter[str]()

    async def abandoned(http: httpx.AsyncClient, i: int) -> None:
        body = {"model": CHAT, "messages": [{"role": "user", "content": f"Tell me a long story, part {i}."}]}
        body["stream"] = i % 2 == 0
        try:
            async with http.stream("POST", "/v1/chat/completions", json=body) as r:
                async for _ in r.aiter_bytes():
                    pass
            gave_up[f"finished {r.status_code}"] += 1
        except httpx.TimeoutException:
            gave_up["abandoned"] += 1
        except httpx.HTTPError as exc:
            gave_up[type(exc).__name__] += 1

    async with httpx.AsyncClient(base_url=url, timeout=3.0, limits=limits) as http:
        tasks = [asyncio.create_task(abandoned(http, i)) for i in range(n)]
        async with httpx.AsyncClient(base_url=url, timeout=60) as fresh:
            flooded = time.monotonic()
            while time.monotonic() - flooded < 20:  # until the storm holds the chat model
                status = (await fresh.get(f"/v1/models/{CHAT}")).json()["status"]
                if status["in_flight"] >= n // 2:
                    break
                await asyncio.sleep(0.05)
            start = time.monotonic()
            body = {"model": CHAT, "messages": [{"role": "user", "content": "Say one word."}], "max_tokens": 1}
            r = await fresh.post("/v1/chat/completions", json=body)
            took = time.monotonic() - start
        await asyncio.gather(*tasks)
    return {
        "chat_in_flight_when_sent": status["in_flight"],
        "short_request_s": round(took, 3),
        "short_status": r.status_code,
        "storm": dict(gave_up),
    }


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def run(args: argparse.Namespace, url: str, pid: int) -> dict[str, Any]:
    stats = Stats()
    async with httpx.AsyncClient(base_url=url, timeout=300) as http:  # warm-up: every model loaded once
        for model in (CHAT, EMBED, RERANK):
            await http.post(f"/v1/models/{model}/load")
    deadline = time.monotonic() + args.minutes * 60
    probed: list[tuple[float, int | str, float]] = []
    mixed_until = args.minutes * 60  # after this the storm runs
    stop_probe = asyncio.Event()
    prober = asyncio.create_task(probe(url, args.probe_every, stop_probe, probed))
    workers = [asyncio.create_task(worker(url, i, deadline, stats)) for i in range(args.concurrency)]
    await asyncio.sleep(args.minutes * 20)  # warm-up: the first third of the run
    warm_rss = rss_mib(pid)
    await asyncio.gather(*workers)
    # The storm runs alone: with the mix it would time the swap policy (a model that must make
    # room drains first), not the engine that the storm floods.
    storm_result = await storm(url, args.storm) if args.storm else {}
    stop_probe.set()
    await prober
    probe_s = [t for t, _, _ in probed]
    settle_start = time.monotonic()
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        while True:
            models = (await http.get("/v1/models")).json()["data"]
            busy = {m["id"]: (m["status"]["in_flight"], m["status"]["queued"]) for m in models}
            if all(v == (0, 0) for v in busy.values()) or time.monotonic() - settle_start > 30:
                break
            await asyncio.sleep(0.2)
    end_rss = rss_mib(pid)
    by_route: dict[str, dict[str, int]] = collections.defaultdict(dict)
    for (route, status), n in sorted(stats.status.items(), key=str):
        by_route[route][str(status)] = n
    return {
        "minutes": args.minutes,
        "concurrency": args.concurrency,
        "requests": sum(stats.status.values()),
        "by_route_and_status": by_route,
        "5xx": sum(n for (_, s), n in stats.status.items() if isinstance(s, int) and s >= 500),
        "error_codes": dict(stats.codes),
        "model_load_failed": stats.codes["model_load_failed"],
        "unfinished_streams": stats.unfinished,
        "abandoned_by_clients": stats.abandoned,
        "latency_s": {
            route: {"n": len(v), "p50": round(pct(v, 0.5), 3), "p99": round(pct(v, 0.99), 3)}
            for route, v in sorted(stats.latency.items())
        },
        "probe_max_tokens_1": {
            "n": len(probed),
            "not_200": sum(1 for _, status, _ in probed if status != 200),
            "p50_s": round(pct(probe_s, 0.5), 3),
            "p99_s": round(pct(probe_s, 0.99), 3),
            "max_s": round(max(probe_s, default=float("nan")), 3),
            "over_2s": sum(1 for t in probe_s if t > 2.0),
            "slowest": [
                {"s": round(t, 3), "sent_at_s": round(at, 1), "phase": "mixed" if at < mixed_until else "storm"}
                for t, _, at in sorted(probed, key=lambda p: p[0], reverse=True)[:5]
            ],
        },
        "after_run_in_flight_queued": busy,
        "settled_in_s": round(time.monotonic() - settle_start, 2),
        "rss_mib_warm": round(warm_rss, 1),
        "rss_mib_end": round(end_rss, 1),
        "rss_growth_pct": round(100 * (end_rss - warm_rss) / warm_rss, 1),
        "storm_check": storm_result,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--fit", type=int, default=2, help="how many of the three models the budget holds")
    parser.add_argument("--storm", type=int, default=200)
    parser.add_argument("--probe-every", type=float, default=2.0, help="seconds between max_tokens:1 probes")
    parser.add_argument(
        "--pin-chat", action="store_true", help="pin the chat model (the other two swap in the rest of the budget)"
    )
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    from host.testing.server import free_port, wait_until_healthy

    budget = host_budget(args.fit)
    port = args.port or free_port()
    tmp = Path(tempfile.mkdtemp(prefix="plughost-soak-"))
    config = tmp / "plugins.yaml"
    config.write_text(
        f"demo: true\nplugins:\n  paths: [{ROOT / 'plugins'}]\n  entry_points: false\n"
        f"budgets:\n  gpus: []\n  host: {budget}\n  host_reserve: 0\n"
        f"scheduler:\n  admission_timeout_s: 120\n"
        + (f"models:\n  {CHAT}:\n    pinned: true\n" if args.pin_chat else "")
    )
    env = {**os.environ, "PLUGHOST_CONFIG": str(config)}
    log_path = tmp / "server.log"
    cmd = [sys.executable, "-m", "litestar", "--app", "host.app:create_app", "run", "--port", str(port)]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until_healthy(url, proc)
        except RuntimeError as exc:
            raise SystemExit(f"{exc}; log: {log_path}") from None
        result = asyncio.run(run(args, url, proc.pid))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    text = log_path.read_text(errors="replace")
    result["host_budget_mib"] = round(budget / 2**20, 1)
    result["chat_pinned"] = args.pin_chat
    result["model_loads"] = text.count(": resident on ")
    result["failed_loads_in_log"] = text.count(": load failed")
    result["unloads"] = text.count(": unloaded")
    result["server_tracebacks"] = text.count("Traceback")
    result["server_log"] = str(log_path)
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
