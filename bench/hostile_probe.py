"""The hostile inputs of issue 26, each sent twice, against a fresh demo server.

    .venv/bin/python bench/hostile_probe.py [--port 0]

Starts the real server (``litestar run``, demo profile: the plugins' tiny stand-ins) on loopback,
loads the three models, then sends each input: schemas the constraint library gives up on,
subnormal temperatures, a repetition penalty of 1e-300, a fan-out of n x top_logprobs, and 1,000
rerank documents of 25k characters (25 MB). For each: status, error code and param, seconds, and a
``max_tokens: 1`` chat request right after (the server stays responsive) and the server's RSS then.
Every input is sent twice: RSS after the second round shows whether memory grows per request.
Targets: every hostile input a 4xx with the OpenAI envelope in under a second (the rerank case: a
4xx before any forward pass; subnormal temperatures: a greedy 200), the probe answered, RSS back to
where it was.
"""

from __future__ import annotations

import argparse
import json
import os
import re
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


def chat(**extra: Any) -> tuple[str, dict[str, Any]]:
    return "/v1/chat/completions", {"model": CHAT, "messages": [{"role": "user", "content": "hi"}], **extra}


def json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    return {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}


MANY = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(10_000)}}
RECURSIVE = {
    "$defs": {"a": {"type": "object", "properties": {"x": {"$ref": "#/$defs/a"}}, "required": ["x"]}},
    "$ref": "#/$defs/a",
}
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "10,000 optional properties": chat(
        max_tokens=8,
        **json_schema({"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(10_000)}}),
    ),
    "recursive $ref, no max_tokens": chat(**json_schema(RECURSIVE)),
    '{"$ref": "#"}': chat(**json_schema({"$ref": "#"})),
    "temperature 1e-40": chat(max_tokens=4, temperature=1e-40),
    "temperature 1e-320": chat(max_tokens=4, temperature=1e-320),
    "temperature 5e-324": chat(max_tokens=4, temperature=5e-324),
    "repetition_penalty 1e-300": chat(max_tokens=4, temperature=1, repetition_penalty=1e-300),
    "n 16 x top_logprobs 20, no max_tokens": chat(n=16, logprobs=True, top_logprobs=20),
    "n 16 x top_logprobs 20 x max_tokens 1000": chat(n=16, logprobs=True, top_logprobs=20, max_tokens=1000),
    "rerank 1,000 x 25k characters": (
        "/v1/rerank",
        {"model": RERANK, "query": "what?", "documents": ["The Great Wall. " * 1600] * 1000},
    ),
}


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def batches(http: httpx.Client) -> float:
    found = re.search(rf'^plughost_batches_total{{model="{RERANK}"}} (\S+)$', http.get("/metrics").text, re.M)
    return float(found.group(1)) if found else 0.0


def run(url: str, pid: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with httpx.Client(base_url=url, timeout=600) as http:
        for model in (CHAT, EMBED, RERANK):
            http.post(f"/v1/models/{model}/load")
        probe = {"model": CHAT, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
        http.post("/v1/chat/completions", json=probe)  # warm
        rss_before = rss_mib(pid)
        for name, (path, body) in [
            (f"{name}{suffix}", case) for suffix in ("", " (again)") for name, case in CASES.items()
        ]:
            ran = batches(http)
            start = time.monotonic()
            r = http.post(path, json=body)
            took = time.monotonic() - start
            error = (
                r.json().get("error", {}) if r.headers.get("content-type", "").startswith("application/json") else {}
            )
            start = time.monotonic()
            p = http.post("/v1/chat/completions", json=probe)
            results[name] = {
                "status": r.status_code,
                "code": error.get("code"),
                "param": error.get("param"),
                "seconds": round(took, 3),
                "response_bytes": len(r.content),
                "rerank_batches_run": batches(http) - ran if path == "/v1/rerank" else None,
                "probe_after": [p.status_code, round(time.monotonic() - start, 3)],
                "rss_mib": round(rss_mib(pid), 1),
            }
        time.sleep(2)
        rss_after = rss_mib(pid)
    return {"cases": results, "rss_mib_before": round(rss_before, 1), "rss_mib_after": round(rss_after, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    from host.testing.server import free_port, wait_until_healthy

    port = args.port or free_port()
    tmp = Path(tempfile.mkdtemp(prefix="plughost-hostile-"))
    (tmp / "plugins.yaml").write_text(
        f"demo: true\nplugins:\n  paths: [{ROOT / 'plugins'}]\n  entry_points: false\n"
        "server:\n  max_body_bytes: 64MiB\n"  # the 25 MB rerank body must reach the route
    )
    env = {**os.environ, "PLUGHOST_CONFIG": str(tmp / "plugins.yaml")}
    cmd = [sys.executable, "-m", "litestar", "--app", "host.app:create_app", "run", "--port", str(port)]
    with open(tmp / "server.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, proc)
        result = run(url, proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    text = (tmp / "server.log").read_text(errors="replace")
    result["server_tracebacks"] = text.count("Traceback")
    result["server_log"] = str(tmp / "server.log")
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
