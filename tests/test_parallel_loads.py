"""Issue 26: models loading at once on the scheduler's threads, each from a fresh interpreter.

transformers' lazy module is not safe to first-import from two threads: during a soak's forced
swaps, loads failed with "cannot import name 'AutoTokenizer' from 'transformers'" while the same
model loaded fine before and after. Every fresh interpreter below (the imports must be first ones)
serves the three demo models and asks for all of them at once through ``/v1/models/{id}/load``;
before the fix every run failed. ``PLUGHOST_PARALLEL_LOAD_RUNS`` sets how many interpreters run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = int(os.environ.get("PLUGHOST_PARALLEL_LOAD_RUNS", "3"))

SCRIPT = textwrap.dedent(
    """
    import json, sys, threading
    import httpx
    from host.app import create_app
    from host.testing.pytest_plugin import CPU_ONLY, make_config
    from host.testing.server import serve_in_thread

    models = ["Qwen2.5-7B-Instruct-AWQ", "Qwen3-Embedding-0.6B", "Qwen3-Reranker-0.6B"]
    config = make_config({"demo": True, "plugins": {"paths": [sys.argv[1]], "entry_points": False}})
    assert "transformers" not in sys.modules  # the loads below are its first users
    with serve_in_thread(create_app(config, budgets=CPU_ONLY)) as url:
        barrier = threading.Barrier(len(models))
        answers = {}

        def load(model):
            barrier.wait()
            r = httpx.post(f"{url}/v1/models/{model}/load", timeout=300)
            answers[model] = [r.status_code, r.text[:300]]

        threads = [threading.Thread(target=load, args=(m,)) for m in models]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    print(json.dumps(answers))
    """
)


def test_three_models_load_at_once_from_fresh_interpreters() -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    for run in range(RUNS):
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(ROOT / "plugins")],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        answers = json.loads(done.stdout.strip().splitlines()[-1])
        failed = {model: answer for model, answer in answers.items() if answer[0] != 200}
        assert not failed, f"run {run + 1}: {failed}"
