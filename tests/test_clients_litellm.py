"""litellm's rerank providers against plughost: ``cohere`` (its v1 client on ``/v1/rerank``, its v2
client on ``/v2/rerank``) and ``hosted_vllm`` (``/rerank``), each reading ``document.text``.

litellm runs from its own venv (``.venv-litellm``, made by scripts/bootstrap from
``constraints-litellm.txt``): its pins clash with ours."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import rerank_qwen3
from host.app import create_app
from host.testing.pytest_plugin import CPU_ONLY, make_config
from host.testing.server import serve_in_thread

ROOT = Path(__file__).resolve().parents[1]
PYTHON = ROOT / ".venv-litellm" / "bin" / "python"
SCRIPT = ROOT / "tests" / "clients" / "litellm_rerank.py"
MODEL = rerank_qwen3.MODEL_ID

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    from rerank_qwen3.testing import TINY

    config = make_config({"models": {MODEL: {"weights": TINY}}})
    with serve_in_thread(create_app(config, plugins=[rerank_qwen3], budgets=CPU_ONLY)) as url:
        yield url


def test_litellm_cohere_and_hosted_vllm_rerank(base_url: str) -> None:
    assert PYTHON.exists(), f"{PYTHON} is missing: run scripts/bootstrap"
    run = subprocess.run(
        [str(PYTHON), str(SCRIPT), base_url, MODEL],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HOME": str(Path.home())},
    )
    assert run.returncode == 0, run.stderr[-4000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    # What plughost itself answers, for comparison.
    body = {"model": MODEL, "query": "What is the capital of China?", "top_n": 2}
    body["documents"] = ["The capital of China is Beijing.", "Gravity pulls objects together.", "北京是中国的首都。"]
    expected = httpx.post(f"{base_url}/v2/rerank", json=body, timeout=60).json()["results"]
    want = [[r["index"], pytest.approx(r["relevance_score"]), r["document"]["text"]] for r in expected]
    assert got == {"cohere_v1": want, "cohere_v2": want, "hosted_vllm": want}
